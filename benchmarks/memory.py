"""Row 6: peak memory of the row 2 training step and the row 4 generation, ours against the
reference. Each side runs in a fresh process so neither sees the other's allocations: both
build the same pair of models (our model comes from the reference's weights), drop the other
side's, run the work once to warm up (the optimizer state exists from then on), and measure
the peak of a second run (one training step, or one generation) above the memory in use
just before it (on CPU the
resident set, its high-water mark reset through /proc/self/clear_refs; on CUDA
`max_memory_allocated`). Ratio = reference / ours (> 1: ours needs less).

    python -m benchmarks.memory train:decoder:10M ours cpu   # one side, prints JSON
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.decoding import hf_generate, prompts
from benchmarks.references import SIZES, make_batch, pair
from benchmarks.training import step_function
from modules.generation import generate

CASES = [
    "train:decoder:10M",
    "train:encoder:10M",
    "train:encoder-decoder:10M",
    "train:decoder:40M",
    "train:encoder:40M",
    "train:encoder-decoder:40M",
    "generate:decoder:10M",
]
QUICK_CASES = ["train:decoder:tiny", "generate:decoder:tiny"]
BATCH, LENGTH = 8, 128  # row 2
NEW_TOKENS, PROMPT = 256, 32  # row 4


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the resident-set high-water mark (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_freed_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_side(case: str, side: str, device: str) -> dict[str, Any]:
    kind, family, size_name = case.split(":")
    size = SIZES[size_name]
    after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ours, reference = pair(family, size)  # type: ignore[arg-type]
    model = (ours if side == "ours" else reference).to(device)
    del ours, reference
    quick = size_name == "tiny"
    if kind == "train":
        model.train()
        batch_size, length = (2, 32) if quick else (BATCH, LENGTH)
        batch = {
            k: v.to(device)
            for k, v in make_batch(family, size, batch_size, length).items()  # type: ignore[arg-type]
        }
        step = step_function(model, family, batch, reference=side == "reference")  # type: ignore[arg-type]

        def work() -> None:
            step()

    else:
        model.eval()
        new_tokens, length = (16, 8) if quick else (NEW_TOKENS, PROMPT)
        prompt = prompts(size, 1, length).to(device)

        def work() -> None:
            if side == "ours":
                generate(model, prompt.tolist(), new_tokens)
            else:
                hf_generate(model, prompt, new_tokens)

    work()  # warm up: kernels loaded, optimizer state made; then measure a second run
    _release_freed_memory()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        work()
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - baseline) / 2**20, "how": "cuda"}
    baseline_kb = _status_kb("VmRSS")
    if baseline_kb is not None and _reset_peak():
        work()
        peak_kb = _status_kb("VmHWM") or 0
        return {"peak_mb": (peak_kb - baseline_kb) / 1024, "how": "VmHWM - VmRSS before"}
    work()  # no resettable high-water mark: ru_maxrss against the one after imports
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (peak - after_imports) / 1024, "how": "ru_maxrss - after imports"}


def start_sides(case: str, device: str, threads: int | None = None) -> dict[str, subprocess.Popen]:
    """Start both sides of a case, each in a fresh process (at the same time: only their
    memory is measured, and each process has its own) with `threads` CPU threads (default:
    this process's)."""
    command = [sys.executable, "-m", "benchmarks.memory", case]
    threads = str(threads or torch.get_num_threads())
    # glibc keeps freed blocks for reuse, so the resident set would depend on the order of
    # earlier allocations (peaks varied by 10% between runs); returning every block of 64 KiB
    # or more to the system when freed makes it follow the tensors alive, run after run
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    return {
        side: subprocess.Popen(
            [*command, side, device, threads],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for side in ("ours", "reference")
    }


def collect_sides(case: str, processes: dict[str, subprocess.Popen]) -> dict[str, dict[str, Any]]:
    results = {}
    for side, process in processes.items():
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory {case} {side} failed:\n{err[-2000:]}")
        results[side] = json.loads(out.strip().splitlines()[-1])
    return results


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    for case in QUICK_CASES if quick else CASES:
        found = collect_sides(case, start_sides(case, device))
        ours, reference = found["ours"], found["reference"]
        kind, family, size = case.split(":")
        what = (
            f"train step {family} {size}"
            if kind == "train"
            else f"greedy generate +{16 if size == 'tiny' else NEW_TOKENS} {size}"
        )
        ratio = reference["peak_mb"] / max(ours["peak_mb"], 1e-9)
        rows.append(
            {
                "row": "memory",
                "case": f"{what}, peak above before",
                "reference_name": "HF (same as rows 2 and 4)",
                "ours": ours["peak_mb"],
                "reference": reference["peak_mb"],
                "unit": "MB",
                "ratio": ratio,
                "target": "ours <= reference",
                "passed": ours["peak_mb"] <= reference["peak_mb"],
                "how": ours["how"],
            }
        )
    return rows


if __name__ == "__main__":
    case, side, device, *threads = sys.argv[1:]
    if threads:
        torch.set_num_threads(int(threads[0]))
    print(json.dumps(measure_side(case, side, device)))
