"""A run that is killed (SIGKILL mid-step or mid-checkpoint-write) or stopped (SIGTERM, Ctrl+C)
and resumed with `--ckpt_path last` ends exactly where the uninterrupted run ends, in the same
W&B run, and every checkpoint on disk stays loadable.

The child process pauses at the chosen point (tests/faults.py), so each signal lands there."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from experiments.run_defaults import wandb_run_id
from tests.cli_helpers import ROOT, fit_once, metric_by_step, read_metrics
from tests.test_training import lm_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def config(tmp: Path) -> Path:
    """The tiny character GPT of test_training, 8 steps, validation and checkpoints every 2,
    dropout on (a resume must restore the random-number state)."""
    path = lm_config(tmp, max_steps=8, val_check_interval=2)
    settings = yaml.safe_load(path.read_text())
    settings["model"]["init_args"]["arch"]["dropout"] = 0.1
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return fit_once(tmp, config(tmp))


def start_paused(
    tmp: Path, where: str, step: int, config_file: Path | None = None, **env: str
) -> subprocess.Popen:
    """`tsuite fit` (of `config_file`, else this file's config) in a child that pauses at
    `where` in `step` (see tests/faults.py)."""
    folder = tmp / "fault"
    folder.mkdir()
    command = [sys.executable, "-m", "tests.faults", where, str(step), str(folder)]
    command += ["fit", "-c", str(config_file or config(tmp)), f"--runs_dir={tmp / 'runs'}"]
    environment = {**os.environ, "TSUITE_CACHE": str(tmp / "cache"), **env}
    environment.pop("TSUITE_RUN_DIR", None)
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        child = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=err)
    deadline = time.monotonic() + 120
    while not (folder / "paused").exists():
        assert child.poll() is None, (folder / "stderr").read_text()[-3000:]
        assert time.monotonic() < deadline, "the child never reached its pause"
        time.sleep(0.05)
    return child


def signal_and_go(child: subprocess.Popen, tmp: Path, signum: int) -> str:
    """Send `signum` during the pause, let the child carry on; its stdout."""
    child.send_signal(signum)
    (tmp / "fault" / "go").touch()
    assert child.wait(timeout=120) == 128 + signum, (tmp / "fault" / "stderr").read_text()[-3000:]
    return (tmp / "fault" / "stdout").read_text()


def kill(child: subprocess.Popen) -> None:
    child.kill()
    assert child.wait(timeout=60) == -signal.SIGKILL


def run_folder(tmp: Path) -> Path:
    [config_file] = (tmp / "runs").rglob("config.yaml")
    return config_file.parent


def loadable_checkpoints(run: Path) -> dict[str, dict]:
    """Every *.ckpt of the run, loaded with weights_only=True."""
    found = {p.name: torch.load(p, weights_only=True) for p in run.glob("checkpoints/*.ckpt")}
    assert "last.ckpt" in found
    return found


def metric_rows(run: Path, name: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in read_metrics(run) if r.get(name)]


def resume_and_compare(tmp: Path, reference: Path) -> None:
    run = run_folder(tmp)
    run_id = wandb_run_id(run / "checkpoints" / "last.ckpt")
    assert run_id
    assert fit_once(tmp, config(tmp), "--ckpt_path=last") == run
    assert (run / "summary.json").is_file()  # the resumed run completed
    for name in ("train/loss", "val/loss"):  # every row once: none left from before the kill
        assert metric_rows(run, name) == metric_rows(reference, name), name
    final = loadable_checkpoints(run)
    assert final["last.ckpt"]["global_step"] == 8
    assert final["last.ckpt"]["wandb_run_id"] == run_id  # the same W&B run continues
    assert not list(run.glob("checkpoints/.*"))  # no temporary file left behind


def test_killed_mid_step(tmp_path: Path, reference: Path):
    kill(start_paused(tmp_path, "train", 5))  # between forward and backward of step 5
    assert loadable_checkpoints(run_folder(tmp_path))["last.ckpt"]["global_step"] == 4
    resume_and_compare(tmp_path, reference)


def test_killed_while_writing_a_checkpoint(tmp_path: Path, reference: Path):
    kill(start_paused(tmp_path, "save", 4))  # half of the step-4 checkpoint is on disk
    run = run_folder(tmp_path)
    [partial] = run.glob("checkpoints/.*.tmp-*")
    with pytest.raises(RuntimeError):
        torch.load(partial, weights_only=True)
    assert loadable_checkpoints(run)["last.ckpt"]["global_step"] == 2  # the previous one
    resume_and_compare(tmp_path, reference)


def test_sigterm_finishes_the_step_and_saves(tmp_path: Path, reference: Path):
    child = start_paused(tmp_path, "train", 4, WANDB_MODE="offline", WANDB_SILENT="true")
    stdout = signal_and_go(child, tmp_path, signal.SIGTERM)
    assert "stopped by SIGTERM at step 5" in stdout and "--ckpt_path last" in stdout
    run = run_folder(tmp_path)
    last = loadable_checkpoints(run)["last.ckpt"]
    assert last["global_step"] == 5  # step 4 was finished, then saved
    [wandb_run] = run.glob("wandb/offline-run-*")
    assert wandb_run.name.endswith(last["wandb_run_id"])
    resume_and_compare(tmp_path, reference)


def test_ctrl_c_during_validation_completes_it(tmp_path: Path, reference: Path):
    child = start_paused(tmp_path, "validation", 4)  # in the first batch of the validation
    assert "stopped by SIGINT at step 4" in signal_and_go(child, tmp_path, signal.SIGINT)
    run = run_folder(tmp_path)
    assert metric_by_step(run, "val/loss")[3] == metric_by_step(reference, "val/loss")[3]
    assert loadable_checkpoints(run)["last.ckpt"]["global_step"] == 4
    resume_and_compare(tmp_path, reference)
