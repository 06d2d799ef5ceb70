"""Turn lists of token ids into the batch dicts of the batch contract (see DESIGN.md)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

IGNORE = -100


def pad(sequences: list[list[int]], value: int) -> Tensor:
    longest = max(len(s) for s in sequences)
    # one tensor from padded lists: a tensor per row made collation ~6x slower
    rows = [[*s, *[value] * (longest - len(s))] for s in sequences]
    return torch.tensor(rows, dtype=torch.long)


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


def word_start_positions(word_starts: Tensor) -> Tensor:
    """For every token, the position of the first piece of its word (word_starts: 1 where a
    word begins)."""
    positions = torch.arange(word_starts.size(1)).expand_as(word_starts)
    return torch.where(word_starts.bool(), positions, 0).cummax(dim=1).values


@dataclass
class MaskedLMCollator:
    """BERT masking: `probability` of the real, non-special tokens are chosen; of those 80%
    become [MASK], 10% a random token and 10% stay. Labels are the original ids at chosen
    positions and -100 elsewhere.

    Without `fixed_seed` (training) the masks are drawn anew for every batch (dynamic masking,
    as RoBERTa). With it (evaluation) they are a function of the batch's tokens, so every
    validation masks the same positions and leaves the global random state alone.
    Examples that carry `word_starts` (1 where a word begins) are masked by whole words: a
    word is chosen with `probability` and all its pieces are chosen with it."""

    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15
    fixed_seed: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        ids = [e["input_ids"] for e in examples]
        input_ids = pad(ids, self.pad_id)
        mask = attention_mask(ids)
        generator = None
        if self.fixed_seed is not None:
            seed = zlib.crc32(input_ids.numpy().tobytes(), self.fixed_seed & 0xFFFFFFFF)
            generator = torch.Generator().manual_seed(seed)
        special = torch.isin(input_ids, torch.tensor(self.special_ids)) | (mask == 0)
        draw = torch.rand(input_ids.shape, generator=generator)
        if "word_starts" in examples[0]:
            starts = pad([e["word_starts"] for e in examples], 1)
            draw = draw.gather(1, word_start_positions(starts))  # one draw per word
        chosen = (draw < self.probability) & ~special
        labels = input_ids.masked_fill(~chosen, IGNORE)
        roll = torch.rand(input_ids.shape, generator=generator)
        masked = chosen & (roll < 0.8)
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        input_ids = input_ids.masked_fill(masked, self.mask_id)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=generator)
        input_ids = torch.where(randomised, random_ids, input_ids)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@dataclass
class QuestionAnsweringCollator:
    """Features [CLS] question [SEP] context window [SEP] -> input_ids, attention_mask,
    token_type_ids, start_positions, end_positions (0 = [CLS]: the answer is not in this
    window). With `keep_text` (evaluation) also what reading an answer back needs:
    offset_mapping (the character span of each context token in its context, -1 for other
    tokens), example_id, and the context and reference answers as strings."""

    pad_id: int
    keep_text: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [e["input_ids"] for e in examples]
        batch: dict[str, Any] = {
            "input_ids": pad(ids, self.pad_id),
            "attention_mask": attention_mask(ids),
            "token_type_ids": pad([e["token_type_ids"] for e in examples], 0),
            "start_positions": torch.tensor([e["start_position"] for e in examples]),
            "end_positions": torch.tensor([e["end_position"] for e in examples]),
        }
        if self.keep_text:
            offsets = torch.full((*batch["input_ids"].shape, 2), -1, dtype=torch.long)
            for row, e in enumerate(examples):
                offsets[row, : len(e["offsets"])] = torch.tensor(e["offsets"], dtype=torch.long)
            batch["offset_mapping"] = offsets
            batch["example_id"] = torch.tensor([e["example_id"] for e in examples])
            batch["context"] = [e["context"] for e in examples]
            batch["answers"] = [e["answers"] for e in examples]
        return batch
