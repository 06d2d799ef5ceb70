"""Every private attribute of Lightning, PyTorch and W&B the suite relies on, touched here
only (tests/test_lightning_compat.py checks each against the installed versions; pyproject.toml
bounds Lightning to the versions tested).

Nothing is imported from Lightning: the functions read attributes of the objects they are
handed, so this module sits in the pure-torch layer where the data modules, the tasks and the
CLI can all reach it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def skip_step_on_device(optimizer: torch.optim.Optimizer, skip: Tensor) -> bool:
    """Tell a fused optimizer to leave this step out when `skip` (a 0-dim bool tensor) is
    true, read on the device: the grad-scaler protocol of fused AdamW (`found_inf`), which
    Lightning's precision plugins check with `_step_supports_amp_scaling`. False when the
    optimizer has no such switch (the caller must then skip by itself)."""
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return False
    optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
    return True


def batches_done_this_epoch(trainer: Any) -> int:
    """Training batches of the current epoch already run (restored from a checkpoint on
    resume; Lightning restarts the epoch's loader from its first batch all the same)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)


def logs_this_step(module: Any) -> bool:
    """Whether Lightning hands this training step's logged values to the loggers (every
    `trainer.log_every_n_steps`, at a stop, and in a fast dev run): `self.log` in any other
    step costs time and is overwritten before anything reads it."""
    trainer = module._trainer
    if trainer is None:  # a plain loop around the module: `self.log` would do nothing
        return False
    return bool(trainer.fast_dev_run or trainer._logger_connector.should_update_logs)


def forget_sigterm(trainer: Any) -> None:
    """Make Lightning forget a SIGTERM it has seen, so it does not stop a validation after
    its first batch (it checks after every batch; there is no public switch)."""
    trainer._signal_connector.received_sigterm = False


def drop_wandb_anonymous(logger: Any) -> None:
    """Lightning's WandbLogger passes `anonymous=None` to `wandb.init`, which prints "The
    anonymous setting has no effect and will be removed" on every run."""
    logger._wandb_init.pop("anonymous", None)
