"""Row 2: a training step (forward, backward, AdamW) in tokens/s, our three models against
the Hugging Face references with SDPA attention, same weights (through `from_hf`), same
batch. The losses are checked to match before and after one optimizer step first."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
from torch import nn

from benchmarks.references import (
    FAMILIES,
    REFERENCE_NAMES,
    SIZES,
    Family,
    Size,
    loss,
    make_batch,
    pair,
    parameters,
    positions,
)
from benchmarks.timing import interleaved_times, paired_ratio

BATCH, LENGTH = 8, 128
TOLERANCE = 1e-4  # relative difference of the two losses


def step_function(model: nn.Module, family: Family, batch: dict, reference: bool) -> Any:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False)

    def step() -> float:
        value = loss(model, family, batch, reference)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return value.item()

    return step


def check_losses(ours_step: Any, reference_step: Any, what: str) -> None:
    """Both sides see the same weights and batch: the losses of two steps must agree."""
    for n in range(2):
        a, b = ours_step(), reference_step()
        if not math.isfinite(a) or abs(a - b) > TOLERANCE * abs(b):
            raise AssertionError(f"{what}: losses differ at step {n}: ours {a:.6f}, HF {b:.6f}")


def measure(
    family: Family, size: Size, batch_size: int, length: int, repeats: int, device: str
) -> dict[str, Any]:
    ours, reference = pair(family, size)
    ours.to(device).train()
    reference.to(device).train()
    batch = {k: v.to(device) for k, v in make_batch(family, size, batch_size, length).items()}
    ours_step = step_function(ours, family, batch, reference=False)
    reference_step = step_function(reference, family, batch, reference=True)
    check_losses(ours_step, reference_step, f"{family} {size.name}")
    times = interleaved_times(
        {"ours": ours_step, "reference": reference_step}, repeats=repeats, warmup=1
    )
    seconds = {name: statistics.median(t) for name, t in times.items()}
    ratio = paired_ratio(times["reference"], times["ours"])
    tokens = positions(batch)
    return {
        "row": "train step",
        "case": f"{family} {parameters(ours) / 1e6:.1f}M b{batch_size}x{length}",
        "reference_name": REFERENCE_NAMES[family],
        "ours": tokens / seconds["ours"],
        "reference": tokens / seconds["reference"],
        "unit": "tok/s",
        "ratio": ratio,
        "target": ">= 1.0",
        "passed": ratio >= 1.0,
        "ours_ms": seconds["ours"] * 1e3,
        "reference_ms": seconds["reference"] * 1e3,
    }


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    if quick:
        return [measure(f, SIZES["tiny"], 2, 32, 2, device) for f in FAMILIES]
    return [
        measure(family, SIZES[size], BATCH, LENGTH, 7 if size == "10M" else 5, device)
        for size in ("10M", "40M")
        for family in FAMILIES
    ]
