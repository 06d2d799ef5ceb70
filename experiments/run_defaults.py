"""What every `tsuite` run gets besides the config's own settings: its callbacks (throughput,
report, samples, checkpoints, resume state, progress bar, model summary) and its loggers
(metrics.csv, and W&B, offline when there are no credentials)."""

from __future__ import annotations

import importlib.util
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
)
from lightning.pytorch.loggers import Logger, WandbLogger

from experiments.callbacks import ArchitectureDiagram, RunReport, SampleLog, Throughput
from experiments.csv_logger import RunCSVLogger
from experiments.progress import StepProgressBar, TableModelSummary
from experiments.run_folder import RunFolder
from experiments.saving import BestCheckpoint, LastCheckpoint
from modules.lightning_compat import drop_wandb_anonymous
from modules.tasks import TaskModule
from modules.tasks.checkpoints import read_checkpoint


def default_callbacks(
    run: RunFolder, task: TaskModule, settings: Any, config_callbacks: list[Callback]
) -> list[Callback]:
    trainer = settings.get("trainer") or {}
    throughput = Throughput()
    callbacks: list[Callback] = [
        throughput,
        RunReport(run.experiment, run.path, throughput),
        SampleLog(run.path),
        LearningRateMonitor("step"),
        ArchitectureDiagram(run.path),
    ]
    if trainer.get("enable_progress_bar", True) is not False and not any(
        isinstance(c, ProgressBar) for c in config_callbacks
    ):
        callbacks.append(StepProgressBar())
    if trainer.get("enable_model_summary", True) is not False and not any(
        isinstance(c, ModelSummary) for c in config_callbacks
    ):
        callbacks.append(TableModelSummary())
    if trainer.get("enable_checkpointing", True) is not False:
        monitor, mode = task.monitor
        folder = run.path / "checkpoints"
        best = BestCheckpoint(
            dirpath=folder,
            filename="best-{step}",
            monitor=monitor,
            mode=mode,
            auto_insert_metric_name=False,
        )
        callbacks += [best, LastCheckpoint(folder / "last.ckpt")]
        if settings.get("keep_checkpoints_every"):
            callbacks.append(
                ModelCheckpoint(
                    dirpath=folder,
                    filename="step-{step}",
                    every_n_train_steps=settings.keep_checkpoints_every,
                    save_top_k=-1,
                    auto_insert_metric_name=False,
                )
            )
    return callbacks


def default_loggers(
    run: RunFolder, task: TaskModule, settings: Any, subcommand: str | None, config: str
) -> tuple[list[Logger] | bool, str]:
    """The loggers, and the W&B run id a resumed run continues ('' without W&B)."""
    if (settings.get("trainer") or {}).get("logger") is False:
        return False, ""
    loggers: list[Logger] = [RunCSVLogger(str(run.path))]
    if importlib.util.find_spec("wandb") is None:
        print("[tsuite] wandb is not installed: logging to metrics.csv only", flush=True)
        return loggers, ""
    checkpoint = settings.get("ckpt_path")
    run_id = wandb_run_id(Path(checkpoint)) if run.resuming and checkpoint else None
    run_id = run_id or uuid.uuid4().hex[:8]
    offline = "WANDB_MODE" not in os.environ and not wandb_has_credentials()
    tags = [type(task).__name__, task.preset, run.experiment.split("/")[0], *settings.tags]
    logger = WandbLogger(
        project=settings.wandb_project,
        group=run.experiment,
        name=f"{run.experiment}/{run.path.name}",
        job_type=subcommand,
        tags=[t for t in tags if t],
        save_dir=str(run.path),
        id=run_id,
        resume="allow",
        offline=offline,
    )
    drop_wandb_anonymous(logger)
    logger.log_hyperparams({"config": yaml.safe_load(config)})
    return [*loggers, logger], run_id


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_run_id(checkpoint: Path) -> str | None:
    """The W&B run id stored in a checkpoint by `ResumeState`."""
    return read_checkpoint(checkpoint).get("wandb_run_id")
