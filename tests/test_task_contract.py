"""The task contract: checkpoints rebuild the model from the config stored inside and read text
with the codec stored inside; one table of metric goals serves checkpoint selection, the run
summary, the end-of-run table, W&B and `tsuite compare`; checkpoints of the earlier format load."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from tokenizers import Tokenizer

from datamodules.tokenization import TokenizerSpec, train_tokenizer
from experiments.callbacks import RunReport, define_wandb_metrics
from experiments.compare import Run
from modules.config import EncoderDecoderConfig, TransformerConfig
from modules.models import FAMILIES
from modules.tasks import TASKS, Seq2SeqModule, TaskModule, load_task
from modules.tasks.checkpoints import read_checkpoint
from tests.cli_helpers import fit_once, run_cli_captured
from tests.codecs import toy_codec
from tests.test_training import lm_config

TINY = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 32, "dropout": 0.0}


def save(task: TaskModule, path: Path) -> Path:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


def outputs(task: TaskModule, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if task.family == "encoder-decoder":
            return task.model(ids, ids[:, :5])
        if task.family == "encoder":
            return task.model(ids, torch.ones_like(ids))
        return task.model(ids)


@pytest.mark.parametrize("cls", TASKS, ids=lambda c: c.__name__)
def test_a_checkpoint_rebuilds_its_model_when_the_preset_has_changed(cls, tmp_path, monkeypatch):
    task = cls(codec=toy_codec(60, cls.family), preset="tiny", arch=TINY).eval()
    path = save(task, tmp_path / "task.ckpt")
    ids = torch.randint(4, 60, (2, 9))
    expected = outputs(task, ids)
    config_class: type[TransformerConfig] = FAMILIES[cls.family][1]
    changed = {**config_class.presets["tiny"], "d_ff": 96, "n_heads": 4, "max_length": 16}
    monkeypatch.setitem(config_class.presets, "tiny", changed)
    loaded = load_task(path)
    assert loaded.model.cfg == task.model.cfg
    assert torch.equal(outputs(loaded, ids), expected)


def char_tokenizer(text: str, path: Path) -> Path:
    train_tokenizer(TokenizerSpec(kind="char"), iter([text])).save(str(path))
    return path


@pytest.mark.timeout(120)
def test_the_codec_inside_a_checkpoint_wins_over_the_tokenizer_file(tmp_path: Path):
    tokenizer = char_tokenizer("abcdefghijklmnopqrstuvwxyz ,.ITwf", tmp_path / "tok.json")
    run = fit_once(
        tmp_path,
        lm_config(tmp_path, max_steps=2, val_check_interval=2),
        f"--data.init_args.tokenizer.path={tokenizer}",
    )
    original = Tokenizer.from_file(str(tokenizer)).to_str()
    char_tokenizer("ABCDEFGH abcdefghijklmnopqrstuvwxyz ,.ITwf", tokenizer)  # other ids
    assert Tokenizer.from_file(str(tokenizer)).to_str() != original
    task = load_task(run / "checkpoints" / "last.ckpt")
    assert task.codec is not None and task.codec.tokenizer.to_str() == original


def test_metric_goals_agree_in_every_report(tmp_path: Path):
    """Each metric of each task is minimised or maximised the same way when the best
    checkpoint is chosen, in summary.json, in the end-of-run table, in W&B and in compare."""
    values = [1.0, 3.0, 2.0]
    for cls in TASKS:
        task = cls(codec=toy_codec(60, cls.family), preset="tiny", arch=TINY)
        for metric, goal in cls.metric_goals.items():
            expected = max(values) if goal == "max" else min(values)
            name = f"val/{metric}"
            # a text metric is monitored only where it is configured
            chosen = (
                {"metrics": [metric]} if issubclass(cls, Seq2SeqModule) and metric != "loss" else {}
            )
            codec = toy_codec(60, cls.family)
            chooser = cls(codec=codec, preset="tiny", arch=TINY, monitor=name, **chosen)
            assert chooser.monitor == (name, goal), (cls.__name__, metric)

            report = RunReport("e", tmp_path, throughput=None)  # type: ignore[arg-type]
            report.history = [{"step": i, name: v} for i, v in enumerate(values)]
            report.history_seconds = [0.0] * len(values)
            best = report_best(report, task, name)
            assert best == expected, (cls.__name__, metric, "summary.json")

            recorded: dict[str, str] = {}
            define_wandb_metrics(FakeRun(recorded), task)
            assert recorded[name] == goal, (cls.__name__, metric, "W&B")

            config = {"model.class_path": f"{cls.__module__}.{cls.__name__}"}
            run = Run("r", config, {name: list(enumerate(values))})
            assert run.best(name) == expected, (cls.__name__, metric, "compare")
    qa = next(c for c in TASKS if c.__name__ == "QuestionAnsweringModule")
    assert qa.metric_goals["f1"] == "max"


class FakeRun:
    def __init__(self, recorded: dict[str, str]) -> None:
        self.recorded = recorded

    def define_metric(self, name: str, summary: str) -> None:
        self.recorded[name] = summary


class FakeTrainer:
    global_step = 3
    checkpoint_callback = None
    loggers: list = []


def report_best(report: RunReport, task: TaskModule, name: str) -> float:
    throughput = type("T", (), {"tokens_per_second": 0.0})()
    report.throughput = throughput  # type: ignore[assignment]
    summary = report.summary(FakeTrainer(), task)  # type: ignore[arg-type]
    (report.run_dir / "summary.json").write_text(json.dumps(summary))
    table = report.render(summary, FakeTrainer())  # type: ignore[arg-type]
    row = next(line for line in table.splitlines() if line.strip().startswith(name))
    assert float(row.split()[1]) == summary["best"][name]  # the table shows the same best
    return summary["best"][name]


def format_1(task: TaskModule, path: Path) -> Path:
    """The checkpoint the suite wrote before the task contract: tokenizer facts as arguments,
    the model rebuilt from preset + arch, the tokenizer as `tokenizer_json`."""
    save(task, path)
    checkpoint = torch.load(path, weights_only=True)
    codec = task.codec
    assert codec is not None
    arch = {("max_len" if k == "max_length" else k): v for k, v in TINY.items()}
    checkpoint["hyper_parameters"] = {
        "vocab_size": codec.vocab_size,
        "pad_id": codec.pad_id,
        "bos_id": codec.bos_id,
        "eos_id": codec.eos_id,
        "tokenizer_path": "/gone/tokenizer.json",
        "preset": "tiny",
        "arch": arch,
        "label_smoothing": 0.1,
        "bleu": True,
        "monitor": "val/bleu",
        "beam_size": 4,
        "length_penalty": 0.6,
        "compile": False,
    }
    checkpoint["tokenizer_json"] = checkpoint.pop("codec")["tokenizer"]
    checkpoint.pop("format_version")
    torch.save(checkpoint, path)
    return path


def test_checkpoints_of_the_earlier_format_load_and_convert(tmp_path: Path):
    cls = next(c for c in TASKS if c.family == "encoder-decoder")
    task = cls(codec=toy_codec(60, cls.family), preset="tiny", arch=TINY).eval()
    old = format_1(task, tmp_path / "old.ckpt")
    ids = torch.randint(4, 60, (2, 9))
    loaded = load_task(old)
    assert isinstance(loaded.model.cfg, EncoderDecoderConfig)
    assert torch.equal(outputs(loaded, ids), outputs(task, ids))
    assert loaded.codec is not None and loaded.codec.pad_id == task.codec.pad_id

    done = run_cli_captured(["fit", "-c", "experiments/configs/default.yaml", f"--ckpt_path={old}"])
    assert done.returncode == 2 and f"tsuite upgrade {old}" in done.stderr
    new = tmp_path / "new.ckpt"
    done = run_cli_captured(["upgrade", str(old), "--out", str(new)])
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(new)["format_version"] == 2
    assert torch.equal(outputs(load_task(new), ids), outputs(task, ids))
