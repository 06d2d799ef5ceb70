"""The batch contract: what the collators build and the tasks read, one type per task family,
named as Hugging Face names them so the batches look familiar.

- Token ids are `long` tensors (batch, seq); `attention_mask` is 1 for a real token and 0 for
  padding (the attention core turns it into a boolean mask, True = may attend).
- `labels` of token-level tasks hold -100 (`modules.codec.IGNORE`) where a position is not a
  target; losses are summed over the other positions and divided by their number.
- Causal-LM labels are already shifted: `labels[:, i]` is the token after `input_ids[:, i]`.
- Sequence-to-sequence labels are the target followed by its end token; `decoder_input_ids`
  are the target after its start token (teacher forcing).
"""

from __future__ import annotations

from typing import Any, TypedDict

from torch import Tensor
from typing_extensions import NotRequired


class CausalLMBatch(TypedDict):
    input_ids: Tensor
    labels: Tensor


class MaskedLMBatch(TypedDict):
    input_ids: Tensor  # with the chosen positions masked, randomised or kept
    attention_mask: Tensor
    labels: Tensor  # the original ids at the chosen positions, -100 elsewhere
    token_type_ids: NotRequired[Tensor]


class PermutationLMBatch(TypedDict):
    """XLNet's partial prediction: the targets are predicted in a sampled factorisation order
    from the real tokens (nothing is replaced by [MASK])."""

    input_ids: Tensor  # the real tokens
    attention_mask: Tensor
    labels: Tensor  # the original ids at the targets, -100 elsewhere
    ranks: Tensor  # (batch, seq) place in the factorisation order: 0 not a target, 1.. targets
    target_positions: Tensor  # (batch, targets) where they are; filled up with 0 ([CLS])
    token_type_ids: NotRequired[Tensor]


class ClassificationBatch(TypedDict):
    input_ids: Tensor  # [CLS] text [SEP] (pair [SEP])
    attention_mask: Tensor
    labels: Tensor  # (batch,) class indices
    token_type_ids: NotRequired[Tensor]  # 0 up to the first [SEP], 1 after it (pairs)


class QuestionAnsweringBatch(TypedDict):
    input_ids: Tensor  # [CLS] question [SEP] context window [SEP]
    attention_mask: Tensor
    token_type_ids: Tensor
    start_positions: Tensor  # (batch,) first answer token; 0 ([CLS]) when not in the window
    end_positions: Tensor  # (batch,) last answer token
    # evaluation only: what reading the predicted span back out of the context needs
    offset_mapping: NotRequired[Tensor]  # (batch, seq, 2) character span, -1 off the context
    example_id: NotRequired[Tensor]  # (batch,) the question each window belongs to
    context: NotRequired[list[str]]
    answers: NotRequired[list[list[str]]]


class Seq2SeqBatch(TypedDict):
    input_ids: Tensor  # the source
    attention_mask: Tensor  # of the source
    decoder_input_ids: Tensor  # [bos] target
    labels: Tensor  # target [eos], -100 on padding
    references: NotRequired[list[str]]  # evaluation only: the raw target texts


Batch = (
    CausalLMBatch
    | MaskedLMBatch
    | PermutationLMBatch
    | ClassificationBatch
    | QuestionAnsweringBatch
    | Seq2SeqBatch
)
AnyBatch = dict[str, Any]  # a batch whose type the caller does not know
