"""`tsuite inspect CONFIG_OR_CHECKPOINT`: the model as a tree from the embeddings through
every block to the head, with tensor shapes for a sample batch, parameter counts, which
attention each layer uses with which mask, and each part's share of parameters and FLOPs.
Printed as a table and drawn as the paper's Figure 1 (SVG and PNG, experiments/diagram.py)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from datamodules.sources import DataError
from experiments.cli import build_experiment
from experiments.diagram import mask_kind
from experiments.trace import trace
from modules.attention import MultiHeadAttention
from modules.layers import Embeddings, FeedForward, Stack
from modules.tasks import (
    CausalLMModule,
    MaskedLMModule,
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
    if isinstance(task, CausalLMModule):  # packed text: no padding, the causal fast path
        out.pop("attention_mask")
    if isinstance(task, MaskedLMModule):  # BERT's 15%: the loss projects only those positions
        chosen = torch.rand(batch, length) < 0.15
        chosen[:, 1] = True
        out["labels"] = ids.masked_fill(~chosen, -100)
    if isinstance(task, PermutationLMModule):  # every third token a target, in reading order
        targets = torch.arange(1, length, 3)
        ranks = torch.zeros_like(ids)
        ranks[:, targets] = torch.arange(1, len(targets) + 1)
        out.update(ranks=ranks, target_positions=targets.expand(batch, -1), labels=ids.clone())
    return out


def describe_attention(module: MultiHeadAttention, call: dict[str, Any]) -> str:
    kind = "cross-attention (Q: decoder, K/V: encoder)" if module.cross else "self-attention"
    mask = mask_kind(module, call)
    mask = {"padding": "key padding mask", "none": "no mask"}.get(mask, f"{mask} mask")
    heads = f"{module.n_heads} heads" + (
        f", {module.n_kv_heads} K/V heads" if module.n_kv_heads != module.n_heads else ""
    )
    return f"{kind}, {heads} x d_k {module.key_dim}, {mask}"


def architecture(task: TaskModule, batch: dict[str, Tensor]) -> list[Part]:
    """Run `batch` through the task once, recording shapes, call arguments and FLOPs, and
    describe the model part by part (parameters shared by two parts count once)."""
    model = task.model
    record = trace(task, batch)
    modules = dict(model.named_modules())
    shapes = {n: (record.inputs[m], record.outputs[m]) for n, m in modules.items() if record.ran(m)}
    calls = {n: record.calls[m] for n, m in modules.items() if record.ran(m)}
    counted: set[int] = set()

    def part(depth: int, name: str, kind: str, full: str, module: nn.Module | None = None) -> Part:
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
            record.flops.get(module, 0) if module is not None else 0,
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
                        parts.append(part(2, sub_name, describe_attention(sub, call), full, sub))
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


def load_from_config(path: Path, vocab_size: int | None = None) -> TaskModule:
    """The model `tsuite fit` builds from the config, the data module's codec linked in (its
    tokenizer loaded, or trained on the data and cached, only if no cached copy exists). When
    the data cannot be loaded here (a hub data set offline), or with `vocab_size`, the config's
    model alone, with `vocab_size` or the tokenizer settings' size."""
    if vocab_size is None:
        try:
            return build_experiment(["-c", str(path)])[0].eval()  # type: ignore[return-value]
        except DataError as error:
            print(
                f"[tsuite] the data of {path} cannot be loaded here ({error}); the vocabulary "
                "size is taken from data.init_args.tokenizer.vocab_size",
                flush=True,
            )
    config = yaml.safe_load(path.read_text())
    args = dict(config["model"].get("init_args") or {})
    if vocab_size is None:
        vocab_size = (config.get("data", {}).get("init_args", {}).get("tokenizer") or {}).get(
            "vocab_size"
        )
    if vocab_size and not args.get("init_from"):
        args["arch"] = {**(args.get("arch") or {}), "vocab_size": vocab_size}
    return import_task(config["model"]["class_path"])(**args).eval()


def main(argv: list[str]) -> None:
    from experiments.diagram import task_diagram
    from experiments.diagram_render import write

    p = argparse.ArgumentParser(prog="tsuite inspect", description=__doc__)
    p.add_argument("source", type=Path, help="an experiment config (.yaml) or a checkpoint (.ckpt)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=16)
    p.add_argument(
        "--vocab_size",
        type=int,
        help="for a config: this vocabulary size instead of the data module's tokenizer",
    )
    p.add_argument(
        "--out", type=Path, default=Path("."), help="folder for the SVG and PNG (default: .)"
    )
    p.add_argument("--name", help="file name of the pictures (default: architecture-<source name>)")
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
    print(render_text(title, parts))
    written = write(
        task_diagram(task, batch), args.out, args.name or f"architecture-{args.source.stem}"
    )
    print()
    for path in written:
        print(f"written: {path}")
