"""`tsuite`: the LightningCLI entry point (fit / validate / test / predict).

Beyond LightningCLI it links tokenizer facts from the data module into the model, gives each
run its folder runs/<experiment>/<version>/ (resolved config.yaml, checkpoints/, metrics.csv,
W&B files), logs to W&B (offline when there are no credentials) and CSV, and turns mistakes a
user can make into one-paragraph errors instead of tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import shutil
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from lightning.pytorch.loggers import Logger, WandbLogger  # noqa: E402

from datamodules.sources import DataError  # noqa: E402
from experiments.callbacks import ResumeState, RunReport, SampleLog, Throughput  # noqa: E402
from experiments.checkpoint_io import AtomicCheckpointIO, BestCheckpoint  # noqa: E402
from experiments.checkpoints import checkpoint_header  # noqa: E402
from experiments.csv_logger import RunCSVLogger  # noqa: E402
from experiments.last_checkpoint import LastCheckpoint  # noqa: E402
from experiments.runs import (  # noqa: E402
    experiment_name,
    is_global_rank_zero,
    latest_checkpoint,
    new_version,
    run_dir_of_checkpoint,
    wandb_has_credentials,
    wandb_run_id,
)
from experiments.user_files import load_yaml  # noqa: E402
from modules.tasks.base import NonFiniteError  # noqa: E402

LINKED = ("vocab_size", "pad_id", "bos_id", "eos_id", "tokenizer_path", "num_classes")
# Our samplers resume mid-epoch themselves (datamodules.samplers.ResumableBatches), so
# Lightning's "dataloader is not resumable" warning does not apply; the others are noise.
warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
warnings.filterwarnings("ignore", message=".*tensorboardX.*")


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvertisements())

RUN_DIR_ENV = "TSUITE_RUN_DIR"  # set by rank 0 so spawned ranks log into the same folder
CREATED_RUN_DIRS: list[Path] = []  # folders this process made, removed again if it fails early


class SuiteCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="run name (default: the config's path)",
        )
        parser.add_argument("--runs_dir", type=str, default="runs", help="root of the run folders")
        parser.add_argument(
            "--run_dir", type=str | None, default=None, help="exact run folder (multi-node)"
        )
        parser.add_argument("--wandb_project", type=str, default="transformer-suite")
        parser.add_argument("--tags", type=list[str], default=[], help="extra W&B tags")
        parser.add_argument(
            "--keep_checkpoints_every",
            type=int | None,
            default=None,
            help="also keep a checkpoint every N steps (checkpoints/step-N.ckpt, for averaging)",
        )
        for name in LINKED:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    # --- run folder ------------------------------------------------------------------------
    def _settings(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def resolve_run_dir(self) -> tuple[str, Path, bool]:
        """(experiment, run folder, resuming) for this invocation."""
        settings = self._settings()
        experiment = settings.experiment or experiment_name(
            [Path(str(c)) for c in settings.get("config") or []]
        )
        root = Path(settings.runs_dir) / experiment
        checkpoint = settings.get("ckpt_path")
        if checkpoint == "last":
            found = latest_checkpoint(root)
            if found is None:
                raise FileNotFoundError(
                    f"--ckpt_path last: no {root}/version_*/checkpoints/last.ckpt to resume"
                )
            settings.ckpt_path = str(found)
            checkpoint = str(found)
        if checkpoint:
            checkpoint_header(Path(checkpoint))  # a missing or damaged file stops here, named
        if os.environ.get(RUN_DIR_ENV):
            return experiment, Path(os.environ[RUN_DIR_ENV]), checkpoint is not None
        if settings.run_dir:
            return experiment, Path(settings.run_dir), checkpoint is not None
        if checkpoint:
            previous = run_dir_of_checkpoint(Path(checkpoint))
            if previous is not None:
                if self.subcommand == "fit":
                    return experiment, previous, True
                return experiment, previous / f"{self.subcommand}-{uuid.uuid4().hex[:6]}", False
        if not is_global_rank_zero():
            raise RuntimeError(
                f"rank > 0 started without a run folder: launchers that start every rank "
                f"(torchrun, SLURM) need --run_dir or {RUN_DIR_ENV} set to the same folder"
            )
        return experiment, new_version(root), False

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        experiment, run_dir, resuming = self.resolve_run_dir()
        self.run_dir, self.experiment = run_dir, experiment
        settings = self._settings()
        self.resolved_config = self._parser(self.subcommand).dump(settings, skip_none=False)
        if is_global_rank_zero():
            # Tokenise before the run folder exists, so bad data never leaves a folder behind.
            self.datamodule.prepare_data()
            if not run_dir.exists():
                CREATED_RUN_DIRS.append(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            os.environ[RUN_DIR_ENV] = str(run_dir)
            config = self.resolved_config
            name = (
                "config.yaml"
                if not (run_dir / "config.yaml").exists()
                else f"config.{self.subcommand}-{uuid.uuid4().hex[:6]}.yaml"
            )
            (run_dir / name).write_text(config)
        trainer_settings = settings.get("trainer") or {}
        throughput = Throughput()
        callbacks = [
            throughput,
            RunReport(experiment, run_dir, throughput),
            SampleLog(run_dir),
            LearningRateMonitor("step"),
        ]
        monitor, mode = getattr(self.model, "monitor", ("val/loss", "min"))
        if trainer_settings.get("enable_checkpointing", True) is not False:
            best = BestCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best-{step}",
                monitor=monitor,
                mode=mode,
                auto_insert_metric_name=False,
            )
            callbacks += [best, LastCheckpoint(run_dir / "checkpoints" / "last.ckpt")]
        if settings.get("keep_checkpoints_every"):
            callbacks.append(
                ModelCheckpoint(
                    dirpath=run_dir / "checkpoints",
                    filename="step-{step}",
                    every_n_train_steps=settings.keep_checkpoints_every,
                    save_top_k=-1,
                    auto_insert_metric_name=False,
                )
            )
        loggers: list[Logger] | bool = False
        if trainer_settings.get("logger") is not False:
            loggers = [RunCSVLogger(str(run_dir))]
            if importlib.util.find_spec("wandb") is not None:
                wandb_logger, run_id = self.wandb_logger(experiment, run_dir, resuming)
                loggers.append(wandb_logger)
            else:
                print("[tsuite] wandb is not installed: logging to metrics.csv only", flush=True)
                run_id = ""
            callbacks.append(ResumeState(run_id))
        existing = self.trainer_defaults.get("callbacks", [])
        self.trainer_defaults["callbacks"] = [*existing, *callbacks]
        if not trainer_settings.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        kwargs.setdefault("default_root_dir", str(run_dir))
        kwargs["logger"] = loggers
        return super().instantiate_trainer(**kwargs)

    def wandb_logger(
        self, experiment: str, run_dir: Path, resuming: bool
    ) -> tuple[WandbLogger, str]:
        settings = self._settings()
        checkpoint = settings.get("ckpt_path")
        run_id = wandb_run_id(Path(checkpoint)) if resuming and checkpoint else None
        run_id = run_id or uuid.uuid4().hex[:8]
        offline = "WANDB_MODE" not in os.environ and not wandb_has_credentials()
        model = self.model
        tags = [
            type(model).__name__,
            str(model.hparams.get("preset", "")),
            experiment.split("/")[0],
            *settings.tags,
        ]
        logger = WandbLogger(
            project=settings.wandb_project,
            group=experiment,
            name=f"{experiment}/{run_dir.name}",
            job_type=self.subcommand,
            tags=[t for t in tags if t],
            save_dir=str(run_dir),
            id=run_id,
            resume="allow",
            offline=offline,
        )
        logger.log_hyperparams({"config": yaml.safe_load(self.resolved_config)})
        return logger, run_id


def check_files(args: list[str]) -> None:
    """Name the file, and the line and column, of a config that is missing, empty, not UTF-8,
    not valid YAML or not a mapping (jsonargparse would only say "<unicode string>"), and of a
    --ckpt_path that is missing or damaged (LightningCLI reads it before anything else)."""
    pairs = list(zip(args, args[1:], strict=False))
    pairs += [
        ("--ckpt_path", a.removeprefix("--ckpt_path="))
        for a in args
        if a.startswith("--ckpt_path=")
    ]
    for flag, value in pairs:
        if flag in ("-c", "--config"):
            config = load_yaml(Path(value))
            if not isinstance(config, dict):
                raise ValueError(
                    f"{value}: a config file maps keys to values (trainer:, model:, data:, ...), "
                    f"not a {type(config).__name__}"
                )
        elif flag == "--ckpt_path" and value != "last":
            checkpoint_header(Path(value))


TOOLS = {  # suite commands beside LightningCLI's
    "generate": "experiments.generate",
    "compare": "experiments.compare",
    "sweep": "experiments.sweep",
    "attention": "experiments.attention_maps",
    "inspect": "experiments.architecture",
    "translate": "experiments.translate:translate_main",
    "evaluate": "experiments.translate:evaluate_main",
    "average": "experiments.translate:average_main",
    "embed": "experiments.embed",
    "prepare": "experiments.prepare",
}


def cli_settings() -> dict[str, Any]:
    """The LightningCLI arguments of `tsuite` (and of anything that builds an experiment the
    same way); a new dict each call, since LightningCLI adds callbacks to `trainer_defaults`."""
    return dict(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        seed_everything_default=0,
        trainer_defaults={"use_distributed_sampler": False},
    )


def main(args: list[str] | None = None) -> None:
    datasets.disable_progress_bars()
    argv = sys.argv[1:] if args is None else args
    CREATED_RUN_DIRS.clear()  # only this invocation's folders
    inherited_run_dir = os.environ.get(RUN_DIR_ENV)
    try:
        if argv and argv[0] in TOOLS:
            module, _, function = TOOLS[argv[0]].partition(":")
            getattr(importlib.import_module(module), function or "main")(argv[1:])
            return
        check_files(argv)
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")  # TF32 for float32 matmuls, as nanoGPT
        SuiteCLI(
            **cli_settings(),
            # parse errors raise (caught below) instead of printing the whole usage first
            parser_kwargs={
                "exit_on_error": False,
                **{command: {"exit_on_error": False} for command in LightningCLI.subcommands()},
            },
            args=args,
        )
    except NonFiniteError as error:  # the run folder stays: its metrics show the divergence
        print(f"tsuite: error: {error}", file=sys.stderr)
        sys.exit(1)
    except (DataError, FileNotFoundError, ValueError, argparse.ArgumentError) as error:
        if os.environ.get("TSUITE_DEBUG"):
            raise
        _remove_unfinished_run_dirs()
        print(
            f"tsuite: error: {_readable(error)}\n(set TSUITE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(2)
    finally:
        # The folder was for the ranks this run spawns; a later run in this process (or a
        # process it starts) must not log into it.
        if inherited_run_dir is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = inherited_run_dir


def _readable(error: Exception) -> str:
    """The message without jsonargparse's echo of every init argument."""
    lines = str(error).strip().splitlines()
    noise = ("Given value", "- Expected a <class 'NoneType'>", "Subtypes: [")
    return "\n".join(line for line in lines if not line.strip().startswith(noise))


def _remove_unfinished_run_dirs() -> None:
    """A run that failed before its first checkpoint leaves no folder behind."""
    for run_dir in CREATED_RUN_DIRS:
        if not any(run_dir.glob("checkpoints/*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
