"""Text for language models, tokenised once into the token store (datamodules.token_store):
a token stream cut into windows for causal LMs, rows of [CLS] pieces [SEP] for masked LMs."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from itertools import chain, islice
from typing import Any, Literal

import numpy as np
import torch
from datasets import DatasetDict, IterableDataset
from tokenizers import Encoding
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader
from torch.utils.data import Dataset as TorchDataset

from datamodules.cache import cache_key
from datamodules.collators import MaskedLMCollator
from datamodules.preparation import Encoded
from datamodules.samplers import RandomWindowSampler, ShardedSampler, WindowSampler
from datamodules.sources import DataError, Source, fingerprint, load_streaming, require_columns
from datamodules.stored import StoredRows, StoredTextDataModule, flatten
from datamodules.streaming import StreamedWindows, StreamProgress, text_key
from datamodules.token_store import DEFAULT_SHARD_TOKENS, ShardedArray, token_dtype
from datamodules.tokenization import TokenizerSpec
from modules.codec import Codec


class TokenWindows(TorchDataset):
    """Windows of a token stream: item `start` is input_ids = stream[start : start+block]
    and labels = stream[start+1 : start+block+1] (labels are already shifted)."""

    def __init__(self, stream: np.ndarray | ShardedArray, block: int) -> None:
        self.stream, self.block = stream, block

    def __len__(self) -> int:
        return max(0, len(self.stream) - self.block - 1)

    def __getitem__(self, start: int) -> dict[str, Tensor]:
        window = torch.from_numpy(self.stream[start : start + self.block + 1].astype(np.int64))
        return {"input_ids": window[:-1], "labels": window[1:]}


@dataclass
class DocumentEncoder:
    """Documents -> their ids, each ended by the end-of-text id, as one flat array."""

    codec: Codec
    text_column: str
    dtype: np.dtype

    def documents(self, batch: dict[str, list]) -> list[list[int]]:
        return [self.codec.document(ids) for ids in self.codec.pieces(batch[self.text_column])]

    def __call__(self, batch: dict[str, list]) -> Encoded:
        return flatten({"ids": self.documents(batch)}, {"ids": self.dtype})


class CausalLMDataModule(StoredTextDataModule):
    """Documents, each ended by an end-of-text token, joined into one stream, cut into
    `max_length` windows.

    sampling: `shifted` (default) takes every non-overlapping window once per epoch, in a
    random order, all window boundaries moved by a random shift each epoch; `random` draws
    windows at random starts with replacement (nanoGPT's get_batch). Both are pure functions
    of (seed, epoch, global position), so a resumed run continues exactly and the windows of
    an optimizer step do not depend on the number of devices.

    With `source.streaming` the training split is read as a stream and tokenised while
    training, in document order (`sampling` does not apply; datamodules/streaming.py says
    what it costs); validation and test are stored."""

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
        sampling: Literal["shifted", "random"] = "shifted",
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        num_proc: int | None = None,
    ) -> None:
        super().__init__(
            source, tokenizer, batch_size, num_workers, seed, cache_dir, shard_tokens, num_proc
        )
        self.max_length, self.text_column, self.sampling = max_length, text_column, sampling
        self.progress = StreamProgress()

    def text_columns(self) -> list[str]:
        return [self.text_column]

    def store_columns(self) -> dict[str, np.dtype]:
        return {"ids": token_dtype(self.codec.vocab_size)}

    @cached_property
    def document_encoder(self) -> DocumentEncoder:
        return DocumentEncoder(self.codec, self.text_column, token_dtype(self.codec.vocab_size))

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        return {"ids": self.document_encoder.documents(batch)}

    def encode_rows(self, batch: dict[str, list]) -> Encoded:
        return self.document_encoder(batch)

    # --- streaming ----------------------------------------------------------------------------
    @cached_property
    def streamed(self) -> tuple[IterableDataset, DatasetDict, bool]:
        return load_streaming(self.source)

    @cached_property
    def raw(self) -> DatasetDict:
        """The raw splits; when streaming, only the evaluation splits (read into memory)."""
        if not self.source.streaming:
            return super().raw
        evaluation = self.streamed[1]
        require_columns(evaluation, self.required_columns(), self.source)
        return evaluation

    @cached_property
    def data_hash(self) -> str:
        if not self.source.streaming:
            return super().data_hash
        return cache_key("stream", asdict(self.source), fingerprint(self.raw, self.text_columns()))

    def training_texts(self) -> Iterator[str]:
        if not self.source.streaming:
            yield from super().training_texts()
            return
        limit = self.tokenizer_spec.max_training_texts
        if limit is None:
            raise DataError(
                "a streamed source trains its tokenizer on its first texts: set "
                "data.tokenizer.max_training_texts, or load one with data.tokenizer.path"
            )
        for row in islice(self.streamed[0], limit):
            if row[self.text_column]:
                yield row[self.text_column]

    def stream_loader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.max_steps < 0:
            raise DataError(
                "a streamed training split has no end: set trainer.max_steps (and an "
                "integer trainer.val_check_interval with check_val_every_n_epoch: null)"
            )
        rank, world_size, _ = self.world
        stream, evaluation, from_train = self.streamed
        held_out = frozenset(
            text_key(t) for t in evaluation["validation"][self.text_column] if from_train
        )
        windows = StreamedWindows(
            stream,
            self.document_encoder,
            self.text_column,
            self.max_length,
            self.per_device_batch_size(),
            rank,
            world_size,
            self.num_workers,
            held_out,
            copy.deepcopy(self.progress.state),
        )
        return DataLoader(
            windows,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.progress.record(batch)  # a streamed batch's reader position

    def state_dict(self) -> dict[str, Any]:
        """The stream positions of every rank (gathered: only rank 0 writes checkpoints)."""
        if not self.source.streaming:
            return {}
        ranks = [self.progress.state]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, self.progress.state)
        return {"stream": {"workers": max(1, self.num_workers), "ranks": ranks}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stream = state_dict.get("stream")
        if stream is None:
            return
        rank, world_size, _ = self.world
        workers = max(1, self.num_workers)
        if len(stream["ranks"]) != world_size or stream["workers"] != workers:
            raise DataError(
                f"the checkpoint's stream positions are for {len(stream['ranks'])} device(s) x "
                f"{stream['workers']} loader worker(s), this run has {world_size} x {workers}: "
                "resume a streamed run with the same trainer.devices and data.num_workers"
            )
        self.progress = StreamProgress(copy.deepcopy(stream["ranks"][rank]))

    @property
    def streams(self) -> dict[str, ShardedArray]:
        """The token stream of each split (memory-mapped)."""
        return {split: store.columns["ids"] for split, store in self.stores.items()}

    def on_loaded(self) -> None:
        for split, stream in self.streams.items():
            if len(stream) <= self.max_length:
                raise DataError(
                    f"split {split!r} of {self.source.describe()} has {len(stream)} "
                    f"tokens, fewer than one window of data.max_length={self.max_length} + 1"
                )

    def make_loader(self, split: str, train: bool) -> DataLoader:
        if train and self.source.streaming:
            return self.stream_loader()
        stream = self.store(split).columns["ids"]
        rank, world_size, _ = self.world
        shards = {"seed": self.seed, "rank": rank, "world_size": world_size}
        sampler: ShardedSampler
        if train and self.sampling == "random":
            sampler = RandomWindowSampler(len(stream), self.max_length, **shards)
        else:
            sampler = WindowSampler(
                len(stream), self.max_length, shuffle=train, even=train, **shards
            )
        batches = BatchSampler(sampler, self.per_device_batch_size(), drop_last=train)
        return self.loader(TokenWindows(stream, self.max_length), batches, train)

    def describe(self) -> str:
        tokens = ", ".join(f"{k} {len(v):,} tokens" for k, v in self.streams.items())
        if self.source.streaming:
            tokens = f"train streamed, {tokens}"
        return (
            f"{self.source.describe()} ({tokens or 'not loaded'}; "
            f"vocabulary {self.codec.vocab_size:,})"
        )


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


class MaskedLMDataModule(StoredTextDataModule):
    """Rows of text as [CLS] pieces [SEP] sequences of up to `max_length` tokens, padded per
    batch. A row longer than a sequence is cut into full pieces.

    pack: rows are packed together into sequences, [CLS] row [SEP] row [SEP] ..., whole rows
    only (a row that does not fit in what is left starts the next sequence), so sequences are
    nearly full and short rows (sentences) share one. [SEP] always ends a row, so packing
    never runs two rows (documents) into each other. Rows are packed within each batch of
    1,000 rows that preparation encodes at once (preparation.ROWS_PER_BATCH).
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
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        num_proc: int | None = None,
    ) -> None:
        super().__init__(
            source, tokenizer, batch_size, num_workers, seed, cache_dir, shard_tokens, num_proc
        )
        if max_length < 3:
            raise ValueError(f"data.max_length={max_length} leaves no room between [CLS] and [SEP]")
        self.max_length, self.text_column = max_length, text_column
        self.mask_probability = mask_probability
        self.whole_word_masking, self.pack = whole_word_masking, pack

    def text_columns(self) -> list[str]:
        return [self.text_column]

    def processing(self) -> dict[str, Any]:
        return {
            **super().processing(),
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

    def store_columns(self) -> dict[str, np.dtype]:
        columns = {"input_ids": token_dtype(self.codec.vocab_size)}
        if self.whole_word_masking:
            columns["word_starts"] = np.dtype(np.uint8)
        return columns

    def make_loader(self, split: str, train: bool) -> DataLoader:
        rows = StoredRows(self.store(split))
        rank, world_size, _ = self.world
        examples = ShardedSampler(len(rows), train, self.seed, rank, world_size, even=train)
        batches = BatchSampler(examples, self.per_device_batch_size(), drop_last=train)
        return self.loader(rows, batches, train, self.collator(train))

    def describe(self) -> str:
        rows = ", ".join(f"{k} {v.n_rows:,} rows" for k, v in self.stores.items())
        vocabulary = self.codec.vocab_size
        return f"{self.source.describe()} ({rows or 'not loaded'}; vocabulary {vocabulary:,})"

    def collator(self, train: bool) -> MaskedLMCollator:
        return MaskedLMCollator(
            self.codec, self.mask_probability, fixed_seed=None if train else self.seed
        )
