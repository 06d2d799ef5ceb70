"""Data layer: sources, tokenizer cache, samplers, collators and the data modules."""

import json
import warnings
from pathlib import Path

import pytest
import torch

from datamodules import (
    CausalLMDataModule,
    ClassificationDataModule,
    DataError,
    MaskedLMDataModule,
    Source,
    TokenizerSpec,
    TranslationDataModule,
)
from datamodules.builtin import number_words
from datamodules.collators import MaskedLMCollator, Seq2SeqCollator
from datamodules.samplers import ShardedSampler, TokenBudgetBatchSampler, WindowSampler
from tests.codecs import toy_codec

SENTENCES = [
    "the cat sat on the mat",
    "a dog barked at the moon",
    "attention is all you need",
    "transformers read whole sentences at once",
    "the quick brown fox jumps over the lazy dog",
    "tokenizers split text into pieces",
]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def parallel_dir(tmp_path: Path) -> Path:
    for split, n in (("train", 40), ("validation", 8), ("test", 8)):
        rows = [{"en": f"{s} {i}", "de": f"{s[::-1]} {i}"} for i in range(n) for s in SENTENCES[:1]]
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    return tmp_path


def test_numbers_splits_are_disjoint_and_deterministic():
    data = number_words(max_number=1000, count=500, seed=3)
    numbers = {split: set(data[split]["number"]) for split in data}
    assert len(numbers["validation"]) == len(numbers["test"]) == 50
    assert not numbers["train"] & numbers["validation"] and not numbers["train"] & numbers["test"]
    assert data["train"]["de"] == number_words(max_number=1000, count=500, seed=3)["train"]["de"]
    row = data["train"][0]
    assert set(row) == {"number", "en", "de", "fr"}


