"""The data module all tasks share: raw source -> tokenizer -> tokenised Arrow cache -> loaders.

`prepare_data` (one process per node) tokenises into a cache folder keyed by the content hash
of the raw data, the tokenizer and the processing parameters, written atomically; `setup`
(every process) only loads from there. The `codec` (tokenizer plus the family's template) is a
property, so the CLI can link it into the task when it instantiates both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
from datasets import Dataset, DatasetDict
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Sampler

from datamodules.cache import atomic_folder, cache_key, default_cache_dir, remove_folder
from datamodules.samplers import ResumableBatches, ShardedSampler
from datamodules.sources import DataError, Source, fingerprint, load_source, require_columns
from datamodules.tokenization import TokenizerSpec, build_tokenizer
from modules.codec import Codec, Family
from modules.lightning_compat import batches_done_this_epoch

SPLITS = ("train", "validation", "test")


class TextDataModule(L.LightningDataModule):
    """Subclasses name their model family and text columns and turn a raw split into token
    columns (through the codec)."""

    family: Family

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.tokenizer_spec = tokenizer
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.splits: dict[str, Dataset] = {}
        self.loaded = False

    # --- what a subclass provides -------------------------------------------------------
    def text_columns(self) -> list[str]:
        raise NotImplementedError

    def required_columns(self) -> list[str]:
        return self.text_columns()

    def languages(self) -> tuple[str, ...]:
        return ()

    def processing(self) -> dict[str, Any]:
        """Parameters that change the tokenised data (part of the cache key)."""
        return {}

    def sequence_lengths(self) -> dict[str, int]:
        """The longest sequence the model gets, by the setting that bounds it (checked against
        the model's position table before anything runs)."""
        max_length = getattr(self, "max_length", None)
        return {} if max_length is None else {"data.init_args.max_length": max_length}

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        """Raw columns of a batch of rows -> token columns."""
        raise NotImplementedError

    def tokenize(self, split: str, data: Dataset) -> Dataset:
        return data.map(
            self.encode,
            batched=True,
            remove_columns=data.column_names,
            # our own key (data, tokenizer, processing), not a hash of the closure: datasets
            # reuses a cached map of the same fingerprint, so it must change with any of them
            new_fingerprint=f"{split}-{self.cache_folder.name}",
        )

    # --- raw data and tokenizer -----------------------------------------------------------
    @cached_property
    def raw(self) -> DatasetDict:
        data = load_source(self.source, self.cache_dir, self.languages())
        require_columns(data, self.required_columns(), self.source)
        return data

    @cached_property
    def data_hash(self) -> str:
        return fingerprint(self.raw, self.required_columns())

    def training_texts(self) -> Iterator[str]:
        train = self.raw["train"]
        limit = self.tokenizer_spec.max_training_texts
        if limit is not None:
            train = train.select(range(min(limit, len(train))))
        for column in self.text_columns():
            for start in range(0, len(train), 1000):
                yield from (t for t in train[start : start + 1000][column] if t)

    @cached_property
    def codec(self) -> Codec:
        tokenizer, source = build_tokenizer(
            self.tokenizer_spec, self.training_texts, self.data_hash, self.cache_dir
        )
        return Codec(tokenizer, self.family, source)

    # --- tokenised cache ------------------------------------------------------------------
    @cached_property
    def cache_folder(self) -> Path:
        key = cache_key(
            type(self).__name__,
            self.source.describe(),
            self.data_hash,
            self.codec.digest,
            self.processing(),
        )
        return self.cache_dir / "data" / key

    def prepare_data(self) -> None:
        folder = self.cache_folder
        if folder.exists():
            problem = self.cache_problem(folder)
            if problem is None:
                return
            warnings.warn(
                f"tokenised data cache {folder} is damaged ({problem}); rebuilding it", stacklevel=2
            )
            remove_folder(folder)
        with atomic_folder(folder) as tmp:
            self.write_cache(tmp)

    def write_cache(self, folder: Path) -> None:
        """Tokenise every raw split into `folder` (temporary: renamed when this returns)."""
        for split, data in self.raw.items():
            self.tokenize(split, data).save_to_disk(str(folder / split))

    def cache_problem(self, folder: Path) -> str | None:
        """Why the cache in `folder` cannot be read (None: it is complete)."""
        try:
            for split in self.raw:
                Dataset.load_from_disk(str(folder / split))
        except Exception as error:
            return str(error)
        return None

    def load_cache(self, folder: Path) -> None:
        for split in self.raw:
            self.splits[split] = Dataset.load_from_disk(str(folder / split))

    def prepares_data(self) -> bool:
        """Whether this process may write the cache: Lightning runs `prepare_data` on local
        rank 0 of each node (global rank 0 with prepare_data_per_node=False), then lets the
        other ranks set up; they only read what it wrote."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return True
        return (trainer.local_rank if self.prepare_data_per_node else trainer.global_rank) == 0

    def setup(self, stage: str | None = None) -> None:
        if self.loaded:
            return
        folder = self.cache_folder
        if self.prepares_data():
            self.prepare_data()  # a no-op when prepare_data has run
        else:
            problem = self.cache_problem(folder) if folder.exists() else "it does not exist"
            if problem is not None:
                raise DataError(
                    f"rank {self.world[0]} finds no complete tokenised data at {folder} "
                    f"({problem}); the preparing rank did not write it there. Run "
                    "`tsuite prepare` with the same config first, or put the cache "
                    "(TSUITE_CACHE) on a filesystem every node shares"
                )
        self.load_cache(folder)
        self.loaded = True
        self.on_loaded()

    def on_loaded(self) -> None:
        """Hook for subclasses after `setup` has loaded the tokenised splits."""

    # --- loaders ---------------------------------------------------------------------------
    @property
    def world(self) -> tuple[int, int, int]:
        """(rank, world size, gradient accumulation) of the attached trainer."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1, 1
        return trainer.global_rank, trainer.world_size, trainer.accumulate_grad_batches

    def per_device_batch_size(self) -> int:
        _, world_size, accumulation = self.world
        if self.batch_size % (world_size * accumulation):
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch size and must divide by "
                f"devices x accumulate_grad_batches = {world_size} x {accumulation}"
            )
        return self.batch_size // (world_size * accumulation)

    def split(self, name: str) -> Dataset:
        self.setup()
        if name not in self.splits:
            raise DataError(f"source {self.source.describe()} has no {name!r} split")
        return self.splits[name]

    def loader(
        self,
        dataset: Any,
        batches: Sampler[list[int]],
        train: bool,
        collate_fn: Callable[[list[Any]], dict[str, Tensor]] | None = None,
    ) -> DataLoader:
        if train:
            batches = ResumableBatches(batches, self.batches_done_this_epoch)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def batches_done_this_epoch(self) -> int:
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        return batches_done_this_epoch(trainer)

    def collator(self, train: bool) -> Callable[[list[dict[str, Any]]], dict[str, Tensor]]:
        """Examples -> a batch dict; `train` for the training loader (random masking)."""
        raise NotImplementedError

    def make_loader(self, split: str, train: bool) -> DataLoader:
        """Shuffled (training) or ordered examples, this rank's share, padded per batch."""
        data = self.split(split)
        rank, world_size, _ = self.world
        examples = ShardedSampler(len(data), train, self.seed, rank, world_size, even=train)
        batches = BatchSampler(examples, self.per_device_batch_size(), drop_last=train)
        return self.loader(data, batches, train, self.collator(train))

    def train_dataloader(self) -> DataLoader:
        return self.make_loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.make_loader("test", train=False)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.raw.items())
        return f"{self.source.describe()} ({sizes}; vocabulary {self.codec.vocab_size:,})"
