"""`tsuite` with a pause at a chosen point, for tests that signal or kill the process there:

    python -m tests.faults WHERE STEP FOLDER [tsuite arguments...]

WHERE is `train` (inside training step STEP, between forward and backward), `validation`
(inside the first batch of the validation after step STEP) or `save` (halfway through writing
the first checkpoint file of step STEP). There the process creates FOLDER/paused and waits
for FOLDER/go (at most a minute), then carries on.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from experiments.cli import main
from modules.tasks import TaskModule


def pause(folder: Path) -> None:
    (folder / "paused").touch()
    deadline = time.monotonic() + 60
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def pause_in_training_step(step: int, folder: Path) -> None:
    original = TaskModule.training_step

    def training_step(self: TaskModule, batch: Any, batch_idx: int) -> Any:
        loss = original(self, batch, batch_idx)
        if self.trainer.global_step == step:
            pause(folder)
        return loss

    TaskModule.training_step = training_step  # type: ignore[method-assign]


def pause_in_validation(step: int, folder: Path) -> None:
    original = TaskModule.validation_step

    def validation_step(self: TaskModule, batch: Any, batch_idx: int) -> None:
        original(self, batch, batch_idx)
        if self.trainer.global_step == step and batch_idx == 0 and not self.trainer.sanity_checking:
            pause(folder)

    TaskModule.validation_step = validation_step  # type: ignore[method-assign]


def pause_in_save(step: int, folder: Path) -> None:
    """Half of the checkpoint's bytes are on disk (under the name the suite writes to) when
    the pause begins, as when a process dies in the middle of a write."""
    original = TorchCheckpointIO.save_checkpoint

    def save_checkpoint(
        self: Any, checkpoint: dict, path: Any, storage_options: Any = None
    ) -> None:
        if checkpoint["global_step"] == step and not (folder / "paused").exists():
            data = io.BytesIO()
            torch.save(checkpoint, data)
            with open(path, "wb") as file:
                file.write(data.getvalue()[: len(data.getvalue()) // 2])
            pause(folder)
        original(self, checkpoint, path, storage_options)

    TorchCheckpointIO.save_checkpoint = save_checkpoint  # type: ignore[method-assign]


PAUSES = {"train": pause_in_training_step, "validation": pause_in_validation, "save": pause_in_save}

if __name__ == "__main__":
    where, step, folder, *arguments = sys.argv[1:]
    PAUSES[where](int(step), Path(folder))
    main(arguments)
