"""Load a task module from any of our checkpoints (the task class is stored inside)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from modules.tasks import TaskModule


def load_task(checkpoint: Path, device: str = "cpu") -> TaskModule:
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    header = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    path = header.get("task_class")
    if not path:
        raise ValueError(f"{checkpoint} is not a transformer-suite task checkpoint (no task_class)")
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    task = cls.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    return task.eval()
