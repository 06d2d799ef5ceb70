"""Text for language models: a packed token stream for causal LMs, masked chunks for MLM."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset
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
    """Documents, each ended by an end-of-text token, joined into one stream, cut into `block_size`
    windows; the training windows move by a random shift every epoch."""

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        block_size: int = 256,
        batch_size: int = 32,
        text_column: str = "text",
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        self.block_size, self.text_column = block_size, text_column
        self.streams: dict[str, np.ndarray] = {}

    def text_columns(self) -> list[str]:
        return [self.text_column]

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        eos = self.tokenizer.eos_id
        ids = self.tokenizer.encode_batch(batch[self.text_column])
        return {"ids": [np.asarray([*i, eos], np.int32) for i in ids]}

    def on_loaded(self) -> None:
        for split, data in self.splits.items():
            self.streams[split] = token_stream(data)
            if len(self.streams[split]) <= self.block_size:
                raise DataError(
                    f"split {split!r} of {self.source.describe()} has {len(self.streams[split])} "
                    f"tokens, fewer than one window of data.block_size={self.block_size} + 1"
                )

    def make_loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.streams:
            self.split(split)
        stream = self.streams[split]
        rank, world_size, _ = self.world
        sampler = WindowSampler(
            len(stream),
            self.block_size,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            even=train,
        )
        batches = BatchSampler(sampler, self.per_device_batch_size(), drop_last=train)
        return self.loader(TokenWindows(stream, self.block_size), batches, train)

    def describe(self) -> str:
        tokens = ", ".join(f"{k} {len(v):,} tokens" for k, v in self.streams.items())
        return (
            f"{self.source.describe()} ({tokens or 'not loaded'}; vocabulary {self.vocab_size:,})"
        )


class MaskedLMDataModule(TextDataModule):
    """Documents cut into chunks of up to `max_length` tokens ([CLS] chunk [SEP]), padded per
    batch; BERT masking is redrawn for every batch by the collator."""

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        max_length: int = 128,
        batch_size: int = 32,
        mask_probability: float = 0.15,
        text_column: str = "text",
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        self.max_length, self.text_column = max_length, text_column
        self.mask_probability = mask_probability

    def text_columns(self) -> list[str]:
        return [self.text_column]

    def processing(self) -> dict[str, Any]:
        return {"max_length": self.max_length}

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        bos, eos, size = self.tokenizer.bos_id, self.tokenizer.eos_id, self.max_length - 2
        chunks = []
        for ids in self.tokenizer.encode_batch(batch[self.text_column]):
            chunks += [[bos, *ids[i : i + size], eos] for i in range(0, len(ids), size)]
        return {"input_ids": chunks}

    def collator(self) -> MaskedLMCollator:
        if self.tokenizer.mask_id is None:
            raise DataError(f"tokenizer {self.tokenizer.source} has no mask token for MLM")
        return MaskedLMCollator(
            self.pad_id,
            self.tokenizer.mask_id,
            self.vocab_size,
            tuple(self.tokenizer.special_ids),
            self.mask_probability,
        )
