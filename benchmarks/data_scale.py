"""Pretraining data at scale (issue 17): preparation throughput, the memory that setting up the
training data adds to a process, window reads from the token store, and the share of step
time `gpt/pydocs-tiny` waits for data.

    python -m benchmarks.data_scale --sizes 20 200 2000    # corpus sizes in MB of text

Corpora: real text, made locally and never stored in the repository (under --work, default
a folder in the system's temporary directory): the documents of the built-in `pydocs` source
(pydoc topics and standard-library docstrings) and the paragraphs of Tiny Shakespeare
(--shakespeare, default ../shared/data/tinyshakespeare/input.txt; skipped when absent),
shuffled with a fixed seed and written again, shuffled anew each pass, until the training
file holds SIZE MB of text; JSON lines {"text": ...}, plus a validation file of 500 documents.

Every figure comes from a fresh process (`--child`), timed from the moment its data is loaded:
- preparation, MB of text per second: `CausalLMDataModule.prepare_data` with 1 and with 2
  processes (`num_proc`), with 1 process and the `tokenizers` Rust threads on
  (TOKENIZERS_PARALLELISM=true: the alternative to a process pool), nanoGPT's recipe
  (data/openwebtext/prepare.py: `Dataset.map(num_proc=2)` of tiktoken's `encode_ordinary`
  plus the end-of-text token, written into one uint16 np.memmap), and today's path (the base
  commit's `Dataset.map` of the data module's encoder, one process, to Arrow). All sides use
  one vocabulary: a byte-level BPE of 8,192 tokens trained on `pydocs` (or --tokenizer, a
  tokenizer.json); tiktoken gets it as an Encoding with GPT-2's split pattern (tiktoken's own
  `gpt2` ranks are downloaded on first use, which machines without internet cannot do;
  with --tokenizer pointing at GPT-2's tokenizer.json and the ranks cached, it uses `gpt2`).
- memory: the private (anonymous) resident memory, and the file-backed resident memory
  (shared page cache, reclaimable), that building the data module, `setup()` and the first
  training batch add to a process; ours (memory maps of the store) against today's
  (`token_stream`, which concatenated the tokenised Arrow column into one array).
- windows read per second: 1,024-token windows at random starts through `TokenWindows`.
- waiting for data: the share of step time `gpt/pydocs-tiny` spends fetching batches.
Times on a shared machine are only comparable within one run: the sides run in turn, each
--repeats times, and the fastest of each counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY = 8192
WINDOW = 1024
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # tiktoken's
)


# --- corpora -------------------------------------------------------------------------------
def source_documents(shakespeare: Path, cache: Path) -> list[str]:
    from datamodules.builtin import load_builtin

    pydocs = load_builtin("pydocs", cache)
    documents = [t for split in pydocs.values() for t in split["text"]]
    if shakespeare.is_file():
        paragraphs = shakespeare.read_text(encoding="utf-8").split("\n\n")
        documents += [p.strip() for p in paragraphs if p.strip()]
    return documents


def make_corpus(size_mb: int, work: Path, shakespeare: Path) -> Path:
    """A folder with train.jsonl (size_mb MB of text) and validation.jsonl; made once."""
    folder = work / f"corpus-{size_mb}MB"
    if (folder / "meta.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    documents = source_documents(shakespeare, work / "cache")
    rng = random.Random(17)
    target, written = size_mb * 10**6, 0
    with open(folder / "train.jsonl", "w", encoding="utf-8") as train:
        while written < target:
            rng.shuffle(documents)
            for text in documents:
                train.write(json.dumps({"text": text}) + "\n")
                written += len(text.encode())
                if written >= target:
                    break
    rng.shuffle(documents)
    validation = documents[:500]
    with open(folder / "validation.jsonl", "w", encoding="utf-8") as file:
        file.writelines(json.dumps({"text": t}) + "\n" for t in validation)
    text_bytes = written + sum(len(t.encode()) for t in validation)
    (folder / "meta.json").write_text(json.dumps({"text_bytes": text_bytes}))
    return folder


def make_tokenizer(work: Path) -> Path:
    from datamodules import CausalLMDataModule, Source, TokenizerSpec

    path = work / f"bpe-{VOCABULARY}.json"
    if not path.is_file():
        data = CausalLMDataModule(
            Source(kind="builtin", name="pydocs"),
            TokenizerSpec(kind="bpe", vocab_size=VOCABULARY),
            cache_dir=str(work / "cache"),
        )
        data.codec.tokenizer.save(str(path))
    return path


# --- what each child measures ----------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers), user + system."""
    mine, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Any) -> dict[str, float]:
    """Wall and CPU seconds of `work()`."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    work()
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu}


def status_kb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


def ours(corpus: Path, tokenizer: Path, cache: Path, **kwargs: Any) -> Any:
    from datamodules import CausalLMDataModule, Source, TokenizerSpec

    return CausalLMDataModule(
        Source(kind="local", name=str(corpus)),
        TokenizerSpec(path=str(tokenizer)),
        max_length=WINDOW,
        batch_size=8,
        cache_dir=str(cache),
        **kwargs,
    )


def prepare_ours(corpus: Path, tokenizer: Path, cache: Path, num_proc: int) -> dict[str, Any]:
    data = ours(corpus, tokenizer, cache, num_proc=num_proc)
    _ = data.raw, data.data_hash, data.codec  # loading is not preparing
    times = timed(data.prepare_data)
    data.setup()
    return {**times, "tokens": sum(len(s) for s in data.streams.values())}


def old_encode(tokenizer: Any) -> Any:
    """The base commit's CausalLMDataModule.encode."""
    import numpy as np

    from modules.codec import Codec

    codec = Codec(tokenizer, "decoder")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        ids = codec.pieces(batch["text"])
        return {"ids": [np.asarray([*i, codec.eos_id], np.int32) for i in ids]}

    return encode


