"""Language-model tasks: next-token prediction (decoder-only) and masked LM (encoder-only)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from modules.config import DecoderConfig, EncoderConfig
from modules.models import DecoderTransformer, EncoderTransformer
from modules.tasks.base import OptimizerConfig, TaskModule

# GPT-style: AdamW(0.9, 0.95), weight decay 0.1 on matrices, warm-up then cosine to 10%.
CAUSAL_LM_OPTIM = OptimizerConfig(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, warmup_steps=100)
# BERT-style: AdamW, weight decay 0.01, warm-up then linear decay.
MASKED_LM_OPTIM = OptimizerConfig(
    lr=1e-4, weight_decay=0.01, schedule="linear", warmup_steps=1000, min_lr_ratio=0.0
)


def token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy over labelled positions (-100 = ignore) and their count."""
    loss_sum = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
    )
    return loss_sum, (labels != -100).sum()


class CausalLMModule(TaskModule):
    """Next-token loss (labels already shifted by the data module) and perplexity."""

    config_class = DecoderConfig

    def __init__(
        self,
        vocab_size: int,
        tokenizer_path: str | None = None,
        preset: str = "gpt2-small",
        arch: dict[str, Any] | None = None,
        optim: OptimizerConfig = CAUSAL_LM_OPTIM,
        compile: bool = False,
    ) -> None:
        super().__init__(optim, compile)
        cfg = self.build_config(preset, arch, vocab_size=vocab_size)
        self.model = DecoderTransformer(cfg)  # type: ignore[arg-type]
        self.store_hparams()

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return token_loss(self.model(batch["input_ids"]), batch["labels"])

    def log_validation_metrics(self, loss: Tensor) -> None:
        self.log("val/ppl", loss.exp())

    def log_test_metrics(self, loss: Tensor) -> None:
        self.log("test/ppl", loss.exp())


class MaskedLMModule(TaskModule):
    """MLM loss and accuracy on the masked positions (masking is done by the collator)."""

    config_class = EncoderConfig

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        preset: str = "bert-base",
        arch: dict[str, Any] | None = None,
        optim: OptimizerConfig = MASKED_LM_OPTIM,
        compile: bool = False,
    ) -> None:
        super().__init__(optim, compile)
        cfg = self.build_config(preset, arch, vocab_size=vocab_size, pad_token_id=pad_id)
        self.model = EncoderTransformer(cfg)  # type: ignore[arg-type]
        self.accuracy = MeanMetric()
        self.store_hparams()

    def _logits(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        return self.model.mlm_logits(hidden)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return token_loss(self._logits(batch), batch["labels"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self._logits(batch)
        labels = batch["labels"]
        loss_sum, count = token_loss(logits, labels)
        self.val_loss.update(loss_sum / count.clamp(min=1), weight=count)
        chosen = labels != -100
        self.accuracy.update((logits.argmax(-1)[chosen] == labels[chosen]).float())

    def log_validation_metrics(self, loss: Tensor) -> None:
        self.log("val/accuracy", self.accuracy.compute())
        self.accuracy.reset()

    def log_test_metrics(self, loss: Tensor) -> None:
        self.log("test/accuracy", self.accuracy.compute())
        self.accuracy.reset()
