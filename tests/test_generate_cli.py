"""`tsuite generate` on a checkpoint of a short run, and the samples logged during training."""

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import fit_once, run_cli_captured
from tests.test_training import lm_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gen")
    run = fit_once(tmp, lm_config(tmp), "--model.init_args.sample_tokens=30")
    shutil.rmtree(tmp / "cache")  # the checkpoint must carry its own tokenizer
    return run


def generate(run: Path, *args: str):
    return run_cli_captured(["generate", str(run / "checkpoints" / "last.ckpt"), *args])


def test_samples_are_logged_each_validation(trained: Path):
    rows = [json.loads(line) for line in (trained / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(r["prompt"] and r["continuation"] for r in rows)


def test_generate_greedy_and_sampled(trained: Path):
    done = generate(trained, "--prompt", "It is a truth", "--max_new_tokens", "20")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout.strip()
    assert text.startswith("It is a truth") and len(text) > len("It is a truth")
    again = generate(trained, "--prompt", "It is a truth", "--max_new_tokens", "20")
    assert again.stdout == done.stdout  # greedy is deterministic
    sampled = generate(
        trained,
        "--prompt",
        "It",
        "--max_new_tokens",
        "20",
        "--temperature",
        "1.0",
        "--top_k",
        "5",
        "--num_samples",
        "2",
        "--seed",
        "4",
    )
    assert sampled.returncode == 0 and sampled.stdout.count("--- sample") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", ""], "--prompt is empty"),
        (["--prompt", "x" * 60, "--max_new_tokens", "10"], "exceeds the model's context of 64"),
        (["--prompt", "It", "--top_p", "2"], "top_p=2.0"),
    ],
)
def test_generate_bad_input(trained: Path, args: list[str], message: str):
    done = generate(trained, *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_generate_slides_past_the_context(trained: Path):
    done = generate(trained, "--prompt", "x" * 60, "--max_new_tokens", "10", "--overflow", "slide")
    assert done.returncode == 0, done.stderr[-2000:]
