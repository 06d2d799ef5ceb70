"""`tsuite export`: a trained run as a Hugging Face folder that transformers loads and computes
the same with, with a model card; refusals write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modules.tasks import load_task
from tests.cli_helpers import fit_once, run_cli
from tests.test_cli_errors import world  # noqa: F401 - a finished GPT and translation run
from tests.test_training import lm_config

transformers = pytest.importorskip("transformers")


def test_export_a_trained_gpt_and_translation_model(world: Path, tmp_path: Path, capsys):  # noqa: F811
    lm = next((world / "lm" / "runs").rglob("last.ckpt"))
    run_cli(["export", str(lm), "--out", str(tmp_path / "gpt")])
    assert f"written: {tmp_path / 'gpt'}" in capsys.readouterr().out
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gpt").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "gpt")
    task = load_task(lm)
    text = "It is a truth"
    ids = task.codec.encode(text)
    assert tokenizer(text)["input_ids"] == ids
    with torch.no_grad():
        ours, theirs = task.model(torch.tensor([ids])), hf(torch.tensor([ids])).logits
    assert (ours - theirs).abs().max() < 1e-5
    greedy = hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids) :]
    [expected] = task.continue_text(text, 8, task.sampling.__class__())
    assert tokenizer.decode(greedy, skip_special_tokens=True) == expected[len(text) :]
    card = (tmp_path / "gpt" / "README.md").read_text()
    assert "GPT2LMHeadModel" in card and "val/loss" in card and "transformer-suite" in card

    mt = next((world / "mt" / "runs").rglob("last.ckpt"))
    run_cli(["export", str(mt), "--out", str(tmp_path / "marian")])
    assert (
        type(transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "marian")).__name__
        == "MarianMTModel"
    )


def test_export_refuses_what_it_cannot_map_and_writes_nothing(world: Path, tmp_path: Path, capsys):  # noqa: F811
    lm = next((world / "lm" / "runs").rglob("last.ckpt"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as stopped:
        run_cli(["export", str(lm), "--out", str(tmp_path / "taken")])
    assert stopped.value.code == 2 and "taken exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]

    sinusoidal = tmp_path / "sinusoidal"
    sinusoidal.mkdir()
    config = lm_config(sinusoidal, max_steps=1, val_check_interval=1)
    run = fit_once(
        sinusoidal,
        config,
        '--model.init_args.arch={"positions": "sinusoidal", "max_length": 64, "dropout": 0.0}',
    )
    with pytest.raises(SystemExit) as stopped:
        run_cli(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "no")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "positions='sinusoidal'" in error
    assert not (tmp_path / "no").exists()
