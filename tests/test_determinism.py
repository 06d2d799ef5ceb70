"""The same config and seed give identical metrics on CPU (dropout on, tokenizer trained anew
in a cache of each run's own); another seed gives others."""

from pathlib import Path

import pytest

from tests.cli_helpers import fit_once, read_metrics
from tests.test_training import lm_config

DROPOUT = '--model.init_args.arch={"dropout": 0.1, "max_length": 64}'


def metrics(run: Path) -> list[dict[str, str]]:
    """Every row of metrics.csv but the timing."""
    return [
        {k: v for k, v in row.items() if k != "train/tokens_per_s"} for row in read_metrics(run)
    ]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_same_seed_same_metrics(tmp_path: Path):
    config = lm_config(tmp_path)
    first, second, other_seed = (
        fit_once(tmp_path / name, config, DROPOUT, *seed)
        for name, seed in (("a", []), ("b", []), ("c", ["--seed_everything=8"]))
    )
    assert len(metrics(first)) > 10 and metrics(first) == metrics(second)
    assert metrics(first) != metrics(other_seed)
