"""Failures found late still leave nothing behind: an error inside the data module's loaders
(raised once the run folder exists) removes the folder; a global batch that does not divide
over accumulation steps is named; `--input` reads any readable path, `-` included."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules import CausalLMDataModule, DataError
from experiments.cli import main
from tests.cli_helpers import run_cli_captured, run_cli_process
from tests.test_cli_errors import world  # noqa: F401 - the finished runs the cases use
from tests.test_training import lm_config


def no_run_folder(runs: Path) -> bool:
    return not runs.exists() or not any(runs.rglob("version_*"))


@pytest.mark.parametrize("error", [DataError("split 'train': a bad row"), RuntimeError("a bug")])
def test_an_error_in_a_loader_removes_the_run_folder(error, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)

    def fail(self):
        assert any((tmp_path / "runs").rglob("config.yaml"))  # the folder exists by now
        raise error

    monkeypatch.setattr(CausalLMDataModule, "train_dataloader", fail)
    config = lm_config(tmp_path)
    with pytest.raises((SystemExit, RuntimeError)) as stopped:
        main(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"])
    if isinstance(error, DataError):  # a mistake a user can fix: exit 2, one paragraph
        assert stopped.value.code == 2 and "a bad row" in capsys.readouterr().err
    assert no_run_folder(tmp_path / "runs")
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # no half-written cache entry


def test_a_batch_that_does_not_divide_names_both_keys_and_leaves_nothing(tmp_path: Path):
    config = lm_config(tmp_path)
    done = run_cli_captured(
        ["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"]
        + ["--trainer.accumulate_grad_batches=3"],
        {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "data.batch_size=8" in done.stderr and "accumulate_grad_batches = 1 x 3" in done.stderr
    assert no_run_folder(tmp_path / "runs")
    debug = run_cli_captured(
        ["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"]
        + ["--trainer.accumulate_grad_batches=3"],
        {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled", "TSUITE_DEBUG": "1"},
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr  # TSUITE_DEBUG shows it
    assert no_run_folder(tmp_path / "runs")


def test_input_from_standard_input_and_device_files(world: Path):  # noqa: F811
    checkpoint = str(next((world / "mt" / "runs").rglob("last.ckpt")))
    for run, source in ((run_cli_captured, "-"), (run_cli_process, "/dev/stdin")):
        done = run(["translate", checkpoint, "--input", source], stdin="one\ntwo\n")
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 2  # a translation for each line
    done = run_cli_captured(["translate", checkpoint, "--input", "-"], stdin="\n")
    assert done.returncode == 2 and "standard input is empty" in done.stderr


@pytest.mark.parametrize(
    "data_class",
    [
        "CausalLMDataModule",
        "MaskedLMDataModule",
        "ClassificationDataModule",
        "QuestionAnsweringDataModule",
        "TranslationDataModule",
    ],
)
def test_every_data_length_is_checked_against_the_position_table(data_class: str):
    import datamodules
    from datamodules import Source, TokenizerSpec
    from experiments.cli import check_lengths
    from modules.tasks import CausalLMModule

    cls = getattr(datamodules, data_class)
    data = cls(Source(), TokenizerSpec(), max_length=200)  # nothing is loaded yet
    task = CausalLMModule(preset="tiny", arch={"max_length": 100})
    with pytest.raises(ValueError, match=r"data.init_args.max_length=200 is longer than model"):
        check_lengths(task, data, {"init_from": None})
    check_lengths(CausalLMModule(preset="tiny", arch={"max_length": 200}), data, {})
