"""What the four task modules share: building the model from a preset, the optimizer and
schedule, token-normalised losses (exact across gradient accumulation and devices), and
validation loss aggregation. Subclasses supply the model family and `loss`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from tokenizers import Tokenizer
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from modules.config import TransformerConfig
from modules.schedules import Schedule, lr_multiplier


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with weight decay on matrices only, and a warm-up schedule in optimizer steps.
    `lr` is the peak rate, reached at the end of warm-up. A step whose loss or gradient norm
    is not finite is skipped (no update); `max_nonfinite_steps` such steps in a row stop the
    run (checked every `trainer.log_every_n_steps`)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    schedule: Schedule = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    max_nonfinite_steps: int = 5

    def __post_init__(self) -> None:
        if self.max_nonfinite_steps < 1:
            raise ValueError(
                f"optim.max_nonfinite_steps={self.max_nonfinite_steps}: must be at least 1 "
                "(1 stops at the first non-finite step)"
            )


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient norm too many steps in a row."""


class TaskModule(L.LightningModule):
    model: nn.Module
    config_class: ClassVar[type[TransformerConfig]]

    def __init__(
        self,
        optim: OptimizerConfig | dict[str, Any],
        compile: bool = False,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        # the metric that picks the best checkpoint; losses and perplexities are minimised
        self.monitor = (monitor, "min" if monitor.endswith(("loss", "ppl")) else "max")
        self.optim = OptimizerConfig(**optim) if isinstance(optim, dict) else optim
        self.compile_model = compile
        self.val_loss = MeanMetric()
        self.samples: list[dict[str, str]] = []  # a few examples from the last validation
        self.tokenizer: Tokenizer | None = None
        self._step_tokens: Tensor | None = None
        self._step_finite: Tensor | None = None  # every micro-batch loss of the step finite
        # optimizer steps skipped for non-finite numbers, in total and in a row (on the device)
        self.skipped_steps: Tensor | int = 0
        self.nonfinite_in_row: Tensor | int = 0

    def build_config(
        self, preset: str, arch: dict[str, Any] | None, **linked: Any
    ) -> TransformerConfig:
        """The family's preset, with the config's `arch` overrides and the values the data
        module provides (vocabulary size, padding id)."""
        arch = dict(arch or {})
        clash = sorted(set(arch) & set(linked))
        if clash:
            raise ValueError(f"model.arch sets {clash}, which come from the data module")
        return self.config_class.from_preset(preset, **arch, **linked)

    def store_hparams(self) -> None:
        """save_hyperparameters with plain types only (checkpoints load with weights_only)."""
        self.save_hyperparameters()
        for key, value in list(self.hparams.items()):
            if is_dataclass(value) and not isinstance(value, type):
                self.hparams[key] = asdict(value)

    # --- tokenizer: loaded from the data module's file, and carried inside checkpoints ----------
    def load_tokenizer(self, path: str | None) -> None:
        self.tokenizer = Tokenizer.from_file(path) if path and Path(path).is_file() else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["task_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.tokenizer is not None:
            checkpoint["tokenizer_json"] = self.tokenizer.to_str()
        checkpoint["skipped_steps"] = [int(self.skipped_steps), int(self.nonfinite_in_row)]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is None and "tokenizer_json" in checkpoint:
            self.tokenizer = Tokenizer.from_str(checkpoint["tokenizer_json"])
        self.skipped_steps, self.nonfinite_in_row = checkpoint.get("skipped_steps", [0, 0])

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

    # --- losses ----------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(summed loss over targets, number of targets) for a batch."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss_sum, count = self.loss(batch)
        finite = torch.isfinite(loss_sum)
        self._step_tokens = count if self._step_tokens is None else self._step_tokens + count
        self._step_finite = finite if self._step_finite is None else self._step_finite & finite
        self.log("train/loss", loss_sum / count.clamp(min=1), prog_bar=True)
        # Backward on the sum; on_before_optimizer_step divides the gradients by the number
        # of targets in the whole optimizer step, over accumulation and devices.
        return loss_sum

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._step_tokens is None or self._step_finite is None:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        nonfinite = ~self._step_finite
        norm = None
        if grads:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            nonfinite |= ~torch.isfinite(norm)
        # One all-reduce: the targets of the whole step, and the ranks that saw a non-finite
        # loss or gradient norm (so every rank skips the same steps).
        tokens, nonfinite_ranks = self.trainer.strategy.reduce(
            torch.stack([self._step_tokens.float(), nonfinite.float()]), reduce_op="sum"
        )
        self._step_tokens = self._step_finite = None
        # Lightning divided each micro-batch loss by the accumulation count and DDP averages
        # gradients over devices; undo both and divide by the true target count.
        world = self.trainer.accumulate_grad_batches * self.trainer.world_size
        scale = world / tokens.clamp(min=1)
        if norm is not None and self.clips_by_norm():  # clip_grad_norm_, in the same multiply
            limit = self.trainer.gradient_clip_val
            scale = scale * (limit / (norm * scale + 1e-6)).clamp(max=1.0)
        if grads:
            torch._foreach_mul_(grads, scale)  # one fused launch, no host sync
        self.skip_nonfinite(nonfinite_ranks > 0, optimizer)

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

    def skip_nonfinite(self, skip: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Leave the parameters and optimizer state alone this step if `skip`, and count it
        (the step counter and schedule still advance). Fused AdamW (GPUs) reads the flag on
        the device: reading it here would stall every step (10-28% of the step time on an
        H200), so the count is logged, and the run stopped, at the steps Lightning logs."""
        skipped = self.skipped_steps + skip
        in_row = (self.nonfinite_in_row + 1) * skip
        self.skipped_steps, self.nonfinite_in_row = skipped, in_row
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
        elif bool(skip):  # unfused AdamW (other devices): a host sync
            optimizer.zero_grad(set_to_none=True)  # AdamW leaves grad-less parameters alone
        step, limit = self.trainer.global_step, self.optim.max_nonfinite_steps
        if (step + 1) % self.trainer.log_every_n_steps:
            return  # not a step Lightning logs
        self.log("train/skipped_steps", skipped.float())
        if int(in_row) >= limit:
            raise NonFiniteError(
                f"training stopped at step {step}: the loss or gradient norm was not finite in "
                f"the last {int(in_row)} optimizer steps (none applied; "
                f"optim.max_nonfinite_steps={limit}). Lower optim.lr, lengthen "
                "optim.warmup_steps, set trainer.gradient_clip_val, or check the data."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss_sum, count = self.loss(batch)
        self.val_loss.update(loss_sum / count.clamp(min=1), weight=count)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log_validation_metrics(loss)

    def log_validation_metrics(self, loss: Tensor) -> None:
        """Extra validation metrics of a task."""

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("test/loss", loss)
        self.log_test_metrics(loss)

    def log_test_metrics(self, loss: Tensor) -> None:
        """Extra test metrics of a task."""

    # --- probes (attention maps) -------------------------------------------------------------
    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        """A batch of one example made from raw text, with labels so `loss` can run it."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("this model carries no tokenizer to encode text with")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            raise ValueError(f"{text!r} encodes to no tokens")
        return ids

    @staticmethod
    def first_example(batch: dict[str, Tensor], max_length: int = 32) -> dict[str, Tensor]:
        """The first example of a batch without its padding, at most `max_length` tokens."""
        one = {k: v[:1] for k, v in batch.items()}
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

    # --- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            groups,
            lr=self.optim.lr,
            betas=self.optim.betas,
            eps=self.optim.eps,
            # one kernel per parameter: 5x faster than the default on a CPU (52 ms of a 0.7 s
            # MiniLM step), and on a GPU it skips non-finite steps on the device
            fused=self.device.type in ("cpu", "cuda"),
        )
        total = int(self.trainer.estimated_stepping_batches)
        optim = self.optim
        schedule = LambdaLR(
            optimizer,
            lambda step: lr_multiplier(
                step, optim.schedule, optim.warmup_steps, total, optim.min_lr_ratio
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- reporting ---------------------------------------------------------------------------
    def describe(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        cfg = self.model.cfg
        return (
            f"{type(self.model).__name__} {self.hparams.get('preset', '')} "
            f"({cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads), "
            f"{params / 1e6:.2f}M parameters"
        )


def encoder_text_batch(task: TaskModule, text: str, label: int | None) -> dict[str, Tensor]:
    """[CLS] text [SEP] as a batch of one for an encoder task; `label` for classification,
    None for masked LM (no position is a target)."""
    ids = [
        t
        for t in (getattr(task, "bos_id", None), *task.encode(text), getattr(task, "eos_id", None))
        if t is not None
    ]
    input_ids = torch.tensor([ids], device=task.device)
    labels = (
        torch.full_like(input_ids, -100)
        if label is None
        else torch.tensor([label], device=task.device)
    )
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
