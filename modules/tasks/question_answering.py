"""Extractive question answering (SQuAD): start and end logits over the tokens of
[CLS] question [SEP] context [SEP], on the same encoder as the other BERT tasks."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from modules.batch import AnyBatch, QuestionAnsweringBatch
from modules.tasks.base import Goal, StepOutput, TaskModule
from modules.tasks.classification import FINETUNE_OPTIM
from modules.tasks.optimization import OptimizerConfig


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(exact match, F1) of a predicted answer, each the best over the reference answers, as
    SQuAD v1.1's evaluate-v1.1.py computes them (0..1)."""
    guess = normalize_answer(prediction).split()
    exact, f1 = 0.0, 0.0
    for answer in answers:
        truth = normalize_answer(answer).split()
        exact = max(exact, float(guess == truth))
        common = sum((Counter(guess) & Counter(truth)).values())
        if common:
            precision, recall = common / len(guess), common / len(truth)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return exact, f1


def best_spans(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, max_answer_length: int
) -> tuple[Tensor, Tensor, Tensor]:
    """For each row, the span of context tokens (offsets >= 0) first..last with
    first <= last < first + max_answer_length and the highest start + end logit:
    (score, first, last), each of shape (batch,)."""
    length = start_logits.size(1)
    scores = start_logits.float()[:, :, None] + end_logits.float()[:, None, :]
    position = torch.arange(length, device=scores.device)
    width = position[None, :] - position[:, None]
    context = offsets[..., 0] >= 0
    allowed = (width >= 0) & (width < max_answer_length) & context[:, :, None] & context[:, None]
    best = scores.masked_fill(~allowed, float("-inf")).flatten(1).max(dim=1)
    return best.values, best.indices // length, best.indices % length


class QuestionAnsweringModule(TaskModule):
    """BERT's SQuAD head: a linear layer gives each token a start and an end logit. The loss
    is the cross-entropy of the start and of the end position (two targets per feature).
    Evaluation takes, for every question, the best span over all windows of its context (at
    most `max_answer_length` tokens), reads it from the context with the offset mapping, and
    reports SQuAD v1.1 exact match and F1 (0-100) against all reference answers."""

    family = "encoder"
    metric_goals: dict[str, Goal] = {"loss": "min", "exact_match": "max", "f1": "max"}
    default_monitor = "val/f1"
    progress_metrics = ("loss", "exact_match", "f1")
    model_changes = {"mlm_head": False, "pooler": False}

    def __init__(
        self,
        preset: str = "bert-base",
        max_answer_length: int = 30,
        optim: OptimizerConfig = FINETUNE_OPTIM,
        **common: Any,
    ) -> None:
        """With `init_from`, the architecture comes from the pretrained weights; `arch` may
        then only change dropout. `common`: see TaskModule (codec, arch, init_from, compile,
        monitor, freeze)."""
        super().__init__(preset=preset, optim=optim, **common)
        self.head = nn.Linear(self.model.cfg.d_model, 2)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.max_answer_length = max_answer_length
        self.add_metrics(exact_match=MeanMetric, f1=MeanMetric)
        self._answers: dict[int, tuple[float, str, list[str]]] = {}  # example -> best so far
        self.store_hparams()

    def forward(self, batch: QuestionAnsweringBatch) -> tuple[Tensor, Tensor]:
        """Start and end logits (batch, seq); padding gets the lowest value."""
        hidden = self.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        logits = self.head(hidden).float()
        logits = logits.masked_fill(~batch["attention_mask"].bool()[..., None], -1e4)
        start, end = logits.unbind(-1)
        return start, end

    def step(self, batch: QuestionAnsweringBatch) -> StepOutput:  # type: ignore[override]
        start, end = self(batch)
        loss_sum = F.cross_entropy(start, batch["start_positions"], reduction="sum")
        loss_sum = loss_sum + F.cross_entropy(end, batch["end_positions"], reduction="sum")
        count = torch.tensor(2 * start.size(0), device=start.device)
        return StepOutput(loss_sum, count, {"start": start, "end": end})

    def update_metrics(self, batch: AnyBatch, out: StepOutput, stage: str, batch_idx: int) -> None:
        scores, firsts, lasts = best_spans(
            out.extras["start"], out.extras["end"], batch["offset_mapping"], self.max_answer_length
        )
        offsets = batch["offset_mapping"].tolist()
        rows = zip(
            batch["example_id"].tolist(),
            scores.tolist(),
            firsts.tolist(),
            lasts.tolist(),
            batch["context"],
            batch["answers"],
            strict=True,
        )
        for row, (example, score, first, last, context, answers) in enumerate(rows):
            text = context[offsets[row][first][0] : offsets[row][last][1]]
            if example not in self._answers or score > self._answers[example][0]:
                self._answers[example] = (score, text, answers)

    def metric_values(self, metrics: nn.ModuleDict, stage: str) -> dict[str, Tensor]:
        for _, prediction, answers in self._answers.values():
            exact, f1 = squad_scores(prediction, answers)
            metrics["exact_match"].update(exact)
            metrics["f1"].update(f1)
        if self._answers and stage == "val":
            self.samples = [
                {"prediction": prediction, "answers": " | ".join(answers)}
                for _, prediction, answers in list(self._answers.values())[:4]
            ]
        self._answers = {}
        return {
            "loss": metrics["loss"].compute(),
            "exact_match": metrics["exact_match"].compute() * 100,
            "f1": metrics["f1"].compute() * 100,
        }
