"""Mistakes a user can make: exit code 2, one paragraph naming the key, file or line, and no
run folder or half-written cache left behind."""

import json
from pathlib import Path

import pytest

from tests.cli_helpers import CONFIGS, run_cli_process

DEFAULT = str(CONFIGS / "default.yaml")


def fit(tmp_path: Path, *args: str):
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    return run_cli_process(
        ["fit", "-c", DEFAULT, f"--runs_dir={tmp_path / 'runs'}", *args], env, timeout=120
    )


def local_source(folder: Path) -> str:
    return "--data.init_args.source=" + json.dumps({"kind": "local", "name": str(folder)})


def assert_clean_failure(done, tmp_path: Path, *needles: str, data_error: bool = False) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # nothing half-written
    if data_error:  # bad data never reaches the tokenised cache
        assert not list((tmp_path / "cache").glob("data/*"))


def test_unknown_key(tmp_path: Path):
    done = fit(tmp_path, "--model.init_args.label_smothing=0.1")
    assert_clean_failure(done, tmp_path, "label_smothing")


def test_wrong_type(tmp_path: Path):
    done = fit(tmp_path, "--data.init_args.max_tokens=lots")
    assert_clean_failure(done, tmp_path, "max_tokens")


def test_bad_arch_value(tmp_path: Path):
    done = fit(tmp_path, '--model.init_args.arch={"d_model": 100, "n_heads": 8}')
    assert_clean_failure(done, tmp_path, "d_model=100 is not divisible by n_heads=8")


def test_malformed_yaml(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: [unclosed\n")
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    done = run_cli_process(["fit", "-c", str(bad)], env, timeout=120)
    assert done.returncode == 2 and "bad.yaml" in done.stderr


def test_missing_data_folder(tmp_path: Path):
    done = fit(tmp_path, local_source(tmp_path / "absent"))
    assert_clean_failure(done, tmp_path, "absent does not exist", data_error=True)


def test_missing_column(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text('{"english": "one", "de": "eins"}\n')
    done = fit(tmp_path, local_source(data))
    assert_clean_failure(
        done, tmp_path, "lacks column(s) ['en']", "source.columns", data_error=True
    )


def test_empty_split(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"en": "one", "de": "eins"}\n')
    (data / "validation.jsonl").write_text("")
    done = fit(tmp_path, local_source(data))
    assert_clean_failure(done, tmp_path, "validation.jsonl is empty", data_error=True)


def test_undecodable_text(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_bytes(
        b'{"en": "one", "de": "eins"}\n{"en": "tw\xff", "de": "zwei"}\n'
    )
    (data / "validation.jsonl").write_text('{"en": "one", "de": "eins"}\n')
    done = fit(tmp_path, local_source(data))
    assert_clean_failure(done, tmp_path, "train.jsonl, line 2: not valid UTF-8", data_error=True)


def test_resume_without_checkpoint(tmp_path: Path):
    done = fit(tmp_path, "--ckpt_path=last")
    assert_clean_failure(done, tmp_path, "no ", "last.ckpt to resume")


@pytest.mark.parametrize("option", ["--data.init_args.source.kind=ftp", "--trainer.max_stepz=3"])
def test_parser_errors_name_the_option(tmp_path: Path, option: str):
    done = fit(tmp_path, option)
    assert done.returncode == 2
    assert option.split("=")[0].removeprefix("--").split(".")[-1] in done.stderr
