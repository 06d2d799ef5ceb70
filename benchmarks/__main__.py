"""`just bench`: run the benchmarks side by side with their references, print one table of
ratios (> 1: ours is better: reference time / ours, our throughput / the reference's, the
reference's memory / ours) with the absolute figures beside them, and write it as JSON under
benchmarks/results/.

    just bench                  # every row (about 10 minutes on 2 CPU cores)
    just bench --rows 2,4       # some rows
    just bench --quick          # every row in a tiny form (a smoke test, figures meaningless)
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmarks.experiment import lightning_notes_off

ROWS = {  # imported when selected (Lightning and transformers take seconds to import)
    1: "attention",  # attention core fwd+bwd vs a direct SDPA call
    2: "training",  # training step tokens/s vs HF GPT-2, BERT, Marian
    3: "lightning_overhead",  # Trainer.fit vs a plain loop
    4: "decoding",  # greedy generation on the KV cache vs HF generate; cached vs uncached
    5: "data_pipeline",  # tokenisation, packing, waiting for data
    6: "memory",  # peak memory of rows 2 and 4
}
CPU_ONLY = {3, 5}  # they run the default experiment, a CPU config


def parse_rows(text: str) -> list[int]:
    try:
        rows = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        rows = []
    if not rows or any(r not in ROWS for r in rows):
        raise argparse.ArgumentTypeError(
            f"--rows takes row numbers from {sorted(ROWS)} separated by commas, got {text!r}"
        )
    return rows


def run_rows(rows: list[int], device: str, quick: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for number in rows:
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{ROWS[number]}")
            found = module.run("cpu" if number in CPU_ONLY else device, quick=quick)
        except Exception as error:  # one failing row must not hide the others
            traceback.print_exc()
            found = [{"row": ROWS[number], "case": "FAILED", "error": repr(error)}]
        seconds = time.perf_counter() - start
        for result in found:
            result["number"] = number
            result["row_seconds"] = seconds
        results.extend(found)
        print(
            f"[bench] row {number} ({ROWS[number]}): {seconds:.0f} s", file=sys.stderr, flush=True
        )
    return results


def figure(value: Any, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit == "tok/s":
        return f"{value:,.0f} {unit}"
    if unit == "MB":
        return f"{value:,.1f} {unit}"
    if unit.startswith("%"):
        return f"{value:.2f}{unit}"
    return f"{value:,.2f} {unit}"


def table(results: list[dict[str, Any]], quick: bool = False) -> str:
    """The printed table; `quick` leaves the target column's verdicts out (tiny sizes)."""
    lines = [
        f"{'row':<20} {'case':<56} {'ours':>15} {'reference':>15} {'ratio':>7}  "
        f"{'target':<18} {'ok':<4} reference"
    ]
    for r in results:
        name = f"{r['number']} {r['row']}"
        if "error" in r:
            lines.append(f"{name:<20} FAILED: {r['error']}")
            continue
        unit = r.get("unit", "")
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.3f}"
        ok = "" if quick else {True: "yes", False: "NO", None: ""}[r.get("passed")]
        lines.append(
            f"{name:<20} {r['case']:<56} {figure(r.get('ours'), unit):>15} "
            f"{figure(r.get('reference'), unit):>15} {ratio:>7}  {r.get('target', ''):<18} "
            f"{ok:<4} {r.get('reference_name', '')}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rows", type=parse_rows, default=sorted(ROWS), help="e.g. 2,4 (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that rows run")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available"
    )
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: all cores; --quick: 1, tiny ops only lose "
        "from threads on a busy machine)",
    )
    args = parser.parse_args(argv)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads or (1 if args.quick else threads_before))
    try:
        with lightning_notes_off():
            return run_and_report(args)
    finally:
        torch.set_num_threads(threads_before)


def run_and_report(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = platform.processor() or platform.machine() or "cpu"
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{cpu} x{torch.get_num_threads()} threads"
    )
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    results = run_rows(args.rows, device, args.quick)
    seconds, load_after = time.perf_counter() - start, os.getloadavg()[0]
    quick = ", quick (sizes too small for the figures to mean anything)" if args.quick else ""
    print(f"device: {name}, torch {torch.__version__}, fp32{quick}")
    print(
        f"load average {load_before:.1f} at the start, {load_after:.1f} at the end "
        f"({os.cpu_count()} cores; other processes make timings noisy)"
    )
    print("ratio > 1: ours is better (reference time / ours, reference memory / ours)")
    print(table(results, args.quick))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    summary = {
        "device": name,
        "torch": torch.__version__,
        "quick": args.quick,
        "seconds": seconds,
        "load_average": [load_before, load_after],
        "rows": results,
    }
    path.write_text(json.dumps(summary, indent=2))
    print(f"written: {path} ({seconds:.0f} s)")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