def test_translation_module_from_local_jsonl(parallel_dir: Path, tmp_path: Path):
    dm = TranslationDataModule(
        Source(kind="local", name=str(parallel_dir)),
        TokenizerSpec(vocab_size=300, min_frequency=1),
        max_tokens=200,
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    assert (batch["decoder_input_ids"][:, 0] == dm.codec.bos_id).all()
    # labels are the decoder inputs shifted left, ending in eos, -100 on padding
    for row_in, row_lab in zip(batch["decoder_input_ids"], batch["labels"], strict=True):
        real = row_lab[row_lab != -100]
        assert real[-1] == dm.codec.eos_id
        assert torch.equal(row_in[1 : len(real)], real[:-1])
    assert batch["input_ids"].numel() <= 200 and batch["decoder_input_ids"].numel() <= 200
    text = dm.codec.decode_batch(batch["input_ids"][:1].tolist())[0]
    assert text.startswith("the cat sat")  # byte-level BPE restores spaces exactly


def test_tokenizer_and_data_cache_are_reused_and_atomic(parallel_dir: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    kwargs = dict(source=Source(kind="local", name=str(parallel_dir)), cache_dir=str(cache))
    first = TranslationDataModule(tokenizer=TokenizerSpec(vocab_size=300), **kwargs)
    first.prepare_data()
    tokenizer_files = list(cache.glob("tokenizers/*/tokenizer.json"))
    assert len(tokenizer_files) == 1
    stamp = tokenizer_files[0].stat().st_mtime_ns
    second = TranslationDataModule(tokenizer=TokenizerSpec(vocab_size=300), **kwargs)
    second.prepare_data()
    assert tokenizer_files[0].stat().st_mtime_ns == stamp  # loaded, not retrained
    assert second.cache_folder == first.cache_folder
    assert not list(cache.rglob(".tmp-*"))  # no temporary folders left behind
    # a damaged tokenizer file is rebuilt with a warning
    tokenizer_files[0].write_text("{ not json")
    third = TranslationDataModule(tokenizer=TokenizerSpec(vocab_size=300), **kwargs)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert third.codec.vocab_size == first.codec.vocab_size
    # other parameters make another cache entry
    other = TranslationDataModule(tokenizer=TokenizerSpec(vocab_size=280), **kwargs)
    assert other.cache_folder != first.cache_folder


def test_damaged_data_cache_is_rebuilt(parallel_dir: Path, tmp_path: Path):
    dm = TranslationDataModule(
        Source(kind="local", name=str(parallel_dir)),
        TokenizerSpec(vocab_size=300),
        cache_dir=str(tmp_path),
    )
    dm.prepare_data()
    for arrow in dm.cache_folder.rglob("*.arrow"):
        arrow.write_bytes(b"garbage")
    fresh = TranslationDataModule(
        Source(kind="local", name=str(parallel_dir)),
        TokenizerSpec(vocab_size=300),
        cache_dir=str(tmp_path),
    )
    with pytest.warns(UserWarning, match="damaged"):
        fresh.prepare_data()
    fresh.setup()
    assert len(fresh.split("train")) == 40


def test_parallel_text_files(tmp_path: Path):
    for stem, n in (("train", 30), ("val", 5)):
        (tmp_path / f"{stem}.en").write_text("\n".join(f"hello {i}" for i in range(n)) + "\n")
        (tmp_path / f"{stem}.de").write_text("\n".join(f"hallo {i}" for i in range(n)) + "\n")
    source = Source(
        kind="local",
        name=str(tmp_path),
        format="parallel",
        splits={"train": "train", "validation": "val"},
    )
    dm = TranslationDataModule(source, TokenizerSpec(vocab_size=280), cache_dir=str(tmp_path / "c"))
    assert dm.raw["validation"][4] == {"en": "hello 4", "de": "hallo 4"}
    (tmp_path / "val.de").write_text("only one line\n")
    with pytest.raises(DataError, match="line count"):
        _ = TranslationDataModule(source, TokenizerSpec(), cache_dir=str(tmp_path / "d")).raw


def test_bad_inputs_name_file_line_column(tmp_path: Path):
    spec = TokenizerSpec(vocab_size=280)
    cache = str(tmp_path / "cache")
    missing = TranslationDataModule(
        Source(kind="local", name=str(tmp_path / "nope")), spec, cache_dir=cache
    )
    with pytest.raises(DataError, match="does not exist"):
        _ = missing.raw
    write_jsonl(tmp_path / "train.jsonl", [{"english": "a", "de": "b"}])
    write_jsonl(tmp_path / "validation.jsonl", [{"english": "a", "de": "b"}])
    wrong_columns = TranslationDataModule(
        Source(kind="local", name=str(tmp_path)), spec, cache_dir=cache
    )
    with pytest.raises(DataError, match=r"lacks column\(s\) \['en'\]"):
        _ = wrong_columns.raw
    renamed = TranslationDataModule(
        Source(kind="local", name=str(tmp_path), columns={"english": "en"}), spec, cache_dir=cache
    )
    assert renamed.raw["train"][0]["en"] == "a"
    text_dir = tmp_path / "text"
    text_dir.mkdir()
    (text_dir / "train.txt").write_bytes(b"good line\nbad \xff\xfe line\n")
    bad_bytes = CausalLMDataModule(
        Source(kind="local", name=str(text_dir / "train.txt")), spec, cache_dir=cache
    )
    with pytest.raises(DataError, match=r"train.txt, line 2: not valid UTF-8"):
        _ = bad_bytes.raw
    (text_dir / "train.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        _ = bad_bytes.raw
    assert not list(Path(cache).rglob("*.arrow"))  # nothing half-written


def test_classification_labels_and_pairs(tmp_path: Path):
    rows = [{"sentence": s, "other": s[::-1], "label": i % 2} for i, s in enumerate(SENTENCES * 4)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:6])
    dm = ClassificationDataModule(
        Source(kind="local", name=str(tmp_path)),
        TokenizerSpec(kind="wordpiece", vocab_size=200, min_frequency=1),
        text_column="sentence",
        pair_column="other",
        batch_size=4,
        max_length=12,
        cache_dir=str(tmp_path / "cache"),
    )
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[1] <= 12 and batch["labels"].tolist() == [0, 1, 0, 1]
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    types = batch["token_type_ids"][0][batch["attention_mask"][0].bool()]
    assert first[0] == dm.codec.bos_id and (first == dm.codec.eos_id).sum() == 2
    assert types[0] == 0 and types[-1] == 1
    rows[3]["label"] = 5
    write_jsonl(tmp_path / "train.jsonl", rows)
    bad = ClassificationDataModule(
        Source(kind="local", name=str(tmp_path)),
        TokenizerSpec(kind="wordpiece", vocab_size=200),
        text_column="sentence",
        cache_dir=str(tmp_path / "cache2"),
    )
    with pytest.raises(DataError, match=r"split 'train', row 3: label 5 is outside"):
        bad.prepare_data()


def test_causal_lm_windows_single_document_split(tmp_path: Path):
    text = "".join(SENTENCES) * 20
    (tmp_path / "input.txt").write_text(text)
    source = Source(
        kind="local",
        name=str(tmp_path / "input.txt"),
        sample_by="document",
        validation_fraction=0.1,
    )
    dm = CausalLMDataModule(
        source,
        TokenizerSpec(kind="char"),
        max_length=16,
        batch_size=4,
        cache_dir=str(tmp_path / "c"),
    )
    assert (
        dm.raw["train"][0]["text"] + dm.raw["validation"][0]["text"] == text
    )  # first 90% / last 10%
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 16)
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])  # labels shifted by one
    decoded = dm.codec.decode_batch(batch["input_ids"][:1].tolist())[0]
    assert decoded in text


