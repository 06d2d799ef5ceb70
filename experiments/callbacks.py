"""Callbacks the CLI adds to every run: throughput, the W&B run id in checkpoints, and the
report printed at the start and end of a run (and saved as summary.json)."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from experiments.csv_logger import RunCSVLogger
from experiments.flops import dense_peak, flops_per_token, matmul_weights
from modules.tasks import TaskModule, metric_goal

TOKEN_KEYS = ("input_ids", "decoder_input_ids")


class Throughput(Callback):
    """Logs `train/tokens_per_s`: positions processed per second (padding included, counted
    from tensor shapes, so no device sync), measured between logging steps; on a GPU whose
    dense peak is known, also `train/mfu` (model FLOPs utilisation, experiments/flops.py)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.total_tokens = 0
        self._weights: int | None = None  # matmul weights of the model, for FLOPs
        self._peak: float | None = None  # the devices' dense peak FLOP/s
        self._window_flops = 0.0
        self.train_seconds = 0.0
        self._start = 0.0
        self._window_start = 0.0
        self._window_tokens = 0
        self._paused = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        peak = dense_peak(trainer.strategy.root_device, str(trainer.precision))
        if peak and model is not None and hasattr(model, "cfg"):
            self._weights, self._peak = matmul_weights(model), peak * trainer.world_size

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._window_start = time.perf_counter()
        self._window_tokens, self._window_flops = 0, 0.0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        tokens = sum(batch[k].numel() for k in TOKEN_KEYS if k in batch) * trainer.world_size
        self._window_tokens += tokens
        self.total_tokens += tokens
        if self._weights is not None:
            context = max(batch[k].size(1) for k in TOKEN_KEYS if k in batch)
            per_token = flops_per_token(pl_module.model, context, self._weights)  # type: ignore[arg-type]
            self._window_flops += tokens * per_token
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0:
            now = time.perf_counter()
            seconds = max(now - self._window_start, 1e-9)
            pl_module.log("train/tokens_per_s", self._window_tokens / seconds, prog_bar=True)
            if self._peak:
                pl_module.log("train/mfu", self._window_flops / seconds / self._peak)
            self._window_start, self._window_tokens, self._window_flops = now, 0, 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._start

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._paused = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            pause = time.perf_counter() - self._paused
            self._start += pause  # validation time is not training time
            self._window_start += pause

    @property
    def tokens_per_second(self) -> float:
        return self.total_tokens / self.train_seconds if self.train_seconds else 0.0


class ResumeState(Callback):
    """Keeps what Lightning's checkpoints leave out: the W&B run id (a resumed run continues
    the same W&B run) and the random-number states (dropout continues the same sequence, so
    a resumed run on CPU reproduces the uninterrupted one)."""

    def __init__(self, wandb_run_id: str) -> None:
        self.wandb_run_id = wandb_run_id
        self._rng: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["wandb_run_id"] = self.wandb_run_id
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._rng = checkpoint.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the sanity check, which would otherwise consume random numbers first
        if self._rng is not None:
            torch.set_rng_state(self._rng["torch"])
            random.setstate((3, tuple(self._rng["python"]), None))
            self._rng = None
        if trainer.ckpt_path and trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, RunCSVLogger):
                    dropped = logger.drop_rows_from(trainer.global_step)
                    if dropped:
                        print(
                            f"[tsuite] resuming at step {trainer.global_step}: removed {dropped} "
                            "rows of metrics.csv logged after that checkpoint",
                            flush=True,
                        )


