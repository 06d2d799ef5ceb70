"""The token store of the language-model data modules: shards on disk, parallel preparation,
damage detection, deterministic sampling across devices and resumes, streaming."""

import json
import os
import pickle
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import BatchSampler

from datamodules import CausalLMDataModule, DataError, MaskedLMDataModule, Source, TokenizerSpec
from datamodules.samplers import RandomWindowSampler, ResumableBatches, WindowSampler
from datamodules.streaming import STATE_KEY, StreamedWindows
from datamodules.token_store import (
    HEADER_BYTES,
    SplitWriter,
    open_store,
    shard_name,
    token_dtype,
    write_manifest,
)
from tests.cli_helpers import WORDS, fit_once, metric_by_step, run_cli, run_cli_process
from tests.recording import RECORD_DIR, read_records
from tests.test_training import lm_config, only_run


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) for _ in range(n)]


def jsonl_folder(folder: Path, n_train: int = 400, n_validation: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("validation", n_validation, 1)):
        rows = "".join(json.dumps({"text": t}) + "\n" for t in documents(n, seed))
        (folder / f"{split}.jsonl").write_text(rows)
    return folder


def causal(tmp: Path, **kwargs) -> CausalLMDataModule:
    settings = {"max_length": 16, "batch_size": 4, "cache_dir": str(tmp / "cache"), **kwargs}
    source = Source(kind="local", name=str(jsonl_folder(tmp / "data")))
    return CausalLMDataModule(source, TokenizerSpec(kind="char"), **settings)


# --- the store -------------------------------------------------------------------------------
def test_shards_read_as_one_array_with_rows(tmp_path: Path):
    rows = [np.arange(start, start + n) for start, n in ((0, 7), (7, 1), (8, 12), (20, 5))]
    writer = SplitWriter(tmp_path / "train", {"ids": np.dtype(np.uint16)}, shard_tokens=6)
    for pair in (rows[:2], rows[2:]):
        writer.add({"ids": np.concatenate(pair)}, np.array([len(r) for r in pair]))
    entry = writer.close()
    assert entry["shards"] == [6, 6, 6, 6, 1] and entry["rows"] == 4 and entry["tokens"] == 25
    write_manifest(tmp_path, {"train": entry})
    split = open_store(tmp_path, ["train"])["train"]
    ids = split.columns["ids"]
    assert ids.dtype == np.uint16 and len(ids) == 25
    for start, stop in ((0, 25), (5, 7), (6, 12), (3, 20), (24, 25), (10, 10)):
        assert ids[start:stop].tolist() == list(range(start, stop))
    assert [split.row(i)["ids"].tolist() for i in range(4)] == [r.tolist() for r in rows]
    assert isinstance(ids[0:3], np.memmap)  # within a shard: a view of the map, no copy
    copy = pickle.loads(pickle.dumps(ids))  # a spawned loader worker gets paths, maps again
    assert copy._maps is None and copy[4:9].tolist() == [4, 5, 6, 7, 8]
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_store_holds_todays_token_stream_whatever_the_process_count(tmp_path: Path):
    one = causal(tmp_path, num_proc=1, shard_tokens=1000)
    two = causal(tmp_path, num_proc=2, cache_dir=str(tmp_path / "other"))
    one.setup(), two.setup()
    texts = one.raw["train"]["text"]
    expected = [t for ids in one.codec.pieces(texts) for t in [*ids, one.codec.eos_id]]
    assert one.streams["train"][:].tolist() == expected  # each document, then end-of-text
    assert len(one.streams["train"].paths) > 1 and len(two.streams["train"].paths) == 1
    assert two.streams["train"][:].tolist() == expected
    assert one.store("train").n_rows == len(texts)
    assert one.cache_folder == causal(tmp_path, num_proc=2, shard_tokens=7).cache_folder


@pytest.mark.parametrize("damage", ["truncated shard", "shard without header", "no manifest"])
def test_damaged_store_is_rebuilt_with_a_warning(tmp_path: Path, damage: str):
    dm = causal(tmp_path, shard_tokens=500)
    dm.prepare_data()
    expected = dm.setup() or dm.streams["train"][:].tolist()
    shard = dm.cache_folder / "train" / shard_name("ids", 1)
    if damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif damage == "shard without header":
        shard.write_bytes(shard.read_bytes()[HEADER_BYTES:])
    else:
        (dm.cache_folder / "manifest.json").unlink()
    fresh = causal(tmp_path, shard_tokens=500)
    with pytest.warns(UserWarning, match="damaged"):
        fresh.setup()
    assert fresh.streams["train"][:].tolist() == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        causal(tmp_path, shard_tokens=500).setup()  # complete again: no warning