def test_masked_lm_collator_statistics():
    torch.manual_seed(0)
    collate = MaskedLMCollator(toy_codec(1000))
    rows = [{"input_ids": [1, *range(10, 1010), 2]} for _ in range(20)]
    batch = collate(rows)
    chosen = batch["labels"] != -100
    assert abs(chosen.float().mean().item() - 0.15) < 0.01
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # [CLS] and [SEP] never chosen
    original = torch.tensor(rows[0]["input_ids"]).expand(20, -1)
    masked = (batch["input_ids"] == 3) & chosen
    kept = (batch["input_ids"] == original) & chosen
    assert abs(masked.sum() / chosen.sum() - 0.8) < 0.03
    assert abs(kept.sum() / chosen.sum() - 0.1 - 0.001) < 0.03  # 10% kept (+ rare random hits)
    assert torch.equal(batch["labels"][chosen], original[chosen])


def test_translation_collator_padding():
    batch = Seq2SeqCollator(toy_codec(10, "encoder-decoder"))(
        [{"source_ids": [5, 6, 7], "target_ids": [8]}, {"source_ids": [5], "target_ids": [8, 9]}]
    )
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[1, 8, 0], [1, 8, 9]]
    assert batch["labels"].tolist() == [[8, 2, -100], [8, 9, 2]]


def test_token_budget_batches_shard_evenly():
    lengths = [(i * 37) % 50 + 1 for i in range(500)]
    shards = [
        list(TokenBudgetBatchSampler(lengths, 256, shuffle=True, seed=1, rank=r, world_size=2))
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1])  # equal batch counts: no DDP hang
    for batch in shards[0] + shards[1]:
        assert max(lengths[i] for i in batch) * len(batch) <= 256
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen))
    evaluation = [
        list(TokenBudgetBatchSampler(lengths, 256, shuffle=False, rank=r, world_size=2, even=False))
        for r in range(2)
    ]
    assert sorted(i for shard in evaluation for b in shard for i in b) == list(range(500))
    sampler = TokenBudgetBatchSampler(lengths, 256, shuffle=True, seed=1)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0


def test_sharded_and_window_samplers():
    ranks = [list(ShardedSampler(10, True, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == 3 for r in ranks) and len({i for r in ranks for i in r}) == 9
    windows = WindowSampler(n_tokens=100, block=10, shuffle=False)
    assert list(windows) == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    shuffled = WindowSampler(n_tokens=100, block=10, shuffle=True, seed=0)
    starts = list(shuffled)
    assert len(starts) == 8 and max(starts) + 10 + 1 <= 100
    assert len({s % 10 for s in starts}) == 1  # one shift per epoch


@pytest.mark.slow
def test_builtin_pydocs_for_masked_lm(tmp_path: Path):
    dm = MaskedLMDataModule(
        Source(kind="builtin", name="pydocs"),
        TokenizerSpec(kind="wordpiece", vocab_size=2000),
        max_length=64,
        batch_size=8,
        cache_dir=str(tmp_path),
    )
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64
    assert len(dm.raw["train"]) > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = MaskedLMDataModule(
            Source(kind="builtin", name="pydocs"),
            TokenizerSpec(kind="wordpiece", vocab_size=2000),
            max_length=64,
            cache_dir=str(tmp_path),
        )
        assert again.cache_folder == dm.cache_folder
