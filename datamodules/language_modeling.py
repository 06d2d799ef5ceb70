"""Text for language models: a packed token stream for causal LMs, masked chunks for MLM."""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tokenizers import Encoding
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader
from torch.utils.data import Dataset as TorchDataset

from datamodules.base import TextDataModule
from datamodules.collators import MaskedLMCollator
from datamodules.samplers import WindowSampler
from datamodules.sources import DataError, Source
from datamodules.tokenization import TokenizerSpec


class TokenWindows(TorchDataset):
    """Windows of a token stream: item `start` is input_ids = stream[start : start+block]
    and labels = stream[start+1 : start+block+1] (labels are already shifted)."""

    def __init__(self, stream: np.ndarray, block: int) -> None:
        self.stream, self.block = stream, block

    def __len__(self) -> int:
        return max(0, len(self.stream) - self.block - 1)

    def __getitem__(self, start: int) -> dict[str, Tensor]:
        window = torch.from_numpy(self.stream[start : start + self.block + 1].astype(np.int64))
        return {"input_ids": window[:-1], "labels": window[1:]}


def token_stream(data: Dataset) -> np.ndarray:
    """The `ids` lists of every row, concatenated (zero-copy from Arrow)."""
    column = data.data.column("ids").combine_chunks()
    return column.flatten().to_numpy()


class CausalLMDataModule(TextDataModule):
    """Documents, each ended by an end-of-text token, joined into one stream, cut into
    `max_length` windows; the training windows move by a random shift every epoch."""

    family = "decoder"

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        max_length: int = 256,
        batch_size: int = 32,
        text_column: str = "text",
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        self.max_length, self.text_column = max_length, text_column
        self.streams: dict[str, np.ndarray] = {}

    def text_columns(self) -> list[str]:
        return [self.text_column]

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        documents = self.codec.pieces(batch[self.text_column])
        return {"ids": [np.asarray(self.codec.document(i), np.int32) for i in documents]}

    def on_loaded(self) -> None:
        for split, data in self.splits.items():
            self.streams[split] = token_stream(data)
            if len(self.streams[split]) <= self.max_length:
                raise DataError(
                    f"split {split!r} of {self.source.describe()} has {len(self.streams[split])} "
                    f"tokens, fewer than one window of data.max_length={self.max_length} + 1"
                )

    def make_loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.streams:
            self.split(split)
        stream = self.streams[split]
        rank, world_size, _ = self.world
        sampler = WindowSampler(
            len(stream),
            self.max_length,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            even=train,
        )
        batches = BatchSampler(sampler, self.per_device_batch_size(), drop_last=train)
        return self.loader(TokenWindows(stream, self.max_length), batches, train)

    def describe(self) -> str:
        tokens = ", ".join(f"{k} {len(v):,} tokens" for k, v in self.streams.items())
        return f"{self.source.describe()} ({tokens or 'not loaded'}; vocabulary {self.codec.vocab_size:,})"


def word_starts(encoding: Encoding) -> list[int]:
    """1 for each piece that begins a word (as the tokenizer's pre-tokenizer splits words:
    WordPiece `##` pieces continue the word before them), else 0."""
    words = encoding.word_ids
    return [int(i == 0 or w is None or w != words[i - 1]) for i, w in enumerate(words)]


def pack_greedily(lengths: list[int], room: int) -> list[list[int]]:
    """Consecutive items grouped so that each group's lengths sum to at most `room`: an item
    that does not fit in what is left of a group starts the next one (items are <= room)."""
    groups: list[list[int]] = []
    used = room
    for index, length in enumerate(lengths):
        if used + length > room:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += length
    return groups


class MaskedLMDataModule(TextDataModule):
    """Rows of text as [CLS] pieces [SEP] sequences of up to `max_length` tokens, padded per
    batch. A row longer than a sequence is cut into full pieces.

    pack: rows are packed together into sequences, [CLS] row [SEP] row [SEP] ..., whole rows
    only (a row that does not fit in what is left starts the next sequence), so sequences are
    nearly full and short rows (sentences) share one. [SEP] always ends a row, so packing
    never runs two rows (documents) into each other. Rows are packed within each batch of
    1,000 rows that `datasets.map` hands over.
    BERT masking (`mask_probability`) is drawn anew for every training batch by the collator
    (dynamic masking); validation and test masks are fixed per batch, so their loss and
    accuracy compare between evaluations. whole_word_masking: all pieces of a word are masked
    together."""

    family = "encoder"

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        max_length: int = 128,
        batch_size: int = 32,
        mask_probability: float = 0.15,
        whole_word_masking: bool = False,
        pack: bool = False,
        text_column: str = "text",
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        if max_length < 3:
            raise ValueError(f"data.max_length={max_length} leaves no room between [CLS] and [SEP]")
        self.max_length, self.text_column = max_length, text_column
        self.mask_probability = mask_probability
        self.whole_word_masking, self.pack = whole_word_masking, pack

    def text_columns(self) -> list[str]:
        return [self.text_column]

    def processing(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "pack": self.pack,
            "whole_word_masking": self.whole_word_masking,
        }

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        codec = self.codec
        bos, eos, size = codec.bos_id, codec.eos_id, codec.room(self.max_length)
        # pieces of at most max_length - 2 tokens, each ended by [SEP]
        pieces: list[tuple[list[int], list[int]]] = []
        for encoding in codec.encodings(batch[self.text_column]):
            ids, starts = encoding.ids, word_starts(encoding)
            for i in range(0, len(ids), size):
                pieces.append(([*ids[i : i + size], eos], [1, *starts[i + 1 : i + size], 1]))
        if self.pack:
            groups = pack_greedily([len(ids) for ids, _ in pieces], self.max_length - 1)
        else:
            groups = [[i] for i in range(len(pieces))]
        out = {"input_ids": [[bos, *chain(*(pieces[i][0] for i in g))] for g in groups]}
        if self.whole_word_masking:
            out["word_starts"] = [[1, *chain(*(pieces[i][1] for i in g))] for g in groups]
        return out

    def collator(self, train: bool) -> MaskedLMCollator:
        return MaskedLMCollator(
            self.codec, self.mask_probability, fixed_seed=None if train else self.seed
        )
