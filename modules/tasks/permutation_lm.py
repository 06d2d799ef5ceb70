"""Permutation LM (XLNet, Yang et al. 2019) on the BERT-style encoder: the targets of each row
are predicted in a sampled factorisation order by the query stream of two-stream attention
(`EncoderTransformer` with `two_stream`); the data module picks the targets and the order."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from modules.batch import PermutationLMBatch
from modules.codec import IGNORE
from modules.models import QueryStream, TwoStream
from modules.tasks.base import StepOutput
from modules.tasks.language_modeling import MASKED_LM_OPTIM, MaskedLMModule, token_loss
from modules.tasks.optimization import OptimizerConfig


class PermutationLMModule(MaskedLMModule):
    """Loss and accuracy over the targets, predicted from the query stream by the encoder's
    (tied) MLM head. The content stream is the encoder itself: classification, question
    answering, `tsuite embed` and `tsuite attention` take the checkpoint as they take a
    masked-LM one; the query stream's start vector (`query_stream`) stays with this task."""

    def __init__(
        self, preset: str = "bert-base", optim: OptimizerConfig = MASKED_LM_OPTIM, **common: Any
    ) -> None:
        """`common`: see TaskModule (codec, arch, init_from, compile, monitor, freeze)."""
        super().__init__(preset=preset, optim=optim, **common)
        self.query_stream = QueryStream(self.model.cfg)
        if self.model.pooler is not None:  # trained by fine-tuning: frozen here, so that DDP
            self.model.pooler.requires_grad_(False)  # finds no parameter without a gradient

    def step(self, batch: PermutationLMBatch) -> StepOutput:  # type: ignore[override]
        ids, positions = batch["input_ids"], batch["target_positions"]
        streams = TwoStream(batch["ranks"], positions, self.query_stream.start)
        hidden = self.model(
            ids, batch["attention_mask"], batch.get("token_type_ids"), two_stream=streams
        )
        query = hidden[:, ids.size(1) :]
        labels = batch["labels"].gather(1, positions)
        chosen = labels != IGNORE
        logits, labels = self.model.mlm_logits(query, chosen), labels[chosen]
        return StepOutput(*token_loss(logits, labels), {"logits": logits, "labels": labels})

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        """[CLS] text [SEP] with no target: the content stream alone, the plain encoder."""
        batch = super().text_batch(text, target)
        return without_targets(batch)

    @staticmethod
    def first_example(batch: dict[str, Tensor], max_length: int = 32) -> dict[str, Tensor]:
        one = {k: v for k, v in batch.items() if k not in ("ranks", "target_positions")}
        return without_targets(MaskedLMModule.first_example(one, max_length))


def without_targets(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A permutation-LM batch of the same tokens where nothing is predicted."""
    ids = batch["input_ids"]
    return {
        **batch,
        "labels": torch.full_like(ids, IGNORE),
        "ranks": torch.zeros_like(ids),
        "target_positions": ids.new_zeros(ids.size(0), 0),
    }
