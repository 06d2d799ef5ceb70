"""Helpers for tests that drive `tsuite`: tiny overrides and local fixtures for any config."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from experiments.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
SIZE_KEYS = {"d_model", "n_heads", "n_kv_heads", "n_layers", "n_decoder_layers", "d_ff"}
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "seven",
    "dogs",
    "ran",
    "past",
    "the",
    "old",
    "red",
    "barn",
    "at",
    "dawn",
]


def experiment_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if "trainer" not in p.parts)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def write_fixture(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Local jsonl files with the columns the config's data module reads, and the source
    override that points at them (same schema as the hub data set)."""
    data = config["data"]["init_args"]
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 120), ("validation", 16), ("test", 16)):
        rows = []
        for i in range(n):
            sentence = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + i % 7))
            if "source_lang" in data:
                rows.append({data["source_lang"]: sentence, data["target_lang"]: sentence.upper()})
            elif "source_column" in data:  # summarisation: the first words as the summary
                summary = " ".join(sentence.split()[:3])
                rows.append({data["source_column"]: sentence, data["target_column"]: summary})
            elif "doc_stride" in data:  # extractive QA, SQuAD's schema
                first, second, third = sentence.split()[:3]
                rows.append(
                    {
                        "question": f"which word is third in line {i}?",
                        "context": sentence,
                        "answers": {"text": [third], "answer_start": [len(first + second) + 2]},
                    }
                )
            elif "num_classes" in data:
                rows.append(
                    {
                        data.get("text_column", "text"): sentence,
                        data.get("label_column", "label"): i % 2,
                    }
                )
            else:
                rows.append({data.get("text_column", "text"): sentence})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"kind": "local", "name": str(folder), "config": None, "splits": {}}


def tiny_args(config_path: Path, tmp: Path) -> list[str]:
    """Overrides that make any experiment config run in seconds on a CPU."""
    config = load(config_path)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    args = [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.accumulate_grad_batches=1",
        f"--runs_dir={tmp / 'runs'}",
    ]
    if "init_from" not in model:
        arch = {k: v for k, v in (model.get("arch") or {}).items() if k not in SIZE_KEYS}
        arch["max_length"] = 512
        args += ["--model.init_args.preset=tiny", f"--model.init_args.arch={json.dumps(arch)}"]
    if data["source"]["kind"] == "hub":
        source = write_fixture(config, tmp / "fixture")
        args.append(f"--data.init_args.source={json.dumps(source)}")
    for key, value in (("batch_size", 4), ("max_tokens", 256), ("num_workers", 0)):
        if key in data:
            args.append(f"--data.init_args.{key}={value}")
    if config["data"]["class_path"].endswith("CausalLMDataModule"):
        args.append("--data.init_args.max_length=16")
    if model.get("compile"):
        args.append("--model.init_args.compile=false")
    return args


def run_cli(args: list[str]) -> None:
    """In-process `tsuite` (raises SystemExit on a user error)."""
    main(args)


def fit_once(tmp: Path, config: Path, *overrides: str) -> Path:
    """`tsuite fit` with its own cache and runs folder under `tmp`; the run folder."""
    import pytest

    patch = pytest.MonkeyPatch()
    patch.setenv("TSUITE_CACHE", str(tmp / "cache"))
    patch.delenv("TSUITE_RUN_DIR", raising=False)
    try:
        main(["fit", "-c", str(config), f"--runs_dir={tmp / 'runs'}", *overrides])
    finally:
        patch.undo()
    [config_file] = (tmp / "runs").rglob("config.yaml")
    return config_file.parent


def run_cli_process(
    args: list[str], env: dict[str, str] | None = None, timeout: int = 300, stdin: str = ""
) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("TSUITE_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd=ROOT,
        input=stdin,
    )


def run_cli_captured(
    args: list[str], env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess:
    """`run_cli_process` in this process: the same exit code, stdout and stderr (a user error's
    SystemExit code, 1 and the traceback for anything else), without the 5-10 s a new
    interpreter spends importing torch and Lightning. Tests of what only a real process shows
    (signals, /dev/stdin, the interpreter's exit) keep `run_cli_process`."""
    import pytest

    out, err = io.StringIO(), io.StringIO()
    patch = pytest.MonkeyPatch()
    for key, value in (env or {}).items():
        patch.setenv(key, value)
    patch.delenv("TSUITE_RUN_DIR", raising=False)
    patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code = 0
    try:
        with (
            contextlib.chdir(ROOT),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            log_handlers_writing_to(err),
        ):
            main(list(args))
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        if isinstance(exit.code, str):
            err.write(exit.code + "\n")
    except Exception:
        traceback.print_exc(file=err)
        code = 1
    finally:
        patch.undo()
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def log_handlers_writing_to(stream: io.StringIO) -> Iterator[None]:
    """Point the plain stream handlers of every logger (Lightning's writes to the stderr of
    the time it was imported) at `stream` for a while; pytest's own handlers stay."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    handlers = {
        h
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for h in logger.handlers
        if type(h) is logging.StreamHandler
    }
    previous = {h: h.setStream(stream) for h in handlers}
    try:
        yield
    finally:
        for handler, old in previous.items():
            handler.setStream(old)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def metric_by_step(run_dir: Path, name: str) -> dict[int, float]:
    return {int(r["step"]): float(r[name]) for r in read_metrics(run_dir) if r.get(name)}
