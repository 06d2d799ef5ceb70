"""Sequence classification on the encoder's pooled first token, from scratch or from
pretrained weights (a HF BERT folder, a packaged model, or our own MLM checkpoint)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from modules.config import EncoderConfig
from modules.interop import from_hf
from modules.models import EncoderTransformer
from modules.tasks.base import OptimizerConfig, TaskModule

# BERT fine-tuning: AdamW lr 5e-5 (Devlin et al.), weight decay 0.01, warm-up, linear decay.
FINETUNE_OPTIM = OptimizerConfig(
    lr=5e-5, weight_decay=0.01, schedule="linear", warmup_steps=100, min_lr_ratio=0.0
)
DROPOUT_KEYS = {"dropout", "attn_dropout"}


def load_encoder(init_from: str) -> EncoderTransformer:
    """Our MLM checkpoint (.ckpt) or a HF BERT (folder or `package:MODULE`)."""
    if init_from.endswith(".ckpt"):
        checkpoint = torch.load(init_from, map_location="cpu", weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        cfg = EncoderConfig.from_preset(
            hparams["preset"],
            **(hparams.get("arch") or {}),
            vocab_size=hparams["vocab_size"],
            pad_token_id=hparams.get("pad_id"),
        )
        encoder = EncoderTransformer(cfg)
        weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        try:
            encoder.load_state_dict(weights)
        except RuntimeError as error:
            raise ValueError(f"checkpoint {init_from} does not fit an encoder: {error}") from error
        return encoder
    model = from_hf(init_from)
    if not isinstance(model, EncoderTransformer):
        raise ValueError(f"{init_from} is a {type(model).__name__}, not a BERT-style encoder")
    return model


class SequenceClassificationModule(TaskModule):
    config_class = EncoderConfig

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        num_classes: int,
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
        if init_from:
            extra = sorted(set(arch or {}) - DROPOUT_KEYS)
            if extra:
                raise ValueError(
                    f"model.arch {extra} cannot change pretrained weights ({init_from})"
                )
            pretrained = load_encoder(init_from)
            if pretrained.cfg.vocab_size != vocab_size:
                raise ValueError(
                    f"{init_from} has a vocabulary of {pretrained.cfg.vocab_size} but the data "
                    f"module's tokenizer has {vocab_size}; use the model's own tokenizer.json"
                )
            # Same weights, the configured dropout, and no MLM head (unused parameters would
            # stall DDP).
            cfg = dataclasses.replace(pretrained.cfg, mlm_head=False, **(arch or {}))
            self.model = EncoderTransformer(cfg)
            state = pretrained.state_dict()
            self.model.load_state_dict(
                {k: v for k, v in state.items() if not k.startswith("mlm_head.")}
            )
        else:
            cfg = self.build_config(
                preset, arch, vocab_size=vocab_size, pad_token_id=pad_id, mlm_head=False
            )
            self.model = EncoderTransformer(cfg)  # type: ignore[arg-type]
        if self.model.pooler is None:
            raise ValueError("the encoder has no pooler; build it with pooler=True")
        self.head = nn.Sequential(
            nn.Dropout(classifier_dropout), nn.Linear(self.model.cfg.d_model, num_classes)
        )
        nn.init.normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)
        self.accuracy = MeanMetric()
        self.store_hparams()

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
