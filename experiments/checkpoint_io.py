"""Checkpoints written whole or not at all, and never a diverged model as the best."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it and renames it into place, so a
    process killed while writing leaves the previous checkpoint (e.g. last.ckpt) loadable."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        for stale in final.parent.glob(".*.tmp-*"):  # left behind by a killed process
            stale.unlink(missing_ok=True)


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that never keeps a non-finite score (a diverged model) as a best."""

    def check_monitor_top_k(self, trainer: L.Trainer, current: Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(current).all()):
            return False
        return super().check_monitor_top_k(trainer, current)
