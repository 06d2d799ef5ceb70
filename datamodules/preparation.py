"""Tokenising a corpus once with every core: batches of rows read from a `datasets.Dataset`
(memory-mapped Arrow) are encoded by a pool of forked processes, at most a few batches in
flight, and handed back in order, so memory stays flat however large the corpus; a progress
line shows tokens/s and the time left.

A process pool rather than the `tokenizers` Rust threads (TOKENIZERS_PARALLELISM=true with
batched encoding). benchmarks/data_scale.py measured both on 2 cores shared with other jobs,
where wall times could not show any speed-up (the cores were busy), but the CPU cost per MB
of text, which the load does not change, was 0.68 s for one process and 0.70 s for two: the
pool adds 3%, so N idle cores run it about N times as fast. Threads parallelise only the
encoding: reading rows out of Arrow and turning encodings into arrays stay on one Python
thread (about 7% of the time of one process, profiled), which bounds them to about 14x
whatever the core count. Each pool process runs the tokenizer on one thread
(TOKENIZERS_PARALLELISM=false, set before forking), which also keeps forked data-loader
workers safe later.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from datasets import Dataset

# flat columns of a batch of rows and the rows' lengths, as `token_store.SplitWriter.add` takes
Encoded = tuple[dict[str, np.ndarray], np.ndarray]
Encoder = Callable[[dict[str, list]], Encoded]
ROWS_PER_BATCH = 1000  # as `Dataset.map(batched=True)` hands them over


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Progress:
    """One line, rewritten on a terminal (every second) or printed every 30 s in a log."""

    def __init__(self, label: str, total_rows: int) -> None:
        self.label, self.total = label, total_rows
        self.rows = self.tokens = 0
        self.start = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        now = time.monotonic()
        if now - self.shown >= (1 if self.tty else 30):
            self.shown = now
            self._print(self._line(now), end="\r" if self.tty else "\n")

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.tokens / elapsed
        left = elapsed * (self.total - self.rows) / max(self.rows, 1)
        return (
            f"[tsuite] tokenising {self.label}: {self.rows / max(self.total, 1):4.0%} of "
            f"{self.total:,} rows, {self.tokens / 1e6:,.1f}M tokens, {rate / 1e6:.2f}M tokens/s, "
            f"ETA {_duration(left)}"
        )

    def close(self) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.tokens / max(elapsed, 1e-9)
        self._print(
            f"[tsuite] tokenised {self.label}: {self.tokens:,} tokens from {self.rows:,} rows in "
            f"{_duration(elapsed)} ({rate / 1e6:.2f}M tokens/s)"
        )

    def _print(self, text: str, end: str = "\n") -> None:
        print(text.ljust(100) if self.tty else text, end=end, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


_JOB: tuple[Dataset, Encoder] | None = None  # what a pool process encodes (set before fork)


def _encode_range(bounds: tuple[int, int]) -> Encoded:
    assert _JOB is not None
    data, encode = _JOB
    return encode(data[bounds[0] : bounds[1]])


@contextmanager
def _single_threaded_tokenizers() -> Iterator[None]:
    """Set before forking: the children read it (and `tokenizers` then neither warns about the
    fork nor starts threads in them)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def encode_in_parallel(
    data: Dataset,
    encode: Encoder,
    processes: int | None = None,
    label: str = "",
    rows_per_batch: int = ROWS_PER_BATCH,
) -> Iterator[Encoded]:
    """`encode` of every batch of `rows_per_batch` rows of `data`, in row order, computed by
    `processes` forked processes (None: every core; 1, or no `fork` on this platform: in
    this process)."""
    global _JOB
    processes = processes or available_cores()
    bounds = [(s, min(s + rows_per_batch, len(data))) for s in range(0, len(data), rows_per_batch)]
    progress = Progress(label, len(data))
    if processes == 1 or len(bounds) < 2 or "fork" not in mp.get_all_start_methods():
        for start, stop in bounds:
            encoded = encode(data[start:stop])
            progress.update(stop - start, int(encoded[1].sum()))
            yield encoded
        progress.close()
        return
    _JOB = (data, encode)
    try:
        with _single_threaded_tokenizers(), mp.get_context("fork").Pool(processes) as pool:
            pending: deque[tuple[int, Any]] = deque()
            for start, stop in bounds:
                pending.append((stop - start, pool.apply_async(_encode_range, ((start, stop),))))
                if len(pending) >= 2 * processes:  # a few batches in flight: memory stays flat
                    yield _finished(pending, progress)
            while pending:
                yield _finished(pending, progress)
    finally:
        _JOB = None
    progress.close()


def _finished(pending: deque[tuple[int, Any]], progress: Progress) -> Encoded:
    rows, result = pending.popleft()
    encoded = result.get()
    progress.update(rows, int(encoded[1].sum()))
    return encoded
