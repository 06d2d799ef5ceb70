"""`tsuite`: the LightningCLI entry point (fit / validate / test / predict) and the suite's own
commands.

Beyond LightningCLI it links the data module's codec into the task, builds the model of a
--ckpt_path from the config stored in that checkpoint, gives each run its folder
(`experiments.run_folder`) with the default callbacks and loggers (`experiments.run_defaults`),
and turns mistakes a user can make into one-paragraph errors instead of tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from datamodules.sources import DataError
from experiments.allocator import keep_freed_memory
from experiments.callbacks import ResumeState
from experiments.packaged import config_arguments
from experiments.run_defaults import default_callbacks, default_loggers
from experiments.run_folder import RUN_DIR_ENV, RunFolder, is_global_rank_zero
from experiments.saving import AtomicCheckpointIO
from experiments.user_files import load_yaml
from modules.tasks import NonFiniteError
from modules.tasks.checkpoints import describe_checkpoint, import_task, read_checkpoint, task_class

LINKED = (
    "codec",
    "num_classes",
    "label_names",
    "max_source_length",
)  # data facts the task is built with

TOOLS = {  # suite commands beside LightningCLI's
    "generate": "experiments.generate",
    "compare": "experiments.compare",
    "sweep": "experiments.sweep",
    "attention": "experiments.attention_maps",
    "inspect": "experiments.architecture",
    "translate": "experiments.translate:translate_main",
    "summarize": "experiments.summarize",
    "evaluate": "experiments.translate:evaluate_main",
    "average": "experiments.translate:average_main",
    "embed": "experiments.embed",
    "upgrade": "experiments.upgrade",
    "prepare": "experiments.prepare",
    "export": "experiments.export",
    "configs": "experiments.packaged",
}


def link_data_facts(parser: LightningArgumentParser) -> None:
    for name in LINKED:
        parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")


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
        link_data_facts(parser)

    def _settings(self) -> Any:
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """After parsing: the run folder (`--ckpt_path last` becomes a file), and a checkpoint
        of the configured task in the current format. LightningCLI then takes the model's
        arguments from the checkpoint, so the model is built from the config stored in it."""
        super().parse_arguments(parser, args)
        settings = self._settings()
        self.run = RunFolder.resolve(settings, self.config.get("subcommand"))
        if not settings.get("ckpt_path"):
            return
        path = Path(settings.ckpt_path)
        checkpoint = read_checkpoint(path)
        if checkpoint.get("format_version", 1) < 2:
            raise ValueError(
                f"{path} was written by an older transformer-suite (checkpoint format 1); "
                f"convert it once with: tsuite upgrade {path} --out NEW.ckpt"
            )
        wanted = import_task(settings.model.class_path)
        if task_class(checkpoint, path) is not wanted:
            raise ValueError(
                f"--ckpt_path {path} holds {describe_checkpoint(checkpoint, path)}, but the "
                f"config trains a {wanted.__name__} (model.class_path); give a checkpoint of "
                "the same task, or start from its weights with model.init_args.init_from"
            )

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        run, settings = self.run, self._settings()
        config = self._parser(self.subcommand).dump(settings, skip_none=False)
        self.check_codec(settings.get("ckpt_path"))
        check_lengths(self.model, self.datamodule, settings.model.init_args)
        if is_global_rank_zero():
            # Tokenise before the run folder exists, so bad data never leaves a folder behind.
            self.datamodule.prepare_data()
            run.create(config, self.subcommand)
        trainer_config = self.config_init[self.subcommand]["trainer"] if self.subcommand else {}
        config_callbacks = list(trainer_config.get("callbacks") or [])
        callbacks = default_callbacks(run, self.model, settings, config_callbacks)
        loggers, run_id = default_loggers(run, self.model, settings, self.subcommand, config)
        callbacks.append(ResumeState(run_id))
        self.trainer_defaults["callbacks"] = [
            *self.trainer_defaults.get("callbacks", []),
            *callbacks,
        ]
        if not (settings.get("trainer") or {}).get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        kwargs.setdefault("default_root_dir", str(run.path))
        kwargs["logger"] = loggers
        return super().instantiate_trainer(**kwargs)

    def check_codec(self, checkpoint: str | None) -> None:
        """A resumed or evaluated checkpoint must read text as the data module does."""
        if not checkpoint or "codec" not in (stored := read_checkpoint(Path(checkpoint))):
            return
        data = self.datamodule.codec
        if stored["codec"]["tokenizer"] != data.tokenizer.to_str():
            raise ValueError(
                f"--ckpt_path {checkpoint} was trained with another tokenizer than the data "
                f"module's ({data.source}, data.init_args.tokenizer): give the tokenizer the run "
                "was trained with"
            )


class _Builder(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_data_facts(parser)


def build_experiment(args: list[str]) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """The task, data module and trainer that `tsuite fit ARGS` makes (configs and overrides,
    the data module's codec linked into the task), without a run folder, loggers, checkpoints,
    progress bar or model summary, and without training."""
    quiet = [
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_progress_bar=false",
    ]
    with mock.patch.object(sys, "argv", sys.argv[:1]):  # only `args` count, not the caller's
        cli = _Builder(**cli_settings(), run=False, args=[*args, *quiet])
    return cli.model, cli.datamodule, cli.trainer


def check_lengths(task: Any, data: Any, model_args: Any) -> None:
    """Every sequence the data makes fits the model's position table (found before training,
    not at the first forward pass)."""
    if not hasattr(data, "sequence_lengths") or not hasattr(task, "model"):
        return
    limit, pretrained = task.model.cfg.max_length, model_args.get("init_from")
    table = (
        f"the pretrained model's position table ({limit} positions, "
        f"model.init_args.init_from={pretrained})"
        if pretrained
        else f"model.init_args.arch.max_length={limit}"
    )
    for key, length in data.sequence_lengths().items():
        if length > limit:
            raise ValueError(
                f"{key}={length} is longer than {table}: lower {key} or give the model a longer "
                "position table"
            )


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


def check_files(args: list[str]) -> None:
    """Name the file, and the line and column, of a config that is missing, empty, not UTF-8,
    not valid YAML or not a mapping (jsonargparse would only say "<unicode string>")."""
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("-c", "--config"):
            config = load_yaml(Path(value))
            if not isinstance(config, dict):
                raise ValueError(
                    f"{value}: a config file maps keys to values (trainer:, model:, data:, ...), "
                    f"not a {type(config).__name__}"
                )


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet() -> None:
    """Tokenizer threads off in forked loader workers; Lightning's notes that do not apply."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Our samplers resume mid-epoch themselves (datamodules.samplers.ResumableBatches), so
    # Lightning's "dataloader is not resumable" warning does not apply; the others are noise.
    warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*tensorboardX.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvertisements())
    import datasets

    datasets.disable_progress_bars()


