"""Learning-rate schedules as multipliers of the peak rate, counted in optimizer steps."""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["inverse_sqrt", "cosine", "linear", "constant"]


def lr_multiplier(
    step: int, schedule: Schedule, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> float:
    """Linear warm-up to 1 over `warmup_steps`, then:
    inverse_sqrt: sqrt(warmup / step), the paper's schedule (Vaswani et al., eq. 3) scaled
    so the peak equals the configured rate; cosine / linear: decay to `min_ratio` at
    `total_steps`; constant: stay at 1."""
    step = step + 1  # the first optimizer step already uses a non-zero rate
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup_steps, 1) / step)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)
