"""Attention heatmaps for every layer and head: encoder self-attention, decoder masked
self-attention and encoder-decoder (cross) attention, drawn from the core's attention-weights
path (`modules.attention.recorded_attention`).

`AttentionMaps` (a callback) draws them for a fixed validation example every N validations
into the run folder and W&B; `tsuite attention CHECKPOINT TEXT` draws them for any input.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from modules.attention import recorded_attention
from modules.tasks import TaskModule, load_task

KINDS = {"self_attn": "self-attention", "cross_attn": "cross-attention"}


def attention_maps(
    task: TaskModule, batch: dict[str, Tensor]
) -> dict[str, tuple[Tensor, list[str], list[str]]]:
    """{module name: (weights (heads, queries, keys), query tokens, key tokens)} for a batch
    of one example."""
    tokens = {
        key: _pieces(task, batch[key][0].tolist())
        for key in ("input_ids", "decoder_input_ids")
        if key in batch
    }
    was_training = task.training
    task.eval()
    with torch.no_grad(), recorded_attention(task.model) as weights:
        task.step(batch)
    task.train(was_training)
    maps = {}
    for name, w in weights.items():
        if "cross_attn" in name:
            queries, keys = tokens["decoder_input_ids"], tokens["input_ids"]
        elif name.startswith("decoder.") and "decoder_input_ids" in tokens:
            queries = keys = tokens["decoder_input_ids"]
        else:
            queries = keys = tokens["input_ids"]
        maps[name] = (w[0].float().cpu(), queries, keys)
    return maps


def _pieces(task: TaskModule, ids: list[int]) -> list[str]:
    if task.codec is None:
        return [str(i) for i in ids]
    return [piece.replace("\n", "⏎") or "·" for piece in task.codec.piece_texts(ids)]


def title(name: str) -> str:
    """'decoder.blocks.2.cross_attn' -> 'decoder layer 3: cross-attention'."""
    parts = name.split(".")
    stack = {"stack": "", "encoder": "encoder ", "decoder": "decoder "}.get(
        parts[0], parts[0] + " "
    )
    kind = KINDS.get(parts[-1], parts[-1])
    if parts[0] == "decoder" and parts[-1] == "self_attn":
        kind = "masked self-attention"
    return f"{stack}layer {int(parts[2]) + 1}: {kind}"


def render(maps: dict[str, tuple[Tensor, list[str], list[str]]], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (weights, queries, keys) in maps.items():
        heads = weights.size(0)
        columns = min(4, heads)
        rows = math.ceil(heads / columns)
        size = 0.18 * max(len(keys), 8) + 1.2
        figure, axes = plt.subplots(
            rows,
            columns,
            figsize=(size * columns, size * rows * len(queries) / max(len(keys), 1) + 0.8),
            squeeze=False,
        )
        for head, axis in enumerate(axes.flat):
            if head >= heads:
                axis.axis("off")
                continue
            axis.imshow(weights[head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            axis.set_title(f"head {head + 1}", fontsize=8)
            axis.set_xticks(range(len(keys)), keys, rotation=90, fontsize=6)
            axis.set_yticks(range(len(queries)), queries, fontsize=6)
        figure.suptitle(title(name), fontsize=10)
        figure.tight_layout()
        path = folder / f"{name.replace('.', '-')}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


class AttentionMaps(Callback):
    """Every `every_n_validations` validations, heatmaps of all layers and heads for one fixed
    validation example, into <run>/attention/step-<step>/ and to W&B as images."""

    def __init__(self, every_n_validations: int = 1, max_length: int = 24) -> None:
        self.every, self.max_length = every_n_validations, max_length
        self._count = 0
        self._probe: dict[str, Tensor] | None = None

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not isinstance(pl_module, TaskModule):
            return
        self._count += 1
        if self._count % self.every:
            return
        if self._probe is None:  # the last batch: translation batches grow in length
            with torch.random.fork_rng():  # a loader iterator draws a seed: keep training's RNG
                *_, batch = iter(trainer.datamodule.val_dataloader())
            self._probe = pl_module.first_example(batch, self.max_length)
        probe = {k: v.to(pl_module.device) for k, v in self._probe.items()}
        folder = Path(trainer.default_root_dir) / "attention" / f"step-{trainer.global_step}"
        paths = render(attention_maps(pl_module, probe), folder)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for path in paths:
                    logger.log_image(
                        key=f"attention/{path.stem}", images=[str(path)], step=trainer.global_step
                    )


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite attention", description=__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("text", help="the input (translation: the source sentence)")
    p.add_argument("--target", help="translation: the target to force (default: the model's own)")
    p.add_argument("--out", type=Path, default=Path("attention"), help="folder for the PNG files")
    args = p.parse_args(argv)
    task = load_task(args.checkpoint)
    paths = render(attention_maps(task, task.text_batch(args.text, args.target)), args.out)
    for path in paths:
        print(path)
