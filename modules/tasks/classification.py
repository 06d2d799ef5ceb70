"""Sequence classification on the encoder's pooled first token, from scratch or from
pretrained weights (a HF BERT folder, a packaged model, or one of our encoder checkpoints)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from modules.batch import AnyBatch, ClassificationBatch
from modules.tasks.base import Goal, StepOutput, TaskModule
from modules.tasks.language_modeling import encoder_text_batch
from modules.tasks.optimization import OptimizerConfig

# BERT fine-tuning: AdamW lr 5e-5 (Devlin et al.), weight decay 0.01, warm-up, linear decay.
FINETUNE_OPTIM = OptimizerConfig(
    lr=5e-5, weight_decay=0.01, schedule="linear", warmup_steps=100, min_lr_ratio=0.0
)


class SequenceClassificationModule(TaskModule):
    family = "encoder"
    metric_goals: dict[str, Goal] = {"loss": "min", "accuracy": "max"}
    default_monitor = "val/accuracy"
    progress_metrics = ("loss", "accuracy")
    model_changes = {"mlm_head": False}

    def __init__(
        self,
        num_classes: int = 2,
        label_names: list[str] | None = None,
        preset: str = "bert-base",
        classifier_dropout: float = 0.1,
        optim: OptimizerConfig = FINETUNE_OPTIM,
        **common: Any,
    ) -> None:
        """num_classes, label_names: linked from the data module (the names where the data set
        declares them; exported models carry them). With `init_from`, the architecture comes
        from the pretrained weights; `arch` may then only change dropout. `common`: see
        TaskModule (codec, arch, init_from, compile, monitor, freeze)."""
        super().__init__(preset=preset, optim=optim, **common)
        self.label_names = label_names
        if self.model.pooler is None:
            raise ValueError("the encoder has no pooler; build it with pooler=True")
        self.head = nn.Sequential(
            nn.Dropout(classifier_dropout), nn.Linear(self.model.cfg.d_model, num_classes)
        )
        nn.init.normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)
        self.add_metrics(accuracy=MeanMetric)
        self.store_hparams()

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        return encoder_text_batch(self, text, label=0)

    def forward(self, batch: ClassificationBatch) -> Tensor:
        hidden = self.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        return self.head(self.model.pool(hidden))

    def step(self, batch: ClassificationBatch) -> StepOutput:  # type: ignore[override]
        logits, labels = self(batch), batch["labels"]
        count = torch.tensor(labels.numel(), device=labels.device)
        loss_sum = F.cross_entropy(logits.float(), labels, reduction="sum")
        return StepOutput(loss_sum, count, {"logits": logits})

    def update_metrics(self, batch: AnyBatch, out: StepOutput, stage: str, batch_idx: int) -> None:
        metrics = self.stage_metrics[stage]
        metrics["accuracy"].update((out.extras["logits"].argmax(-1) == batch["labels"]).float())