def test_other_ranks_read_and_never_write(tmp_path: Path):
    """Only the preparing rank (local rank 0) writes; another rank that finds no complete
    store stops with a clear error instead of rebuilding what rank 0 may be writing."""
    rank1 = SimpleNamespace(world_size=2, global_rank=1, local_rank=1, accumulate_grad_batches=1)
    reader = causal(tmp_path)
    reader.trainer = rank1
    with pytest.raises(DataError, match="rank 1 finds no complete tokenised data"):
        reader.setup()
    assert not reader.cache_folder.exists()
    causal(tmp_path).prepare_data()
    shard = reader.cache_folder / "train" / shard_name("ids", 0)
    shard.write_bytes(shard.read_bytes()[:-2])
    truncated = shard.stat().st_mtime_ns
    with pytest.raises(DataError, match="bytes, not"):
        reader.setup()
    assert shard.stat().st_mtime_ns == truncated  # left alone: the preparing rank decides
    with pytest.warns(UserWarning, match="damaged"):
        causal(tmp_path).prepare_data()  # rank 0 rebuilds it ...
    reader.setup()  # ... and rank 1 reads it
    assert len(reader.streams["train"]) > 0


def test_masked_lm_rows_are_those_of_the_encoder(tmp_path: Path):
    source = Source(kind="local", name=str(jsonl_folder(tmp_path / "data", n_train=2500)))
    dm = MaskedLMDataModule(
        source,
        TokenizerSpec(kind="wordpiece", vocab_size=120, min_frequency=1),
        max_length=24,
        pack=True,
        whole_word_masking=True,
        cache_dir=str(tmp_path / "cache"),
        num_proc=2,
    )
    dm.setup()
    train = dm.raw["train"]
    expected = {"input_ids": [], "word_starts": []}
    for start in range(0, len(train), 1000):  # rows are packed within batches of 1,000
        for name, rows in dm.encode(train[start : start + 1000]).items():
            expected[name] += rows
    stored = dm.store("train")
    assert stored.n_rows == len(expected["input_ids"])
    for i in range(stored.n_rows):
        row = stored.row(i)
        assert row["input_ids"].tolist() == expected["input_ids"][i]
        assert row["word_starts"].tolist() == expected["word_starts"][i]
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 24


