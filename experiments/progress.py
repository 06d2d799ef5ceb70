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
    otherwise (as Lightning's). Metrics only, no `v_num`. Its bars (training, validation, test,
    predict) redraw at most every `min_seconds` (and every `refresh_rate` steps) and at their
    last step: reading the metrics and drawing a bar cost more than a small model's step or
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
        if bar is not None and step != bar.n and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def _should_update(self, current: int, total: int) -> bool:
        """Lightning's rule (every `refresh_rate` batches, and the last) on a clock: at most
        every `min_seconds` but the last. Every bar's batch hook (training, validation, test,
        predict) asks it once, right before it draws, so a yes restarts the clock."""
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if now - self._drawn < self.min_seconds and current != total:
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
