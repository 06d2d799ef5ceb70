"""What the four task modules share: building the model from a preset, the optimizer and
schedule, token-normalised losses (exact across gradient accumulation and devices), and
validation loss aggregation. Subclasses supply the model family and `loss`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from modules.config import TransformerConfig
from modules.schedules import Schedule, lr_multiplier


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with weight decay on matrices only, and a warm-up schedule in optimizer steps.
    `lr` is the peak rate, reached at the end of warm-up."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    schedule: Schedule = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1


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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is None and "tokenizer_json" in checkpoint:
            self.tokenizer = Tokenizer.from_str(checkpoint["tokenizer_json"])

    def configure_model(self) -> None:
        if self.compile_model:
            self.model.compile()  # compiles __call__ in place: state-dict keys stay unprefixed

    # --- losses ----------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(summed loss over targets, number of targets) for a batch."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss_sum, count = self.loss(batch)
        self._step_tokens = count if self._step_tokens is None else self._step_tokens + count
        self.log("train/loss", loss_sum / count.clamp(min=1), prog_bar=True)
        # Backward on the sum; on_before_optimizer_step divides the gradients by the number
        # of targets in the whole optimizer step, over accumulation and devices.
        return loss_sum

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._step_tokens is None:
            return
        total = self.trainer.strategy.reduce(self._step_tokens.float(), reduce_op="sum")
        # Lightning divided each micro-batch loss by the accumulation count and DDP averages
        # gradients over devices; undo both and divide by the true target count.
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / total.clamp(min=1)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale)  # one fused launch, no host sync
        self._step_tokens = None

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
            fused=self.device.type == "cuda",
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
