"""Load a task module from any of our checkpoints (the task class is stored inside)."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import torch

from modules.tasks import TaskModule


def checkpoint_header(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's contents, memory-mapped (tensors are read only when used), or a clear
    error for a file that is missing, damaged or not a checkpoint."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(
            f"{checkpoint} is not a readable checkpoint (truncated, damaged, or not written by "
            f"torch.save): {reason}"
        ) from error


def load_task(checkpoint: Path, device: str = "cpu") -> TaskModule:
    header = checkpoint_header(checkpoint)
    path = header.get("task_class")
    if not path:
        raise ValueError(f"{checkpoint} is not a transformer-suite task checkpoint (no task_class)")
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    task = cls.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    return task.eval()
