"""`tsuite inspect CONFIG_OR_CHECKPOINT`: the model as a tree from the embeddings through
every block to the head, with tensor shapes for a sample batch, parameter counts, which
attention each layer uses with which mask, and each part's share of parameters and FLOPs.
Printed as text and written as a PNG."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from modules.attention import MultiHeadAttention
from modules.layers import Embeddings, FeedForward, Stack
from modules.tasks import (
    CausalLMModule,
    PermutationLMModule,
    QuestionAnsweringModule,
    SequenceClassificationModule,
    TaskModule,
    load_task,
)
from modules.tasks.checkpoints import import_task

POSITIONS = {"Embedding": "learned positions", "SinusoidalPositions": "sinusoidal positions"}


@dataclass
class Part:
    depth: int
    name: str
    kind: str
    shape: str = ""
    params: int = 0
    flops: int = 0


def sample_batch(task: TaskModule, batch: int, length: int) -> dict[str, Tensor]:
    vocab = task.model.cfg.vocab_size
    ids = torch.randint(4, vocab, (batch, length))
    mask = torch.ones_like(ids)
    mask[-1, length * 3 // 4 :] = 0  # one padded sequence, so the masks show
    out = {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}
    if hasattr(task.model, "decode"):
        target = torch.randint(4, vocab, (batch, max(2, length * 3 // 4)))
        out.update(decoder_input_ids=target, labels=target)
    if isinstance(task, SequenceClassificationModule):
        out["labels"] = torch.zeros(batch, dtype=torch.long)
    if isinstance(task, QuestionAnsweringModule):
        out["start_positions"] = out["end_positions"] = torch.zeros(batch, dtype=torch.long)
    if isinstance(task, PermutationLMModule):  # every third token a target, in reading order
        targets = torch.arange(1, length, 3)
        ranks = torch.zeros_like(ids)
        ranks[:, targets] = torch.arange(1, len(targets) + 1)
        out.update(ranks=ranks, target_positions=targets.expand(batch, -1))
    if isinstance(task, CausalLMModule):  # packed text: no padding, the causal fast path
        out.pop("attention_mask")
    return out


def describe_attention(module: MultiHeadAttention, call: dict[str, Any]) -> str:
    kind = "cross-attention (Q: decoder, K/V: encoder)" if module.cross else "self-attention"
    if call.get("is_causal"):
        mask = "causal mask"
    elif call.get("mask") is not None:
        mask = (
            "causal + padding mask"
            if call["mask"].size(-2) > 1 and not module.cross and _is_causal(call["mask"])
            else "key padding mask"
        )
    else:
        mask = "no mask"
    heads = f"{module.n_heads} heads" + (
        f", {module.n_kv_heads} K/V heads" if module.n_kv_heads != module.n_heads else ""
    )
    return f"{kind}, {heads} x d_k {module.key_dim}, {mask}"


def _is_causal(mask: Tensor) -> bool:
    return bool(mask[0, 0, 0, 1:].logical_not().all()) if mask.size(-1) > 1 else False


def architecture(task: TaskModule, batch: dict[str, Tensor]) -> list[Part]:
    """Run `batch` through the task once, recording shapes, call arguments and FLOPs, and
    describe the model part by part (parameters shared by two parts count once)."""
    model = task.model
    shapes: dict[str, tuple[tuple, tuple]] = {}
    calls: dict[str, dict[str, Any]] = {}

    def record(name: str):  # noqa: ANN202 - a forward hook
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if name not in shapes:
                first = args[0] if args else next(iter(kwargs.values()), None)
                shapes[name] = (_shape(first), _shape(output))
                calls[name] = kwargs

        return hook

    hooks = [m.register_forward_hook(record(n), with_kwargs=True) for n, m in model.named_modules()]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        task.step(batch)
    for handle in hooks:
        handle.remove()
    flops = {
        k.partition(".")[2]: sum(v.values())
        for k, v in counter.get_flop_counts().items()
        if "." in k
    }
    counted: set[int] = set()

    def part(
        depth: int, name: str, kind: str, full: str, module: nn.Module | None = None, extra: int = 0
    ) -> Part:
        params = 0
        for p in module.parameters() if module is not None else ():
            if id(p) not in counted:
                counted.add(id(p))
                params += p.numel()
        shape_in, shape_out = shapes.get(full, ((), ()))
        shape = f"{shape_in} -> {shape_out}" if shape_in else ""
        return Part(
            depth,
            name,
            kind,
            shape,
            params,
            flops.get(full, 0) + extra if module is not None else 0,
        )

    parts: list[Part] = []
    for name, module in model.named_children():
        if isinstance(module, Embeddings):
            parts.append(part(0, name, describe_embeddings(module, counted), name, module))
        elif isinstance(module, Stack):
            direction = "causal" if module.causal else "bidirectional"
            parts.append(part(0, name, f"stack of {len(module.blocks)} blocks ({direction})", name))
            for i, block in enumerate(module.blocks):
                prefix = f"{name}.blocks.{i}"
                placement = "pre-LN" if block.pre_norm else "post-LN"
                parts.append(part(1, f"blocks.{i}", f"block ({placement})", prefix))
                for sub_name, sub in block.named_children():
                    full = f"{prefix}.{sub_name}"
                    if isinstance(sub, MultiHeadAttention):
                        call = calls.get(full, {})
                        extra = _attention_flops(sub, call, shapes.get(full, ((), ()))[0])
                        parts.append(
                            part(2, sub_name, describe_attention(sub, call), full, sub, extra)
                        )
                    elif isinstance(sub, FeedForward):
                        sizes = f"{sub.up.in_features} -> {sub.down.in_features} -> {sub.down.out_features}"
                        parts.append(
                            part(2, sub_name, f"feed-forward {sizes} ({sub.activation})", full, sub)
                        )
                norms = nn.ModuleList(m for n, m in block.named_children() if n.endswith("norm"))
                parts.append(
                    part(2, "norms", type(block.ffn_norm).__name__, f"{prefix}.norms", norms)
                )
            if module.final_norm is not None:
                full = f"{name}.final_norm"
                parts.append(
                    part(1, "final_norm", type(module.final_norm).__name__, full, module.final_norm)
                )
        else:
            tied = any(id(p) in counted for p in module.parameters())
            kind = type(module).__name__ + (
                " (output matrix tied to the token embeddings)" if tied else ""
            )
            parts.append(part(0, name, kind, name, module))
    for name, module in task.named_children():  # heads the task adds (a classifier)
        if name != "model" and any(True for _ in module.parameters()):
            parts.append(part(0, f"task.{name}", type(module).__name__, name, module))
    return parts


def describe_embeddings(module: Embeddings, counted: set[int]) -> str:
    positions = POSITIONS.get(type(module.positions).__name__, "rotary positions in attention")
    shared = " (shared)" if id(module.tokens.weight) in counted else ""
    scale = " x sqrt(d)" if module.scale != 1 else ""
    kind = f"embeddings: tokens{shared}{scale} + {positions}"
    if module.token_types is not None:
        kind += " + token types"
    return kind + (" -> norm" if module.norm is not None else "")


def _shape(value: Any) -> tuple:
    return tuple(value.shape) if isinstance(value, Tensor) else ()


def _attention_flops(module: MultiHeadAttention, call: dict[str, Any], queries: tuple) -> int:
    """QK^T and AV (the counter does not see inside the fused CPU kernel)."""
    if len(queries) != 3:
        return 0
    batch, lq = queries[0], queries[1]
    memory = call.get("memory")
    lk = memory.size(1) if isinstance(memory, Tensor) else lq
    return 2 * batch * module.n_heads * lq * lk * (module.key_dim + module.value_dim)


def render_text(title: str, parts: list[Part]) -> str:
    total_params = sum(p.params for p in parts) or 1
    total_flops = sum(p.flops for p in parts) or 1
    rows = [f"{'  ' * p.depth}{p.name}" for p in parts]
    width = max(len(r) for r in rows) + 2
    kind_width = min(90, max(len(p.kind) for p in parts) + 2)
    lines = [
        title,
        f"{'part':<{width}}{'what':<{kind_width}}{'shape in -> out':<34}{'params':>10} {'share':>6} {'FLOPs':>10} {'share':>6}",
    ]
    for row, p in zip(rows, parts, strict=True):
        share_p = f"{100 * p.params / total_params:5.1f}%" if p.params else ""
        share_f = f"{100 * p.flops / total_flops:5.1f}%" if p.flops else ""
        lines.append(
            f"{row:<{width}}{p.kind[: kind_width - 2]:<{kind_width}}{p.shape:<34}"
            f"{_si(p.params) if p.params else '':>10} {share_p:>6} {_si(p.flops) if p.flops else '':>10} {share_f:>6}"
        )
    lines.append(
        f"{'total':<{width + kind_width + 34}}{_si(total_params):>10} {'':>6} {_si(total_flops):>10}"
    )
    return "\n".join(lines)


def _si(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def render_png(text: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = text.splitlines()
    width = max(len(line) for line in lines)
    figure = plt.figure(figsize=(0.075 * width + 0.5, 0.19 * len(lines) + 0.5))
    figure.text(0.01, 0.99, text, family="monospace", fontsize=8, va="top")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load_from_config(path: Path, vocab_size: int | None) -> TaskModule:
    """The config's model, with the preset's vocabulary size unless `vocab_size` is given (no
    data is loaded)."""
    model = yaml.safe_load(path.read_text())["model"]
    cls = import_task(model["class_path"])
    args = dict(model.get("init_args") or {})
    if vocab_size and not args.get("init_from"):
        args["arch"] = {**(args.get("arch") or {}), "vocab_size": vocab_size}
    return cls(**args).eval()


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite inspect", description=__doc__)
    p.add_argument("source", type=Path, help="an experiment config (.yaml) or a checkpoint (.ckpt)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=16)
    p.add_argument(
        "--vocab_size", type=int, help="for a config: the tokenizer's size (default: the preset's)"
    )
    p.add_argument(
        "--out", type=Path, help="PNG to write (default: <source name>-architecture.png)"
    )
    args = p.parse_args(argv)
    if not args.source.is_file():
        raise FileNotFoundError(f"{args.source} does not exist")
    task = (
        load_task(args.source)
        if args.source.suffix == ".ckpt"
        else load_from_config(args.source, args.vocab_size)
    )
    torch.manual_seed(0)
    batch = sample_batch(task, args.batch, min(args.length, task.model.cfg.max_length))
    parts = architecture(task, batch)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items() if k != "labels")
    title = f"{type(task.model).__name__} ({type(task).__name__}) for a sample batch: {shapes}"
    text = render_text(title, parts)
    print(text)
    out = args.out or Path(f"{args.source.stem}-architecture.png")
    render_png(text, out)
    print(f"\nwritten: {out}")
