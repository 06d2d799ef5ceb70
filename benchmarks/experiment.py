"""Build an experiment config's task module, data module and trainer the way `tsuite fit`
does (the same config files and linked data facts), without a run folder or loggers."""

from __future__ import annotations

import os
import sys
from unittest import mock

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402

import lightning as L  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402

from experiments.cli import cli_settings, link_data_facts  # noqa: E402

# Lightning's notes on every Trainer ("GPU available", "Seed set", "max_steps reached") would
# bury the benchmark table
for name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.WARNING)

DEFAULT = "experiments/configs/default.yaml"
# A small form of the default experiment for --quick and the smoke test.
QUICK_DEFAULT = [
    '--model.init_args.arch={"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 64}',
    '--data.init_args.source.options={"max_number": 3000, "count": 400, "held_out": 0.1}',
    "--data.init_args.tokenizer.vocab_size=300",
    "--data.init_args.max_tokens=512",
]


class _Builder(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_data_facts(parser)


def build(
    config: str = DEFAULT, overrides: list[str] | None = None
) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """(task module, data module, trainer) of an experiment config with command-line
    `overrides`, as `tsuite fit` makes them but without logger, checkpoints, progress bar
    and model summary."""
    with mock.patch.object(sys, "argv", sys.argv[:1]):  # only `args` count, not our own flags
        cli = _Builder(
            **cli_settings(),
            run=False,
            args=[
                "-c",
                config,
                "--trainer.logger=false",
                "--trainer.enable_checkpointing=false",
                "--trainer.enable_model_summary=false",
                "--trainer.enable_progress_bar=false",
                *(overrides or []),
            ],
        )
    return cli.model, cli.datamodule, cli.trainer
