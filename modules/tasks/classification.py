"""Sequence classification on the encoder's pooled first token, from scratch or from
pretrained weights (a HF BERT folder, a packaged model, or our own MLM checkpoint)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from modules.config import EncoderConfig
from modules.tasks.base import OptimizerConfig, TaskModule, encoder_text_batch
from modules.tasks.pretrained import fine_tuning_encoder

# BERT fine-tuning: AdamW lr 5e-5 (Devlin et al.), weight decay 0.01, warm-up, linear decay.
FINETUNE_OPTIM = OptimizerConfig(
    lr=5e-5, weight_decay=0.01, schedule="linear", warmup_steps=100, min_lr_ratio=0.0
)


class SequenceClassificationModule(TaskModule):
    config_class = EncoderConfig

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        num_classes: int,
        bos_id: int | None = None,
        eos_id: int | None = None,
        tokenizer_path: str | None = None,
        preset: str = "bert-base",
        arch: dict[str, Any] | None = None,
        init_from: str | None = None,
        classifier_dropout: float = 0.1,
        optim: OptimizerConfig = FINETUNE_OPTIM,
        compile: bool = False,
    ) -> None:
        """With `init_from`, the architecture comes from the pretrained weights; `arch` may
        then only change dropout."""
        super().__init__(optim, compile, monitor="val/accuracy")
        self.model = fine_tuning_encoder(
            self, init_from, preset, arch, vocab_size, pad_id, mlm_head=False
        )
        if self.model.pooler is None:
            raise ValueError("the encoder has no pooler; build it with pooler=True")
        self.head = nn.Sequential(
            nn.Dropout(classifier_dropout), nn.Linear(self.model.cfg.d_model, num_classes)
        )
        nn.init.normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)
        self.accuracy = MeanMetric()
        self.bos_id, self.eos_id = bos_id, eos_id
        self.load_tokenizer(tokenizer_path)
        self.store_hparams()

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        return encoder_text_batch(self, text, label=0)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        return self.head(self.model.pool(hidden))

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self(batch)
        labels = batch["labels"]
        return F.cross_entropy(logits.float(), labels, reduction="sum"), torch.tensor(
            labels.numel(), device=labels.device
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        labels = batch["labels"]
        self.val_loss.update(F.cross_entropy(logits.float(), labels), weight=labels.numel())
        self.accuracy.update((logits.argmax(-1) == labels).float())

    def log_validation_metrics(self, loss: Tensor) -> None:
        self.log("val/accuracy", self.accuracy.compute(), prog_bar=True)
        self.accuracy.reset()

    def log_test_metrics(self, loss: Tensor) -> None:
        self.log("test/accuracy", self.accuracy.compute())
        self.accuracy.reset()
