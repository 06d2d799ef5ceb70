"""Source -> target pairs for the encoder-decoder (translation, summarisation): one shared
vocabulary, token-budget batches of similar lengths."""

from __future__ import annotations

from typing import Any, Literal

from datasets import Dataset
from torch.utils.data import DataLoader

from datamodules.base import TextDataModule
from datamodules.collators import Seq2SeqCollator
from datamodules.samplers import TokenBudgetBatchSampler
from datamodules.sources import DataError, Source
from datamodules.tokenization import TokenizerSpec

LongPairs = Literal["truncate", "drop"]


class Seq2SeqDataModule(TextDataModule):
    """Pairs from `source_column` and `target_column`. Batches hold up to `max_tokens` padded
    tokens in all (global: divided over devices and accumulation steps).

    long_pairs="truncate" (summarisation): sources are cut to `max_source_length` tokens and
    targets to `max_target_length` (their eos included); the run's data line says how many
    were; an empty source or target stops with its split and row. long_pairs="drop"
    (translation, as fairseq): training pairs that are empty or longer than that are left
    out, evaluation pairs are all kept whole.

    Evaluation examples carry their raw target text, so metrics score the detokenised output
    against the reference as written."""

    family = "encoder-decoder"

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        source_column: str = "document",
        target_column: str = "summary",
        max_source_length: int = 512,
        max_target_length: int = 128,
        long_pairs: LongPairs = "truncate",
        max_tokens: int = 4096,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, 0, num_workers, seed, cache_dir)
        for name, value in (
            ("max_source_length", max_source_length),
            ("max_target_length", max_target_length),
        ):
            if value < 2:
                raise ValueError(f"data.{name}={value} must be at least 2 tokens")
        self.source_column, self.target_column = source_column, target_column
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.long_pairs = long_pairs
        self.max_tokens = max_tokens

    def text_columns(self) -> list[str]:
        return [self.source_column, self.target_column]

    def languages(self) -> tuple[str, ...]:
        """The columns by the names `parallel` local files and the built-in numbers use."""
        return (self.source_column, self.target_column)

    def processing(self) -> dict[str, Any]:
        return {
            "pair": (self.source_column, self.target_column),
            "max_source_length": self.max_source_length,
            "max_target_length": self.max_target_length,
            "long_pairs": self.long_pairs,
            "references": 1,  # evaluation splits keep the raw target
        }

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        sources = self.codec.pieces(batch[self.source_column])
        targets = self.codec.pieces(batch[self.target_column])
        out: dict[str, list] = {"reference": batch[self.target_column]}
        if self.long_pairs == "drop":
            return {**out, "source_ids": sources, "target_ids": targets}
        source_room, target_room = self.max_source_length, self.max_target_length - 1  # eos
        out["source_cut"] = [len(s) > source_room for s in sources]
        out["target_cut"] = [len(t) > target_room for t in targets]
        out["source_ids"] = [s[:source_room] for s in sources]
        out["target_ids"] = [t[:target_room] for t in targets]
        return out

    def tokenize(self, split: str, data: Dataset) -> Dataset:
        if self.long_pairs == "truncate":
            self._check_rows(split, data)
        tokenized = super().tokenize(split, data)
        if split != "train":
            return tokenized
        tokenized = tokenized.remove_columns("reference")
        if self.long_pairs == "truncate":
            return tokenized
        source_limit, target_limit = self.max_source_length, self.max_target_length
        return tokenized.filter(
            lambda e: (
                0 < len(e["source_ids"]) <= source_limit and 0 < len(e["target_ids"]) < target_limit
            )
        )

    def _check_rows(self, split: str, data: Dataset) -> None:
        for column in self.text_columns():
            for start in range(0, len(data), 1000):
                for offset, text in enumerate(data[start : start + 1000][column]):
                    if not isinstance(text, str) or not text.strip():
                        raise DataError(
                            f"split {split!r}, row {start + offset}: column {column!r} is "
                            "empty; every example needs a source and a target (remove the "
                            "row or fill it in)"
                        )

    def truncated(self) -> dict[str, tuple[int, int]]:
        """(sources, targets) cut to their maximum length, per split."""
        if self.long_pairs != "truncate":
            return {}
        counts = {}
        for name in self.raw:
            data = self.split(name)
            counts[name] = (sum(data["source_cut"]), sum(data["target_cut"]))
        return counts

    def collator(self, train: bool = False) -> Seq2SeqCollator:
        return Seq2SeqCollator(self.codec)

    def batch_budget(self) -> int:
        _, world_size, accumulation = self.world
        return max(1, self.max_tokens // (world_size * accumulation))

    def make_loader(self, split: str, train: bool) -> DataLoader:
        data = self.split(split)
        # +1 for the bos/eos the collator adds on the target side
        lengths = [
            max(len(s), len(t) + 1)
            for s, t in zip(data["source_ids"], data["target_ids"], strict=True)
        ]
        rank, world_size, _ = self.world
        sampler = TokenBudgetBatchSampler(
            lengths,
            self.batch_budget(),
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            even=train,
        )
        return self.loader(data, sampler, train, self.collator(train))

    def references(self, split: str) -> list[str]:
        """The raw target texts, for scoring detokenised hypotheses."""
        return list(self.raw[split][self.target_column])

    def describe(self) -> str:
        text = super().describe()
        cut = {k: v for k, v in self.truncated().items() if any(v)}
        if not cut:
            return text
        counts = ", ".join(f"{name} {s:,}/{t:,}" for name, (s, t) in cut.items())
        return (
            f"{text}; sources/targets longer than {self.max_source_length}/"
            f"{self.max_target_length} tokens, cut: {counts}"
        )
