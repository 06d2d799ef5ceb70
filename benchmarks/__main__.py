"""`just bench`: run the benchmarks, print one ratio table (ours / reference; > 1 means we are
faster) and write it as JSON under benchmarks/results/."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from benchmarks import attention


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    )
    rows = attention.run(device)
    print(f"device: {name}, torch {torch.__version__}, fp32")
    print(f"{'row':<20} {'case':<32} {'ours ms':>9} {'ref ms':>9} {'naive ms':>9} {'ratio':>7}")
    for r in rows:
        print(
            f"{r['row']:<20} {r['case']:<32} {r['ours_ms']:>9.2f} {r['reference_ms']:>9.2f} "
            f"{r['naive_ms']:>9.2f} {r['ratio']:>7.3f}"
        )
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2)
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