class SampleLog(Callback):
    """After each validation, the task's `samples` (translations, generations, predictions
    beside their references) go to samples.jsonl in the run folder and to a W&B table."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "samples.jsonl"

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = getattr(pl_module, "samples", [])
        if trainer.sanity_checking or not samples:
            return
        with self.path.open("a") as file:
            for sample in samples:
                file.write(json.dumps({"step": trainer.global_step, **sample}) + "\n")
        columns = list(samples[0])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                rows = [[trainer.global_step, *(s.get(c, "") for c in columns)] for s in samples]
                logger.log_text(key="samples", columns=["step", *columns], data=rows)


class RunReport(Callback):
    """The start line, the metric history, and the end-of-run summary."""

    def __init__(self, experiment: str, run_dir: Path, throughput: Throughput) -> None:
        self.experiment, self.run_dir, self.throughput = experiment, run_dir, throughput
        self.history: list[dict[str, float]] = []
        self.history_seconds: list[float] = []  # wall time since fit start of each validation
        self._loop_start, self.loop_seconds = time.perf_counter(), 0.0
        self._start = time.perf_counter()

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._loop_start = time.perf_counter()
        datamodule = trainer.datamodule
        data = (
            datamodule.describe() if hasattr(datamodule, "describe") else type(datamodule).__name__
        )
        describe = getattr(pl_module, "describe", lambda: type(pl_module).__name__)
        device = f"{trainer.num_devices}x {trainer.strategy.root_device.type}"
        print(
            f"[tsuite] {self.experiment}: {describe()} | data {data} | {device}, "
            f"{trainer.precision} precision | run folder {self.run_dir}",
            flush=True,
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and isinstance(pl_module, TaskModule):
                define_wandb_metrics(logger.experiment, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loop_start = time.perf_counter()  # after the sanity check and the loggers' set-up

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loop_seconds = time.perf_counter() - self._loop_start

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.history.append({"step": trainer.global_step, **metrics})
        self.history_seconds.append(round(time.perf_counter() - self._start, 1))

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self.summary(trainer, pl_module)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(self.render(summary, trainer), flush=True)

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        best: dict[str, float] = {}
        final = self.history[-1] if self.history else {}
        goals = {name: metric_goal(type(pl_module), name) for name in final if name != "step"}
        for name, goal in goals.items():
            values = [h[name] for h in self.history if name in h and not math.isnan(h[name])]
            if values:
                best[name] = max(values) if goal == "max" else min(values)
        checkpoint = trainer.checkpoint_callback
        return {
            "experiment": self.experiment,
            "run_dir": str(self.run_dir),
            "model": getattr(pl_module, "describe", lambda: "")(),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
            "steps": trainer.global_step,
            "wall_seconds": round(time.perf_counter() - self._start, 1),
            # the training loop with its validations, without set-up and sanity check
            "loop_seconds": round(self.loop_seconds, 3),
            "tokens_per_second": round(self.throughput.tokens_per_second, 1),
            "best": best,
            "final": {k: v for k, v in final.items() if k != "step"},
            "best_checkpoint": checkpoint.best_model_path
            if isinstance(checkpoint, ModelCheckpoint)
            else "",
            "samples": getattr(pl_module, "samples", []),
            "history": [
                {**h, "wall_seconds": t}
                for h, t in zip(self.history, self.history_seconds, strict=True)
            ],
        }

    def render(self, summary: dict[str, Any], trainer: L.Trainer) -> str:
        lines = [
            "",
            f"[tsuite] {summary['experiment']} finished: {summary['steps']} steps in "
            f"{summary['wall_seconds']:.0f}s, {summary['tokens_per_second']:,.0f} tokens/s",
        ]
        if summary["final"]:
            width = max(len(k) for k in summary["final"])
            lines.append(f"  {'metric':<{width}}  {'best':>10}  {'final':>10}")
            for name, value in summary["final"].items():
                lines.append(
                    f"  {name:<{width}}  {summary['best'].get(name, value):>10.4f}  {value:>10.4f}"
                )
        for sample in summary["samples"][:4]:
            lines.append("  " + " | ".join(f"{k}: {_short(str(v))}" for k, v in sample.items()))
        if summary["best_checkpoint"]:
            lines.append(f"  best checkpoint: {summary['best_checkpoint']}")
        lines.append(f"  run folder:      {summary['run_dir']}")
        lines.append(
            f"  resume:          tsuite fit -c {self.run_dir / 'config.yaml'} --ckpt_path {self.run_dir / 'checkpoints' / 'last.ckpt'}"
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and getattr(logger.experiment, "offline", False):
                lines.append(
                    f"  W&B was offline; upload with: wandb sync {Path(logger.experiment.dir).parent}"
                )
        return "\n".join(lines)


class ArchitectureDiagram(Callback):
    """The model drawn as the paper's Figure 1 (experiments/diagram.py) for a sample batch, once
    at the start of training: architecture.svg in the run folder, and a PNG of it to W&B."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from experiments.architecture import sample_batch
        from experiments.diagram import task_diagram
        from experiments.diagram_render import write

        if not isinstance(pl_module, TaskModule):
            return
        loggers = [g for g in trainer.loggers if isinstance(g, WandbLogger)]
        online = [g for g in loggers if not getattr(g.experiment, "disabled", False)]
        training = pl_module.training
        # its own random numbers, and no dropout: training draws exactly what it would without
        with torch.random.fork_rng(devices=[]), torch.compiler.set_stance("force_eager"):
            torch.manual_seed(0)
            pl_module.eval()
            batch = sample_batch(pl_module, 2, min(16, pl_module.model.cfg.max_length))
            device = {k: v.to(pl_module.device) for k, v in batch.items()}
            diagram = task_diagram(pl_module, device)
        pl_module.train(training)
        paths = write(diagram, self.run_dir, "architecture", with_png=bool(online))
        for logger in online:
            logger.log_image(key="architecture", images=[str(paths[-1])])


def define_wandb_metrics(run: Any, task: TaskModule) -> None:
    """Each validation metric's summary in W&B is its best: the minimum or the maximum."""
    for name, goal in task.metric_goals.items():
        run.define_metric(f"val/{name}", summary=goal)


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"
