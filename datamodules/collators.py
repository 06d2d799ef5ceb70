"""Turn lists of token ids into the batch dicts of the batch contract (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

IGNORE = -100


def pad(sequences: list[list[int]], value: int) -> Tensor:
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def attention_mask(sequences: list[list[int]]) -> Tensor:
    longest = max(len(s) for s in sequences)
    return torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in sequences])


@dataclass
class TranslationCollator:
    """source ids -> input_ids/attention_mask; target ids -> decoder_input_ids ([bos] + target)
    and labels (target + [eos], -100 on padding)."""

    pad_id: int
    bos_id: int
    eos_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        sources = [e["source_ids"] for e in examples]
        targets = [e["target_ids"] for e in examples]
        return {
            "input_ids": pad(sources, self.pad_id),
            "attention_mask": attention_mask(sources),
            "decoder_input_ids": pad([[self.bos_id, *t] for t in targets], self.pad_id),
            "labels": pad([[*t, self.eos_id] for t in targets], IGNORE),
        }


@dataclass
class ClassificationCollator:
    pad_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        ids = [e["input_ids"] for e in examples]
        batch = {
            "input_ids": pad(ids, self.pad_id),
            "attention_mask": attention_mask(ids),
            "labels": torch.tensor([e["label"] for e in examples]),
        }
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = pad([e["token_type_ids"] for e in examples], 0)
        return batch


@dataclass
class MaskedLMCollator:
    """BERT masking, new for every batch: `probability` of the real, non-special tokens are
    chosen; of those 80% become [MASK], 10% a random token and 10% stay. Labels are the
    original ids at chosen positions and -100 elsewhere."""

    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        ids = [e["input_ids"] for e in examples]
        input_ids = pad(ids, self.pad_id)
        mask = attention_mask(ids)
        special = torch.isin(input_ids, torch.tensor(self.special_ids)) | (mask == 0)
        chosen = (torch.rand(input_ids.shape) < self.probability) & ~special
        labels = input_ids.masked_fill(~chosen, IGNORE)
        roll = torch.rand(input_ids.shape)
        masked = chosen & (roll < 0.8)
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        input_ids = input_ids.masked_fill(masked, self.mask_id)
        random_ids = torch.randint(self.vocab_size, input_ids.shape)
        input_ids = torch.where(randomised, random_ids, input_ids)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
