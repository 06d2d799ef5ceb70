"""Writing checkpoints: whole or not at all (a temporary file renamed into place), never a
diverged model as the best, and checkpoints/last.ckpt, the state `--ckpt_path last` resumes:
written after every validation, at the end of training, and when SIGTERM (a preempted or
timed-out SLURM job) or Ctrl+C stops the run at the end of a step."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from modules.lightning_compat import forget_sigterm


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


class LastCheckpoint(Checkpoint):
    """Lightning's ModelCheckpoint(save_last=True) rewrites last.ckpt only at steps where it
    saved a new best, so a resume could lose every step since the last improvement; this
    callback writes it after every validation instead. (As a `Checkpoint` it runs after the
    best-checkpoint callback, whose updated state goes into the file.)

    Stopping: Lightning turns SIGTERM into a `SIGTERMException` at the end of a training step.
    Ctrl+C (SIGINT) is made to take the same path instead of interrupting wherever Python
    happens to be (a second Ctrl+C stops at once), a validation that is due or running is
    completed first (Lightning would stop after its first batch and lose it), last.ckpt is
    saved, and the process exits with 128 + the signal number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.signal: int | None = None
        self._saved_at = -1  # the step of the last save
        self._trainer: L.Trainer | None = None
        self._lightning_handler: Any = None

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state, resumable
        self._saved_at = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        self.save(trainer)
        if self.signal is not None:
            self._tell_lightning()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved_at != trainer.global_step:
            self.save(trainer)

    # --- stopping on a signal ----------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has just installed its SIGTERM handler; ours goes in front of it, and
        # Lightning puts the previous handlers back when the run ends.
        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        self._lightning_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._received)
        signal.signal(signal.SIGINT, self._received)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # twice: stop at once
        name = signal.Signals(signum).name
        # os.write: print could re-enter a stream that the signal interrupted
        os.write(2, f"\n[tsuite] {name}: stopping after this step, saving {self.path}\n".encode())
        if self._trainer is not None and not self._trainer.validating:
            self._tell_lightning()

    def _tell_lightning(self) -> None:
        if callable(self._lightning_handler):
            self._lightning_handler(signal.SIGTERM, None)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.signal is not None and not trainer.sanity_checking:
            # Lightning checks for SIGTERM after every validation batch; hide it until the
            # validation is complete (Lightning has no public switch for this).
            forget_sigterm(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.signal is not None and not trainer.received_sigterm:
            self._tell_lightning()  # the signal came after this callback's on_validation_end

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        signum = self.signal or signal.SIGTERM
        if self._trainer is not None:  # in training, at the end of a step
            # Right after a validation, last.ckpt is already saved at the point Lightning
            # expects when it resumes.
            if self._saved_at != trainer.global_step:
                self.save(trainer)
            if trainer.is_global_zero:
                print(
                    f"[tsuite] stopped by {signal.Signals(signum).name} at step "
                    f"{trainer.global_step}; saved {self.path}. Resume with the same command "
                    "and --ckpt_path last",
                    flush=True,
                )
        exception.code = 128 + signum  # the shell's convention for "ended by this signal"