def load_corpus(corpus: Path) -> Any:
    from datasets import load_dataset

    files = {s: str(corpus / f"{s}.jsonl") for s in ("train", "validation")}
    return load_dataset("json", data_files=files)


def prepare_today(corpus: Path, tokenizer: Path, cache: Path) -> dict[str, Any]:
    from datamodules.tokenization import load_tokenizer

    raw, encoder = load_corpus(corpus), old_encode(load_tokenizer(tokenizer)[0])

    def work() -> None:
        for split, data in raw.items():
            tokenized = data.map(
                encoder, batched=True, remove_columns=data.column_names, load_from_cache_file=False
            )
            tokenized.save_to_disk(str(cache / "today" / split))

    return timed(work)


def tiktoken_encoding(tokenizer: Path) -> Any:
    """tiktoken's `gpt2` for GPT-2's own tokenizer (when its ranks can be had), else a
    tiktoken Encoding of the same byte-level BPE vocabulary."""
    import tiktoken

    spec = json.loads(tokenizer.read_text())
    specials = {t["content"]: t["id"] for t in spec["added_tokens"]}
    if len(spec["model"]["vocab"]) == 50257 and "<|endoftext|>" in specials:
        try:
            return tiktoken.get_encoding("gpt2")
        except Exception:
            pass
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's bytes_to_unicode
    byte_of = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            byte_of[chr(256 + extra)] = b
            extra += 1
    ranks = {
        bytes(byte_of[c] for c in token): rank
        for token, rank in spec["model"]["vocab"].items()
        if token not in specials
    }
    return tiktoken.Encoding(
        "suite-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def prepare_nanogpt(corpus: Path, tokenizer: Path, cache: Path) -> dict[str, Any]:
    """karpathy/nanoGPT data/openwebtext/prepare.py on the same files."""
    import numpy as np

    encoding = tiktoken_encoding(tokenizer)
    specials = json.loads(tokenizer.read_text())["added_tokens"]
    names = {t["content"]: t["id"] for t in specials}
    eot = names.get("<|endoftext|>", names.get("</s>"))
    raw = load_corpus(corpus)
    cache.mkdir(parents=True, exist_ok=True)

    def process(example: dict[str, Any]) -> dict[str, Any]:
        ids = encoding.encode_ordinary(example["text"])
        ids.append(eot)
        return {"ids": ids, "len": len(ids)}

    def work() -> None:
        tokenized = raw.map(
            process, remove_columns=["text"], num_proc=2, load_from_cache_file=False
        )
        for split, dset in tokenized.items():
            length = int(np.sum(dset["len"], dtype=np.uint64))
            out = np.memmap(cache / f"{split}.bin", dtype=np.uint16, mode="w+", shape=(length,))
            shards, index = min(1024, len(dset)), 0
            for shard in range(shards):
                batch = dset.shard(num_shards=shards, index=shard, contiguous=True)
                ids = np.concatenate(batch.with_format("numpy")["ids"])
                out[index : index + len(ids)] = ids
                index += len(ids)
            out.flush()

    return timed(work)


def memory_ours(corpus: Path, tokenizer: Path, cache: Path) -> dict[str, Any]:
    import datamodules  # noqa: F401  (imports are not data)

    before = status_kb()
    data = ours(corpus, tokenizer, cache)
    data.setup()
    next(iter(data.train_dataloader()))
    return {"before": before, "after": status_kb()}


def memory_today(corpus: Path, tokenizer: Path, cache: Path) -> dict[str, Any]:
    """The base commit's setup: load the tokenised Arrow splits, `token_stream` each, and its
    first training batch (a shuffled list of every window start)."""
    import torch
    from datasets import Dataset

    from datamodules.sources import fingerprint

    before = status_kb()
    raw = load_corpus(corpus)
    fingerprint(raw, ["text"])  # the cache key, as ours computes it
    streams = {}
    for split in raw:
        column = Dataset.load_from_disk(str(cache / "today" / split)).data.column("ids")
        streams[split] = column.combine_chunks().flatten().to_numpy()
    order = list(range((len(streams["train"]) - WINDOW - 1) // WINDOW))
    random.Random(0).shuffle(order)
    start = order[0] * WINDOW
    torch.from_numpy(streams["train"][start : start + WINDOW + 1].astype("int64"))
    return {"before": before, "after": status_kb()}


def windows_per_second(corpus: Path, tokenizer: Path, cache: Path) -> dict[str, Any]:
    import numpy as np

    from datamodules.language_modeling import TokenWindows

    data = ours(corpus, tokenizer, cache)
    data.setup()
    stream = data.streams["train"]
    windows = TokenWindows(stream, WINDOW)
    starts = np.random.default_rng(0).integers(0, len(stream) - WINDOW - 1, 20000).tolist()
    begin = time.perf_counter()
    for start in starts:
        windows[start]
    return {"per_second": len(starts) / (time.perf_counter() - begin)}


CHILDREN = {
    "prepare_ours": prepare_ours,
    "prepare_today": prepare_today,
    "prepare_nanogpt": prepare_nanogpt,
    "memory_ours": memory_ours,
    "memory_today": memory_today,
    "windows": windows_per_second,
}


def child(task: str, env: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON result."""
    arguments = json.dumps({"task": task, **{k: str(v) for k, v in kwargs.items()}})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_scale", "--child", arguments],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(arguments: str) -> None:
    settings = json.loads(arguments)
    task = CHILDREN[settings.pop("task")]
    paths = {k: Path(v) for k, v in settings.items() if k != "num_proc"}
    extra = {"num_proc": int(settings["num_proc"])} if "num_proc" in settings else {}
    print(json.dumps(task(**paths, **extra)))


# --- the table -------------------------------------------------------------------------------
def added_mb(result: dict[str, Any], field: str) -> float:
    return (result["after"][field] - result["before"][field]) / 1024


def preparations(common: dict[str, Path], run: Path) -> dict[str, Any]:
    """Each side once, in turn, into fresh folders under `run`."""
    threads = {"TOKENIZERS_PARALLELISM": "true"}
    return {
        "ours, 1 process": lambda: child("prepare_ours", **common, cache=run / "p1", num_proc=1),
        "ours, 2 processes": lambda: child("prepare_ours", **common, cache=run / "p2", num_proc=2),
        "ours, 1 process + Rust threads": lambda: child(
            "prepare_ours", threads, **common, cache=run / "threads", num_proc=1
        ),
        "nanoGPT (map num_proc=2, tiktoken)": lambda: child(
            "prepare_nanogpt", **common, cache=(run / "nanogpt").resolve()
        ),
        "today (map, 1 process)": lambda: child("prepare_today", **common, cache=run / "old"),
    }


def measure_size(
    size_mb: int, work: Path, tokenizer: Path, shakespeare: Path, repeats: int
) -> dict[str, Any]:
    corpus = make_corpus(size_mb, work, shakespeare)
    text_mb = json.loads((corpus / "meta.json").read_text())["text_bytes"] / 1e6
    run = work / f"run-{size_mb}MB-{os.getpid()}"
    common = {"corpus": corpus, "tokenizer": tokenizer}
    child("prepare_ours", **common, cache=run / "warm", num_proc=1)  # load_dataset's Arrow once
    prep: dict[str, Any] = {}
    for repeat in range(repeats):  # the sides in turn, so load from others falls on each alike
        if repeat:
            shutil.rmtree(run)
        for name, side in preparations(common, run).items():
            result = side()
            if name not in prep or result["seconds"] < prep[name]["seconds"]:
                prep[name] = result
    memory = {
        "ours": child("memory_ours", **common, cache=run / "p1"),
        "today": child("memory_today", **common, cache=run / "old"),
    }
    return {
        "size_mb": size_mb,
        "text_mb": text_mb,
        "tokens": prep["ours, 1 process"]["tokens"],
        "prepare_mb_per_s": {name: text_mb / r["seconds"] for name, r in prep.items()},
        "prepare_cpu_s_per_mb": {name: r["cpu_seconds"] / text_mb for name, r in prep.items()},
        "private_mb_added": {k: added_mb(v, "RssAnon") for k, v in memory.items()},
        "file_mb_added": {k: added_mb(v, "RssFile") for k, v in memory.items()},
        "windows_per_s": child("windows", **common, cache=run / "p1")["per_second"],
    }


def wait_share(steps: int) -> dict[str, Any]:
    from benchmarks.data_pipeline import CAUSAL, FetchClock
    from benchmarks.experiment import build, lightning_notes_off

    model, data, trainer = build(
        CAUSAL,
        [
            f"--trainer.max_steps={steps}",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.profiler=benchmarks.data_pipeline.FetchClock",
        ],
    )
    with lightning_notes_off():
        trainer.fit(model, data)
    clock = trainer.profiler
    assert isinstance(clock, FetchClock)
    share, step, counted = clock.share(skip=min(5, steps // 4))
    return {"share": share, "step_ms": step * 1e3, "steps": counted}


def table(results: list[dict[str, Any]], wait: dict[str, Any] | None, header: str) -> str:
    sides = list(results[0]["prepare_mb_per_s"])
    lines = [header, ""]
    head = ["text MB", "tokens", *sides, "private MB ours", "today", "page cache MB ours"]
    head += ["today", "windows/s"]
    rows = []
    for r in results:
        speeds = r["prepare_mb_per_s"]
        cells = [f"{r['text_mb']:,.0f}", f"{r['tokens']:,}"]
        cells += [f"{speeds[s]:.2f}" for s in sides]
        cells += [f"{r['private_mb_added'][k]:,.1f}" for k in ("ours", "today")]
        cells += [f"{r['file_mb_added'][k]:,.1f}" for k in ("ours", "today")]
        cells.append(f"{r['windows_per_s']:,.0f}")
        rows.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines.append(" | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    lines.append(
        "preparation columns: MB of text per second; memory: what building the data module,"
    )
    lines.append("setup() and the first training batch add (private = anonymous resident memory;")
    lines.append("page cache = file-backed resident pages, shared between processes)")
    lines.append("CPU seconds per MB (user + system of the process tree; unlike wall time it does")
    lines.append(
        "not depend on the load: N processes of equal CPU cost run N times as fast on N idle"
    )
    lines.append("cores)")
    for r in results:
        speeds, cpu = r["prepare_mb_per_s"], r["prepare_cpu_s_per_mb"]
        lines.append(
            f"{r['size_mb']} MB: 2 processes / 1 = {speeds[sides[1]] / speeds[sides[0]]:.2f}x, "
            f"1 + Rust threads / 1 = {speeds[sides[2]] / speeds[sides[0]]:.2f}x, "
            f"ours 2 processes / nanoGPT = {speeds[sides[1]] / speeds[sides[3]]:.2f}x; CPU s/MB: "
            + ", ".join(f"{name} {cpu[name]:.2f}" for name in sides)
        )
    if wait is not None:
        lines.append(
            f"gpt/pydocs-tiny waits for data {wait['share']:.2%} of step time "
            f"({wait['steps']} steps of {wait['step_ms']:.0f} ms; target < 2%)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20], help="corpus sizes, MB")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tsuite-scale")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer.json")
    parser.add_argument(
        "--shakespeare", type=Path, default=ROOT.parent / "shared/data/tinyshakespeare/input.txt"
    )
    parser.add_argument("--repeats", type=int, default=1, help="preparations of each side")
    parser.add_argument("--wait-steps", type=int, default=40, help="0: skip the waiting row")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import datasets

    datasets.disable_progress_bars()
    if args.child:
        run_child(args.child)
        return
    os.environ.setdefault("HF_DATASETS_CACHE", str(args.work / "hf"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = (
        f"data_scale: {os.cpu_count()} cores, load average {load} at the start "
        "(figures measured under this load; compare sides within a row)"
    )
    print(header, flush=True)
    tokenizer = (args.tokenizer or make_tokenizer(args.work)).resolve()
    results = []
    for size in args.sizes:
        results.append(measure_size(size, args.work, tokenizer, args.shakespeare, args.repeats))
        print(f"  {size} MB done", flush=True)
    wait = wait_share(args.wait_steps) if args.wait_steps else None
    text = table(results, wait, header)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"data-scale-{stamp}.json").write_text(
        json.dumps({"header": header, "sizes": results, "wait": wait}, indent=1)
    )


if __name__ == "__main__":
    main()
