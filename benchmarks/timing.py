"""Timing helpers: warm up, then the median of repeated runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def _timed(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds of each call of each function, calling them in turn (A B A B ...), so that
    load from other processes on the machine falls on every side alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    return times


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each function, timed in turn (see `interleaved_times`)."""
    times = interleaved_times(fns, repeats, warmup)
    return {name: statistics.median(t) for name, t in times.items()}


def paired_ratio(reference: list[float], ours: list[float]) -> float:
    """Median of reference / ours over calls made back to back: a load spike slows both
    calls of a pair, so the ratio is steadier than the ratio of the two medians."""
    return statistics.median(r / o for r, o in zip(reference, ours, strict=True))
