"""Checkpoints written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


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