def main(args: list[str] | None = None) -> None:
    quiet()
    argv = config_arguments(sys.argv[1:] if args is None else args)
    RunFolder.created_here.clear()  # only this invocation's folders
    inherited_run_dir = os.environ.get(RUN_DIR_ENV)
    try:
        if argv and argv[0] in TOOLS:
            module, _, function = TOOLS[argv[0]].partition(":")
            getattr(importlib.import_module(module), function or "main")(argv[1:])
            return
        check_files(argv)
        if args is None:  # resolved configs in sys.argv too: DDP starts its ranks from it
            sys.argv[1:] = argv
        import torch

        keep_freed_memory()
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")  # TF32 for float32 matmuls, as nanoGPT
        SuiteCLI(
            **cli_settings(),
            # parse errors raise (caught below) instead of printing the whole usage first
            parser_kwargs={
                "exit_on_error": False,
                **{command: {"exit_on_error": False} for command in LightningCLI.subcommands()},
            },
            args=None if args is None else argv,
        )
    except NonFiniteError as error:  # the run folder stays: its metrics show the divergence
        print(f"tsuite: error: {error}", file=sys.stderr)
        sys.exit(1)
    except (DataError, FileNotFoundError, ValueError, argparse.ArgumentError) as error:
        RunFolder.remove_unfinished()
        if os.environ.get("TSUITE_DEBUG"):
            raise
        print(
            f"tsuite: error: {_readable(error)}\n(set TSUITE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(2)
    except BaseException:  # anything else (a bug, Ctrl+C at start-up) before a checkpoint
        RunFolder.remove_unfinished()
        raise
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


if __name__ == "__main__":
    main()
