"""What the terminal shows during a run: a progress bar that counts optimizer steps when the run
is bounded by steps (`800/800`, not `Epoch 13/-2`), and the model summary table without the
FLOPs column Lightning fills only when a model sets an example input (it read 0)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info


class StepProgressBar(TQDMProgressBar):
    """TQDM's bar over `trainer.max_steps` optimizer steps for a step-bounded run; per epoch
    otherwise (as Lightning's). Metrics only, no `v_num`. Its bars (training, validation and
    test) redraw at most every `min_seconds` (and every `refresh_rate` steps) and at their last
    step: reading the metrics and drawing a bar cost more than a small model's step or
    validation batch if done at every one."""

    def __init__(self, refresh_rate: int = 1, min_seconds: float = 0.5) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.min_seconds = min_seconds
        self._drawn = 0.0

    def step_bounded(self, trainer: L.Trainer) -> bool:
        return trainer.max_steps > 0

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.step_bounded(trainer):
            return super().on_train_epoch_start(trainer, *args)
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:  # the first epoch: one bar for the whole run
            bar.reset(total=trainer.max_steps)
            bar.initial = 0
            bar.set_description("step")
            bar.n = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.step_bounded(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step, bar = trainer.global_step, self.train_progress_bar
        if bar is None or step == bar.n or not self._should_update(step, bar.total):
            return
        if self._due(step, trainer.max_steps):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        bar = self.val_progress_bar
        if bar is not None and self._due(batch_idx + 1, bar.total):
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        bar = self.test_progress_bar
        if bar is not None and self._due(batch_idx + 1, bar.total):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def _due(self, n: int, last: float | None) -> bool:
        """Whether a bar at `n` of `last` redraws now (and the clock restarts)."""
        now = time.monotonic()
        if now - self._drawn < self.min_seconds and n != last:
            return False
        self._drawn = now
        return True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.step_bounded(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class TableModelSummary(ModelSummary):
    """Name, type, parameters and mode of the model's top-level parts."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        **kwargs: Any,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        widths = [max(len(name), *(len(str(v)) for v in values)) for name, values in columns]
        rows = [
            [name for name, _ in columns],
            *zip(*(values for _, values in columns), strict=True),
        ]
        lines = [
            " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(
            f"{trainable_parameters:,} trainable parameters of {total_parameters:,} "
            f"({model_size:,.1f} MB)"
        )
        rank_zero_info("\n" + "\n".join(lines))
