"""Examples (token ids) -> the batches of the batch contract (`modules.batch`), padded and
framed by the codec."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from modules.batch import ClassificationBatch, MaskedLMBatch, QuestionAnsweringBatch, Seq2SeqBatch
from modules.codec import IGNORE, Codec, pad_rows


@dataclass
class Seq2SeqCollator:
    """source ids -> input_ids/attention_mask; target ids -> decoder_input_ids ([bos] + target)
    and labels (target + [eos], -100 on padding); evaluation examples' raw target texts ->
    references."""

    codec: Codec

    def __call__(self, examples: list[dict[str, Any]]) -> Seq2SeqBatch:
        input_ids, mask = self.codec.pad([e["source_ids"] for e in examples])
        decoder_inputs, labels = zip(
            *(self.codec.target(e["target_ids"]) for e in examples), strict=True
        )
        batch: Seq2SeqBatch = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "decoder_input_ids": pad_rows(list(decoder_inputs), self.codec.pad_id),
            "labels": pad_rows(list(labels), IGNORE),
        }
        if "reference" in examples[0]:
            batch["references"] = [e["reference"] for e in examples]
        return batch


@dataclass
class ClassificationCollator:
    codec: Codec

    def __call__(self, examples: list[dict[str, Any]]) -> ClassificationBatch:
        input_ids, mask = self.codec.pad([e["input_ids"] for e in examples])
        batch: ClassificationBatch = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": torch.tensor([e["label"] for e in examples]),
        }
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = pad_rows([e["token_type_ids"] for e in examples], 0)
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

    codec: Codec
    probability: float = 0.15
    fixed_seed: int | None = None

    def __post_init__(self) -> None:
        if self.codec.mask_id is None:
            raise ValueError(
                f"tokenizer {self.codec.source} has no mask token ([MASK] or <mask>) for masked LM"
            )
        self.mask_id: int = self.codec.mask_id
        self.special_ids = torch.tensor(self.codec.special_ids)

    def __call__(self, examples: list[dict[str, Any]]) -> MaskedLMBatch:
        input_ids, mask = self.codec.pad([e["input_ids"] for e in examples])
        generator = None
        if self.fixed_seed is not None:
            seed = zlib.crc32(input_ids.numpy().tobytes(), self.fixed_seed & 0xFFFFFFFF)
            generator = torch.Generator().manual_seed(seed)
        special = torch.isin(input_ids, self.special_ids) | (mask == 0)
        draw = torch.rand(input_ids.shape, generator=generator)
        if "word_starts" in examples[0]:
            starts = pad_rows([e["word_starts"] for e in examples], 1)
            draw = draw.gather(1, word_start_positions(starts))  # one draw per word
        chosen = (draw < self.probability) & ~special
        labels = input_ids.masked_fill(~chosen, IGNORE)
        roll = torch.rand(input_ids.shape, generator=generator)
        masked = chosen & (roll < 0.8)
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        input_ids = input_ids.masked_fill(masked, self.mask_id)
        random_ids = torch.randint(self.codec.vocab_size, input_ids.shape, generator=generator)
        input_ids = torch.where(randomised, random_ids, input_ids)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@dataclass
class QuestionAnsweringCollator:
    """Features [CLS] question [SEP] context window [SEP] -> the question-answering batch;
    with `keep_text` (evaluation) also what reading an answer back needs: offset_mapping
    (the character span of each context token in its context, -1 for other tokens),
    example_id, and the context and reference answers as strings."""

    codec: Codec
    keep_text: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> QuestionAnsweringBatch:
        input_ids, mask = self.codec.pad([e["input_ids"] for e in examples])
        batch: QuestionAnsweringBatch = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": pad_rows([e["token_type_ids"] for e in examples], 0),
            "start_positions": torch.tensor([e["start_position"] for e in examples]),
            "end_positions": torch.tensor([e["end_position"] for e in examples]),
        }
        if self.keep_text:
            offsets = torch.full((*input_ids.shape, 2), -1, dtype=torch.long)
            for row, e in enumerate(examples):
                offsets[row, : len(e["offsets"])] = torch.tensor(e["offsets"], dtype=torch.long)
            batch["offset_mapping"] = offsets
            batch["example_id"] = torch.tensor([e["example_id"] for e in examples])
            batch["context"] = [e["context"] for e in examples]
            batch["answers"] = [e["answers"] for e in examples]
        return batch
