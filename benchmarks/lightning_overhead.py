"""Row 3: Lightning's overhead per training step. The default experiment's task module and
data module run under `Trainer.fit` and under a plain PyTorch loop that calls the same
`training_step`, gradient normalisation, clipping, AdamW and schedule; rounds alternate
between the two and see the same batches. Ratio = plain / Lightning step time. The module's
`on_before_optimizer_step` also checks the gradient norm for non-finite values under
Lightning, which the plain loop leaves out: its cost counts as overhead here."""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.experiment import DEFAULT, QUICK_DEFAULT, build
from benchmarks.timing import paired_ratio

OVERHEAD = 0.03  # the target: Lightning adds at most 3% per step


class StepClock(Callback):
    """The time each training step starts (after its batch is fetched)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        self.starts.append(time.perf_counter())


def lightning_steps(
    model: L.LightningModule, data: L.LightningDataModule, steps: int, clip: float | None
) -> tuple[list[float], L.Trainer]:
    clock = StepClock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        gradient_clip_val=clip,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[clock],
    )
    trainer.fit(model, data)
    return clock.starts, trainer


def plain_steps(
    model: L.LightningModule,
    data: L.LightningDataModule,
    steps: int,
    clip: float | None,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
) -> list[float]:
    """The loop a user would write around the same module: what Trainer.fit does per step."""
    model.trainer = None  # type: ignore[assignment]
    data.trainer = None
    model.train()
    starts = []
    parameters = list(model.parameters())  # as the module lists them once
    epoch, loader = 0, data.train_dataloader()
    batches = iter(loader)
    for i in range(steps):
        batch = next(batches, None)
        if batch is None:  # the next epoch, as Trainer.fit goes on to it
            epoch += 1
            loader.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]
            batches = iter(loader)
            batch = next(batches)
        starts.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss = model.training_step(batch, i)
        loss.backward()
        # what the module's on_before_optimizer_step does on one device (the hook itself
        # needs a Trainer): gradients divided by the step's targets, clipped, checked
        model.numerics.before_update(parameters, optimizer, lambda t: t, 1, clip)
        optimizer.step()
        schedule.step()
    return starts


def step_seconds(starts: list[float], skip: int) -> float:
    """Mean time from one step's start to the next, after `skip` warm-up steps."""
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)][skip:]
    return sum(gaps) / len(gaps)


def measure(overrides: list[str], steps: int, rounds: int, skip: int) -> dict[str, Any]:
    """`rounds` pairs of runs of `steps` steps, Lightning then plain, each from the first
    batch of the epoch; the ratio is the median over pairs (a load spike hits one pair)."""
    model, data, configured = build(DEFAULT, overrides)
    clip = configured.gradient_clip_val
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        for round_ in range(rounds + 1):  # round 0 warms up both sides
            starts, trainer = lightning_steps(model, data, steps, clip)
            optimizer = trainer.optimizers[0]
            schedule = trainer.lr_scheduler_configs[0].scheduler
            plain = plain_steps(model, data, steps, clip, optimizer, schedule)
            if round_:
                times["lightning"].append(step_seconds(starts, skip))
                times["plain"].append(step_seconds(plain, skip))
    ours, reference = (statistics.median(times[k]) for k in ("lightning", "plain"))
    ratio = paired_ratio(times["plain"], times["lightning"])
    return {
        "row": "lightning",
        "case": f"default experiment, Trainer.fit vs plain loop, {rounds}x{steps} steps",
        "reference_name": "plain PyTorch loop",
        "ours": ours * 1e3,
        "reference": reference * 1e3,
        "unit": "ms/step",
        "ratio": ratio,
        "overhead": 1 / ratio - 1,
        "target": "overhead <= 3%",
        "passed": 1 / ratio - 1 <= OVERHEAD,
    }


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    if quick:
        return [measure(QUICK_DEFAULT, steps=4, rounds=1, skip=1)]
    return [measure([], steps=12, rounds=8, skip=2)]
