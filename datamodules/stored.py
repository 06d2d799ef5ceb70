"""Data modules whose tokenised splits live in the token store (datamodules.token_store)
instead of Arrow: the language-model data modules, whose corpora are large."""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset as TorchDataset

from datamodules.base import TextDataModule
from datamodules.preparation import Encoded, encode_in_parallel
from datamodules.sources import DataError, Source
from datamodules.token_store import (
    DEFAULT_SHARD_TOKENS,
    FORMAT_VERSION,
    StoreError,
    StoreSplit,
    check_store,
    open_store,
    write_manifest,
    write_split,
)
from datamodules.tokenization import TokenizerSpec


def flatten(encoded: dict[str, list[list[int]]], dtypes: dict[str, np.dtype]) -> Encoded:
    """Columns of rows (lists of ids) -> one flat array per column and the rows' lengths."""
    rows = next(iter(encoded.values()))
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    total = int(lengths.sum())
    columns = {
        name: np.fromiter(chain.from_iterable(encoded[name]), dtype, total)
        for name, dtype in dtypes.items()
    }
    return columns, lengths


class StoredTextDataModule(TextDataModule):
    """A data module whose tokenised splits live in the token store: `prepare_data` encodes
    the raw rows with every core (`num_proc` processes; None: all) into shards of
    `shard_tokens` tokens (layout only: not part of the cache key), `setup` maps them."""

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        num_proc: int | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        self.shard_tokens, self.num_proc = shard_tokens, num_proc
        self.stores: dict[str, StoreSplit] = {}

    def store_columns(self) -> dict[str, np.dtype]:
        """The stored columns and their item types."""
        raise NotImplementedError

    def encode_rows(self, batch: dict[str, list]) -> Encoded:
        return flatten(self.encode(batch), self.store_columns())

    def processing(self) -> dict[str, Any]:
        return {"store": FORMAT_VERSION}

    def write_cache(self, folder: Path) -> None:
        splits = {}
        for split, data in self.raw.items():
            rows = data.select_columns(self.text_columns())
            batches = encode_in_parallel(rows, self.encode_rows, self.num_proc, label=split)
            splits[split] = write_split(
                folder / split, batches, self.store_columns(), self.shard_tokens
            )
        write_manifest(
            folder, splits, vocab_size=self.codec.vocab_size, tokenizer=self.codec.digest
        )

    def cache_problem(self, folder: Path) -> str | None:
        try:
            check_store(folder, list(self.raw))
        except StoreError as error:
            return str(error)
        return None

    def load_cache(self, folder: Path) -> None:
        self.stores = open_store(folder, list(self.raw))

    def store(self, split: str) -> StoreSplit:
        self.setup()
        if split not in self.stores:
            raise DataError(f"source {self.source.describe()} has no {split!r} split")
        return self.stores[split]


class StoredRows(TorchDataset):
    """Row `i` of a stored split as lists of ids, one per column (as an Arrow row reads)."""

    def __init__(self, store: StoreSplit) -> None:
        self.store = store

    def __len__(self) -> int:
        return self.store.n_rows

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {name: column.tolist() for name, column in self.store.row(index).items()}