# --- sampling --------------------------------------------------------------------------------
def todays_windows(n_tokens: int, block: int, seed: int, epoch: int) -> list[int]:
    """The training windows of the base commit's WindowSampler on one device."""
    order = list(range((n_tokens - block - 1) // block))
    random.Random(seed + epoch).shuffle(order)
    shift = random.Random(seed - 1 - epoch).randrange(block)
    return [shift + i * block for i in order]


def steps(sampling: str, world_size: int, accumulation: int, batch: int, epoch: int = 0):
    """The windows of each optimizer step, over all ranks, and each rank's window count."""
    per_device = batch // (world_size * accumulation)
    ranks = []
    for rank in range(world_size):
        kind = RandomWindowSampler if sampling == "random" else WindowSampler
        extra = {} if sampling == "random" else {"shuffle": True}
        sampler = kind(5000, 16, seed=3, rank=rank, world_size=world_size, **extra)
        sampler.set_epoch(epoch)
        ranks.append(list(BatchSampler(sampler, per_device, drop_last=True)))
    counts = [len(r) for r in ranks]
    n_steps = counts[0] // accumulation
    windows = [
        sorted(s for r in ranks for b in r[k * accumulation : (k + 1) * accumulation] for s in b)
        for k in range(n_steps)
    ]
    return windows, counts


@pytest.mark.parametrize("sampling", ["shifted", "random"])
def test_every_device_count_sees_the_same_windows_per_step(sampling: str):
    reference, _ = steps(sampling, 1, 1, 24)
    assert len(reference) == (5000 - 17) // 16 // 24
    for world_size, accumulation in ((2, 1), (4, 1), (2, 3), (3, 2)):
        windows, counts = steps(sampling, world_size, accumulation, 24)
        assert len(set(counts)) == 1  # every rank the same number of batches
        assert windows == reference, (world_size, accumulation)
    other_epoch, _ = steps(sampling, 1, 1, 24, epoch=1)
    assert other_epoch != reference
    flat = [s for step in reference for s in step]
    assert all(0 <= s <= 5000 - 17 for s in flat)
    if sampling == "shifted":  # every window once per epoch, on one rank only
        assert len(flat) == len(set(flat)) and len({s % 16 for s in flat}) == 1


def test_shifted_windows_are_todays_on_one_device():
    for epoch in (0, 1, 5):
        sampler = WindowSampler(5000, 16, shuffle=True, seed=7)
        sampler.set_epoch(epoch)
        assert list(sampler) == todays_windows(5000, 16, seed=7, epoch=epoch)


def test_a_resumed_epoch_continues_with_the_next_batch():
    for kind in (RandomWindowSampler, WindowSampler):
        extra = {"shuffle": True} if kind is WindowSampler else {}
        full = list(BatchSampler(kind(3000, 8, seed=1, **extra), 5, drop_last=True))
        resumed = ResumableBatches(
            BatchSampler(kind(3000, 8, seed=1, **extra), 5, drop_last=True), lambda: 17
        )
        assert list(resumed) == full[17:] and len(resumed) == len(full)


# --- runs: DDP, kill and resume ---------------------------------------------------------------
def recording_config(tmp: Path, **trainer) -> Path:
    path = lm_config(tmp, **trainer)
    config = yaml.safe_load(path.read_text())
    config["data"]["class_path"] = "tests.recording.RecordingCausalLM"
    config["data"]["init_args"]["shard_tokens"] = 1000  # windows cross shard files
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_ranks_get_equal_disjoint_batches_and_one_device_the_same_steps(tmp_path: Path):
    config = recording_config(tmp_path)
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), RECORD_DIR: str(tmp_path / "two")}
    ddp = run_cli_process(
        [
            "fit",
            "-c",
            str(config),
            f"--runs_dir={tmp_path / 'runs-two'}",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
        ],
        env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    os.environ[RECORD_DIR] = str(tmp_path / "one")
    try:
        fit_once(tmp_path / "single", config)
    finally:
        del os.environ[RECORD_DIR]
    ranks = [read_records(tmp_path / "two", rank) for rank in (0, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == list(range(6))  # equal batch counts
    for step in range(6):
        assert not set(ranks[0][step]) & set(ranks[1][step])
        assert len(ranks[0][step]) == len(ranks[1][step]) == 4
    seen = [s for r in ranks for starts in r.values() for s in starts]
    assert len(seen) == len(set(seen))  # no window read twice in the epoch
    one = read_records(tmp_path / "one")
    for step in range(6):  # the same windows in every optimizer step as on one device
        assert sorted(one[step]) == sorted(ranks[0][step] + ranks[1][step])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_and_resumed_run_trains_the_same_batches(tmp_path: Path):
    from tests.test_fault_tolerance import kill, start_paused

    config = recording_config(tmp_path, max_steps=8, val_check_interval=2)
    os.environ[RECORD_DIR] = str(tmp_path / "reference")
    try:
        fit_once(tmp_path / "uninterrupted", config)
    finally:
        del os.environ[RECORD_DIR]
    reference = read_records(tmp_path / "reference")
    assert sorted(reference) == list(range(8))
    kill(start_paused(tmp_path, "train", 5, config, **{RECORD_DIR: str(tmp_path / "killed")}))
    killed = read_records(tmp_path / "killed")
    assert {s: killed[s] for s in range(5)} == {s: reference[s] for s in range(5)}
    os.environ[RECORD_DIR] = str(tmp_path / "resumed")
    try:
        run = fit_once(tmp_path, config, "--ckpt_path=last")
    finally:
        del os.environ[RECORD_DIR]
    resumed = read_records(tmp_path / "resumed")
    assert resumed == {s: reference[s] for s in range(4, 8)}  # from the step-4 checkpoint on
    assert (run / "summary.json").is_file()


# --- tsuite prepare --------------------------------------------------------------------------
def test_prepare_writes_the_store_that_fit_reads(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    config = lm_config(tmp_path, max_steps=2, val_check_interval=2)
    run_cli(["prepare", "-c", str(config), "--trainer.devices=8", "--data.init_args.num_proc=1"])
    printed = capsys.readouterr().out
    [store] = (tmp_path / "cache" / "data").iterdir()
    assert str(store) in printed and "tokens (uint16)" in printed
    shard = store / "train" / shard_name("ids", 0)
    stamp = shard.stat().st_mtime_ns
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"])
    assert list((tmp_path / "cache" / "data").iterdir()) == [store]
    assert shard.stat().st_mtime_ns == stamp  # found, not tokenised again
    assert "tokenised" not in capsys.readouterr().err


# --- streaming --------------------------------------------------------------------------------
def streaming_data(tmp: Path, **kwargs) -> CausalLMDataModule:
    jsonl_folder(tmp / "data", n_train=300)
    (tmp / "data" / "validation.jsonl").unlink()  # validation: the first rows of the stream
    source = Source(kind="local", name=str(tmp / "data"), streaming=True, validation_rows=20)
    return CausalLMDataModule(
        source,
        TokenizerSpec(kind="char", max_training_texts=1000),  # the first rows of the stream
        max_length=16,
        batch_size=4,
        cache_dir=str(tmp / "cache"),
        **kwargs,
    )


def test_streamed_windows_cut_the_stream_and_resume_exactly(tmp_path: Path):
    dm = streaming_data(tmp_path)
    dm.setup()
    lines = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    assert dm.raw["validation"]["text"] == texts[:20]  # stored, and left out of training
    encoded = dm.codec.pieces(texts[20:])
    stream = np.array([t for ids in encoded for t in [*ids, dm.codec.eos_id]])
    batches = iter(dm.train_dataloader())
    first = [next(batches) for _ in range(12)]
    for k, batch in enumerate(first):  # consecutive windows of the documents, in order
        starts = (k * 4 + np.arange(4)) * 16
        expected = stream[starts[:, None] + np.arange(17)]
        assert batch["input_ids"].tolist() == expected[:, :-1].tolist()
        assert batch["labels"].tolist() == expected[:, 1:].tolist()
    for batch in first[:7]:
        dm.on_before_batch_transfer(batch, 0)  # trained: the position is recorded
    saved = dm.state_dict()
    resumed = streaming_data(tmp_path)
    resumed.load_state_dict(torch.load(_save(saved, tmp_path), weights_only=True))
    again = iter(resumed.train_dataloader())
    for batch in first[7:]:
        assert torch.equal(next(again)["input_ids"], batch["input_ids"])
    # the stream restarts after its last row: training never runs out
    for _ in range(len(stream) // 64 + 5):
        assert next(batches)["input_ids"].shape == (4, 16)


def _save(state: dict, tmp: Path) -> Path:
    torch.save(state, tmp / "state.pt")
    return tmp / "state.pt"


def test_streamed_readers_in_two_workers_resume_in_order(tmp_path: Path):
    dm = streaming_data(tmp_path, num_workers=2)
    dm.setup()
    loader = dm.train_dataloader()
    full = [b for _, b in zip(range(9), loader, strict=False)]
    for batch in full[:5]:  # worker 0 gave batches 0, 2, 4; worker 1 gave 1, 3
        dm.on_before_batch_transfer(dict(batch), 0)
    resumed = streaming_data(tmp_path, num_workers=2)
    resumed.load_state_dict(dm.state_dict())
    again = [b for _, b in zip(range(4), resumed.train_dataloader(), strict=False)]
    for a, b in zip(again, full[5:], strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert a[STATE_KEY] == b[STATE_KEY]
    assert isinstance(loader.dataset, StreamedWindows)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_streamed_fit_resumes_exactly(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    jsonl_folder(tmp_path / "data", n_train=600)
    config = lm_config(tmp_path, max_steps=8, val_check_interval=4)
    settings = yaml.safe_load(config.read_text())
    settings["data"]["init_args"]["source"] = {
        "kind": "local",
        "name": str(tmp_path / "data"),
        "streaming": True,
    }
    settings["data"]["init_args"]["tokenizer"]["max_training_texts"] = 1000
    config.write_text(yaml.safe_dump(settings))
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'full'}"])
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'cut'}", "--trainer.max_steps=4"])
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'cut'}", "--ckpt_path=last"])
    full, cut = only_run(tmp_path / "full"), only_run(tmp_path / "cut")
    assert metric_by_step(cut, "train/loss") == metric_by_step(full, "train/loss")
    assert sorted(metric_by_step(full, "train/loss")) == list(range(8))
    checkpoint = torch.load(cut / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["CausalLMDataModule"]["stream"]["ranks"][0]["batches"] == 8
