"""What every task shares: the model built from its resolved config (or pretrained weights),
the codec that turns text into its batches, one loop over `step` for training, validation and
test, metrics kept per stage, and the table of metric goals every report reads.

A task subclass declares its model `family`, its `metric_goals`, and `step` (the summed loss,
the count it is normalised by, and whatever its metrics need)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from modules.batch import AnyBatch
from modules.codec import Codec, Family
from modules.config import TransformerConfig
from modules.lightning_compat import logs_this_step
from modules.models import FAMILIES
from modules.tasks.optimization import OptimizerConfig, StepNumerics, build_optimizer
from modules.tasks.pretrained import pretrained_model

Goal = Literal["min", "max"]
STAGES = ("val", "test")
FORMAT_VERSION = 2  # of our checkpoints: 2 = resolved model config and codec inside


@dataclass
class StepOutput:
    loss_sum: Tensor  # summed over the targets
    count: Tensor  # the number of targets (tokens, examples, positions) it is normalised by
    extras: dict[str, Any] = field(default_factory=dict)  # what the task's metrics read


def freeze_modules(model: nn.Module, names: list[str]) -> None:
    """Turn off the gradients of the named submodules of `model` (`model.init_args.freeze`)."""
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            children = [child for child, _ in model.named_children()]
            raise ValueError(
                f"model.init_args.freeze: {name!r} is not a module of the "
                f"{type(model).__name__}; its modules are {children} (dotted paths reach "
                "inside them, e.g. encoder.blocks.0)"
            ) from None
        module.requires_grad_(False)


class TaskModule(L.LightningModule):
    family: ClassVar[Family]
    metric_goals: ClassVar[dict[str, Goal]] = {"loss": "min"}  # every metric a task logs
    default_monitor: ClassVar[str] = "val/loss"
    progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)  # on the progress bar
    model_changes: ClassVar[dict[str, Any]] = {}  # config fields the task fixes (heads)

    def __init__(
        self,
        codec: Codec | None = None,
        preset: str = "tiny",
        arch: dict[str, Any] | None = None,
        init_from: str | None = None,
        optim: OptimizerConfig | dict[str, Any] | None = None,
        compile: bool = False,
        monitor: str | None = None,
        freeze: list[str] | None = None,
    ) -> None:
        """codec: linked from the data module (the tokenizer and its template; checkpoints
        carry it). preset + arch: the model config (arch overrides any field); `init_from`
        instead starts from pretrained weights: a saved HF folder, `package:MODULE`, or one
        of our checkpoints (their architecture wins; `arch` may only change dropout).
        monitor: the validation metric that picks the best checkpoint. freeze: modules of the
        model (e.g. `encoder`, `encoder_embed`) whose weights stay as built or loaded: no
        gradient, no optimizer state, and no backward pass through them where nothing before
        them trains. A weight tied into several modules (shared embeddings) is frozen in all."""
        super().__init__()
        self.codec = codec
        self.preset = preset
        self.optim = (
            OptimizerConfig(**optim) if isinstance(optim, dict) else optim or OptimizerConfig()
        )
        self.compile_model = compile
        self.numerics = StepNumerics(self.optim.max_nonfinite_steps)
        self.model = self.build_model(preset, arch, init_from)
        freeze_modules(self.model, freeze or [])
        self.stage_metrics = nn.ModuleDict(
            {stage: nn.ModuleDict({"loss": MeanMetric()}) for stage in STAGES}
        )
        self.samples: list[dict[str, str]] = []  # a few examples from the last validation
        self._monitor = monitor or self.default_monitor

    def build_model(
        self, preset: str, arch: dict[str, Any] | None, init_from: str | None
    ) -> nn.Module:
        model_class, config_class = FAMILIES[self.family]
        arch = dict(arch or {})
        linked = {}
        if self.codec is not None:
            linked = {"vocab_size": self.codec.vocab_size, "pad_token_id": self.codec.pad_id}
        clash = [k for k, v in linked.items() if arch.get(k, v) != v]
        if clash:
            raise ValueError(
                f"model.arch sets {clash} to {[arch[k] for k in clash]}, but the data module's "
                f"tokenizer gives {[linked[k] for k in clash]}; leave them out of model.arch"
            )
        if init_from:
            vocab = linked.get("vocab_size")
            return pretrained_model(init_from, model_class, vocab, arch, **self.model_changes)
        return model_class(
            config_class.from_preset(preset, **{**arch, **linked, **self.model_changes})
        )

    @property
    def monitor(self) -> tuple[str, Goal]:
        """The metric that picks the best checkpoint, and whether it is minimised or maximised."""
        monitor = self._monitor
        name = monitor.removeprefix("val/")
        if not monitor.startswith("val/") or name not in self.logged_metrics():
            raise ValueError(
                f"model.monitor={monitor!r}: choose one of "
                f"{[f'val/{m}' for m in self.logged_metrics()]} (validation metrics of this task)"
            )
        return monitor, self.metric_goals[name]

    def logged_metrics(self) -> list[str]:
        """The metrics (without stage) this task logs as configured."""
        return list(self.metric_goals)

    def add_metrics(self, **factories: Callable[[], Metric]) -> None:
        """A metric of each name for every evaluation stage."""
        for metrics in self.stage_metrics.values():
            for name, make in factories.items():
                metrics[name] = make()

    def store_hparams(self) -> None:
        """save_hyperparameters with plain types only (checkpoints load with weights_only);
        the codec travels in the checkpoint beside them."""
        self.save_hyperparameters(ignore=["codec"])
        for key, value in list(self.hparams.items()):
            if is_dataclass(value) and not isinstance(value, type):
                self.hparams[key] = asdict(value)

    # --- what a checkpoint holds beyond weights -----------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["task_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["format_version"] = FORMAT_VERSION
        # the resolved config rebuilds exactly this model, whatever the presets say later;
        # the weights are in this file, so init_from is not read again
        cfg: TransformerConfig = self.model.cfg  # type: ignore[assignment]
        hparams = checkpoint.get("hyper_parameters", {})
        checkpoint["hyper_parameters"] = {**hparams, "arch": asdict(cfg), "init_from": None}
        if self.codec is not None:
            checkpoint["codec"] = self.codec.state()
        checkpoint["skipped_steps"] = [int(self.numerics.skipped), int(self.numerics.in_row)]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "codec" in checkpoint:  # the checkpoint's copy wins over any file on disk
            self.codec = Codec.from_state(checkpoint["codec"], source="the checkpoint")
        self.numerics.skipped, self.numerics.in_row = checkpoint.get("skipped_steps", [0, 0])

    def configure_model(self) -> None:
        if self.compile_model:
            self.model.compile()  # compiles __call__ in place: state-dict keys stay unprefixed

    # Only training steps run compiled. Evaluation runs eagerly: its shapes vary (a short last
    # batch, decoding with a growing KV cache), and each new shape would compile again.
    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        torch.compiler.set_stance("force_eager")

    def on_validation_model_train(self) -> None:
        torch.compiler.set_stance("default")
        super().on_validation_model_train()

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        torch.compiler.set_stance("force_eager")

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        torch.compiler.set_stance("force_eager")

    # --- the loop -------------------------------------------------------------------------
    def step(self, batch: dict[str, Any]) -> StepOutput:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.step(batch)
        self.numerics.add(out.loss_sum, out.count)
        if logs_this_step(self):  # the loss of the logged steps (the progress bar's too)
            self.log("train/loss", out.loss_sum / out.count.clamp(min=1), prog_bar=True)
        # Backward on the sum; on_before_optimizer_step divides the gradients by the number
        # of targets in the whole optimizer step, over accumulation and devices.
        return out.loss_sum

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "test")

    def evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        out = self.step(batch)
        metrics = self.stage_metrics[stage]
        metrics["loss"].update(out.loss_sum / out.count.clamp(min=1), weight=out.count)
        self.update_metrics(batch, out, stage, batch_idx)

    def update_metrics(self, batch: AnyBatch, out: StepOutput, stage: str, batch_idx: int) -> None:
        """The task's own metrics (`self.stage_metrics[stage]`) for one evaluation batch."""

    def metric_values(self, metrics: nn.ModuleDict, stage: str) -> dict[str, Tensor]:
        """The stage's metric values at the end of an evaluation."""
        return {name: metric.compute() for name, metric in metrics.items()}

    def on_validation_epoch_end(self) -> None:
        self.log_stage("val")

    def on_test_epoch_end(self) -> None:
        self.log_stage("test")

    def log_stage(self, stage: str) -> None:
        metrics = self.stage_metrics[stage]
        for name, value in self.metric_values(metrics, stage).items():
            self.log(
                f"{stage}/{name}", value, prog_bar=stage == "val" and name in self.progress_metrics
            )
        for metric in metrics.values():
            metric.reset()

    # --- the optimizer step ---------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # walked once: on_before_optimizer_step reads them at every step (0.1 ms a walk)
        self._step_parameters = list(self.parameters())
        optimizer, schedule = build_optimizer(
            self._step_parameters,
            self.optim,
            self.device,
            int(self.trainer.estimated_stepping_batches),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        trainer = self.trainer
        self.numerics.before_update(
            self._step_parameters,
            optimizer,
            lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
            trainer.accumulate_grad_batches * trainer.world_size,
            trainer.gradient_clip_val if self.clips_by_norm() else None,
        )
        if logs_this_step(self):
            self.log("train/skipped_steps", torch.as_tensor(self.numerics.skipped).float())
            self.numerics.check(trainer.global_step)

    def clips_by_norm(self) -> bool:
        """Whether on_before_optimizer_step clips the gradients by their global norm: with
        `trainer.gradient_clip_val` set, unless they are sharded (FSDP computes the norm)."""
        trainer = self.trainer
        return bool(trainer.gradient_clip_val) and (
            trainer.gradient_clip_algorithm in (None, "norm")
            and not isinstance(trainer.strategy, FSDPStrategy)
        )

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clipping by norm is done in on_before_optimizer_step, by value here (Lightning's own
        refuses fused AdamW under mixed precision); sharded gradients are left to Lightning."""
        if self.clips_by_norm() or not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val, foreach=True)
        else:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )

    # --- text in, for probes and tools ----------------------------------------------------
    def require_codec(self) -> Codec:
        if self.codec is None:
            raise ValueError("this model carries no tokenizer to encode text with")
        return self.codec

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        """A batch of one example made from raw text, with labels so `step` can run it."""
        raise NotImplementedError

    @staticmethod
    def first_example(batch: dict[str, Tensor], max_length: int = 32) -> dict[str, Tensor]:
        """The first example of a batch without its padding, at most `max_length` tokens."""
        one = {k: v[:1] for k, v in batch.items() if isinstance(v, Tensor)}  # not references
        length = one["input_ids"].size(1)
        if "attention_mask" in one:
            length = int(one["attention_mask"].sum())
        length = min(length, max_length)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in one:
                one[key] = one[key][:, :length]
        if "decoder_input_ids" in one:
            target = min(int((one["labels"] != -100).sum()), max_length)
            one["decoder_input_ids"], one["labels"] = (
                one["decoder_input_ids"][:, :target],
                one["labels"][:, :target],
            )
        elif one["labels"].dim() == 2:
            one["labels"] = one["labels"][:, :length]
        return one

    def describe(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        cfg = self.model.cfg
        return (
            f"{type(self.model).__name__} {self.preset} "
            f"({cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads), "
            f"{params / 1e6:.2f}M parameters"
        )


def metric_goal(task: type[TaskModule], metric: str) -> Goal:
    """Whether `metric` (e.g. "val/f1", "train/loss") of `task` is minimised or maximised."""
    name = metric.rpartition("/")[2]
    if name not in task.metric_goals:
        raise KeyError(
            f"{task.__name__} logs no metric {name!r} (it logs {list(task.metric_goals)})"
        )
    return task.metric_goals[name]
