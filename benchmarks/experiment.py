"""Build an experiment config's task module, data module and trainer the way `tsuite fit`
does (the same config files and linked data facts), without a run folder or loggers."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import lightning as L  # noqa: E402

from experiments.cli import build_experiment  # noqa: E402


@contextmanager
def lightning_notes_off() -> Iterator[None]:
    """Lightning's notes on every Trainer ("GPU available", "Seed set", "max_steps reached")
    would bury a benchmark's table. The levels are restored afterwards: importing or calling a
    benchmark (as the tests do) leaves the process's logging as it was."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


DEFAULT = "experiments/configs/default.yaml"
# A small form of the default experiment for --quick and the smoke test.
QUICK_DEFAULT = [
    '--model.init_args.arch={"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 64}',
    '--data.init_args.source.options={"max_number": 3000, "count": 400, "held_out": 0.1}',
    "--data.init_args.tokenizer.vocab_size=300",
    "--data.init_args.max_tokens=512",
]


def build(
    config: str = DEFAULT, overrides: list[str] | None = None
) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """(task module, data module, trainer) of an experiment config with command-line
    `overrides`, as `tsuite fit` makes them but without logger, checkpoints, progress bar
    and model summary."""
    return build_experiment(["-c", config, *(overrides or [])])
