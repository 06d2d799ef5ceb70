"""tsuite translate / evaluate / average on a short run of the numbers task."""

import json
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import fit_once, run_cli_captured
from tests.test_training import numbers_config

SOURCES = ["three hundred and one", "forty-two", "seven thousand, six hundred"]
REFERENCES = ["dreihunderteins", "zweiundvierzig", "siebentausendsechshundert"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mt")
    return fit_once(tmp, numbers_config(tmp), "--keep_checkpoints_every=2")


def tool(*args: str):
    return run_cli_captured(list(args), env={"WANDB_MODE": "disabled"})


def test_translate_a_file_and_stdin(run: Path, tmp_path: Path):
    source = tmp_path / "source.txt"
    source.write_text("\n".join(SOURCES) + "\n")
    done = tool(
        "translate",
        str(run / "checkpoints/last.ckpt"),
        "--input",
        str(source),
        "--output",
        str(tmp_path / "out.txt"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 3
    greedy = tool(
        "translate", str(run / "checkpoints/last.ckpt"), "--input", str(source), "--beam", "1"
    )
    assert greedy.returncode == 0 and len(greedy.stdout.splitlines()) == 3


def test_evaluate_writes_sacrebleu_with_signature(run: Path, tmp_path: Path):
    (tmp_path / "src").write_text("\n".join(SOURCES) + "\n")
    (tmp_path / "ref").write_text("\n".join(REFERENCES) + "\n")
    done = tool(
        "evaluate",
        str(run / "checkpoints/last.ckpt"),
        "--source",
        str(tmp_path / "src"),
        "--reference",
        str(tmp_path / "ref"),
        "--name",
        "probe",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((run / "eval" / "probe.json").read_text())
    assert result["bleu_signature"].startswith(
        "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"
    )
    assert 0 <= result["bleu"] <= 100 and 0 <= result["chrf"] <= 100 and result["beam"] == 4
    assert len((run / "eval" / "probe.hyp").read_text().splitlines()) == 3
    (tmp_path / "short_ref").write_text("one line\n")
    mismatch = tool(
        "evaluate",
        str(run / "checkpoints/last.ckpt"),
        "--source",
        str(tmp_path / "src"),
        "--reference",
        str(tmp_path / "short_ref"),
    )
    assert mismatch.returncode == 2 and "has 3 lines but" in mismatch.stderr


def test_average_checkpoints(run: Path, tmp_path: Path):
    steps = sorted(run.glob("checkpoints/step-*.ckpt"))
    assert len(steps) == 4  # steps 2, 4, 6, 8
    out = tmp_path / "averaged.ckpt"
    done = tool("average", "--last", "3", "--dir", str(run / "checkpoints"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    states = [
        torch.load(p, weights_only=True)["state_dict"]
        for p in sorted(steps, key=lambda p: int(p.stem.split("-")[1]))[-3:]
    ]
    averaged = torch.load(out, weights_only=True)["state_dict"]
    key = "model.encoder.blocks.0.ffn.up.weight"
    assert torch.allclose(averaged[key], sum(s[key] for s in states) / 3, atol=1e-6)
    (tmp_path / "src").write_text("forty-two\n")
    assert tool("translate", str(out), "--input", str(tmp_path / "src")).returncode == 0
    too_many = tool("average", "--last", "9", "--dir", str(run / "checkpoints"), "--out", str(out))
    assert too_many.returncode == 2 and "only 4 step-*.ckpt" in too_many.stderr


def test_translate_rejects_other_models_and_missing_files(run: Path, tmp_path: Path):
    missing = tool("translate", str(tmp_path / "nope.ckpt"), "--input", str(tmp_path / "x"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
