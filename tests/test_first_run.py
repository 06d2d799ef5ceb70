"""What a newcomer sees: a progress bar over the run's steps, a model summary without a column
of zeros, and a tool that names the missing checkpoint before any other argument."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import run_cli_captured
from tests.test_training import lm_config


def test_progress_counts_steps_and_the_summary_has_no_empty_flops(tmp_path: Path):
    config = lm_config(
        tmp_path,
        max_steps=4,
        val_check_interval=4,
        enable_progress_bar=True,
        enable_model_summary=True,
    )
    done = run_cli_captured(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"])
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "step: 100%" in output and "4/4" in output
    assert "Epoch" not in output and "v_num" not in output
    assert (
        "trainable parameters" in output and "FLOPs" not in output and "Total Flops" not in output
    )


def test_a_missing_checkpoint_is_named_first(tmp_path: Path):
    done = run_cli_captured(["generate", str(tmp_path / "missing.ckpt")])
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert "missing.ckpt does not exist" in error and "required" not in done.stderr
