"""The terminal's progress bars redraw on a clock, not at every batch: drawing costs more
than a small model's step or validation batch."""

from __future__ import annotations

import io
from typing import Any

from tqdm import tqdm

from experiments.progress import StepProgressBar


class CountingBar(tqdm):
    def __init__(self, total: int) -> None:
        self.draws: list[int] = []
        super().__init__(total=total, file=io.StringIO())
        self.draws.clear()  # tqdm draws the empty bar when it opens

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        self.draws.append(self.n)
        super().refresh(*args, **kwargs)


def test_validation_and_test_bars_redraw_at_most_every_min_seconds_and_at_their_end():
    progress = StepProgressBar(min_seconds=3600)
    progress._val_progress_bar, progress._test_progress_bar = CountingBar(10), CountingBar(7)
    progress._drawn = float("-inf")  # the first batch draws
    for bar, hook in (
        (progress.val_progress_bar, progress.on_validation_batch_end),
        (progress.test_progress_bar, progress.on_test_batch_end),
    ):
        for i in range(bar.total):
            hook(None, None, None, None, i)  # type: ignore[arg-type]
        assert bar.draws[-1] == bar.total and bar.n == bar.total
    assert progress.val_progress_bar.draws == [1, 10]  # the first, then only the last
    assert progress.test_progress_bar.draws == [7]  # within the hour of the last draw


def test_bars_redraw_at_every_batch_when_min_seconds_is_zero():
    progress = StepProgressBar(min_seconds=0)
    progress._val_progress_bar = CountingBar(5)
    for i in range(5):
        progress.on_validation_batch_end(None, None, None, None, i)  # type: ignore[arg-type]
    assert progress.val_progress_bar.draws == [1, 2, 3, 4, 5]
