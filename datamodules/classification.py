"""Labelled sentences (or sentence pairs) for sequence classification."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from datamodules.base import TextDataModule
from datamodules.collators import ClassificationCollator
from datamodules.sources import DataError, Source
from datamodules.tokenization import TokenizerSpec


class ClassificationDataModule(TextDataModule):
    """`text_column` (and optional `pair_column`) with integer labels in [0, num_classes);
    inputs are [CLS] text [SEP] (pair [SEP]), truncated to `max_length`. Splits whose labels
    are all -1 (hidden test labels, as in GLUE) are kept for prediction only."""

    family = "encoder"

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        num_classes: int = 2,
        text_column: str = "text",
        pair_column: str | None = None,
        label_column: str = "label",
        max_length: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        self.num_classes = num_classes
        self.text_column, self.pair_column, self.label_column = (
            text_column,
            pair_column,
            label_column,
        )
        self.max_length = max_length

    @property
    def label_names(self) -> list[str] | None:
        """The classes' names where the data set declares them (a `ClassLabel` column)."""
        feature = self.raw["train"].features.get(self.label_column)
        names = getattr(feature, "names", None)
        return list(names) if names and len(names) == self.num_classes else None

    def text_columns(self) -> list[str]:
        return [self.text_column] + ([self.pair_column] if self.pair_column else [])

    def required_columns(self) -> list[str]:
        return [*self.text_columns(), self.label_column]

    def processing(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "columns": self.required_columns(),
            "pair_truncation": "hf-longest-first",  # caches cut the old way are rebuilt
        }

    def tokenize(self, split: str, data: Dataset) -> Dataset:
        self._check_rows(split, data)
        return super().tokenize(split, data)

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        codec, room = self.codec, self.codec.room(self.max_length)
        first = codec.pieces(batch[self.text_column])
        out: dict[str, list] = {"label": batch[self.label_column]}
        if self.pair_column is None:
            out["input_ids"] = [codec.frame(ids[:room]) for ids in first]
            return out
        second = codec.pieces(batch[self.pair_column])
        out["input_ids"], out["token_type_ids"] = codec.encode_pairs(first, second, self.max_length)
        return out

    def _check_rows(self, split: str, data: Dataset) -> None:
        for column in self.text_columns():
            for row, text in enumerate(data[column]):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(
                        f"split {split!r}, row {row}: column {column!r} is empty or missing"
                    )
        labels = data[self.label_column]
        if all(label == -1 for label in labels):
            return  # hidden labels
        for row, label in enumerate(labels):
            if not isinstance(label, int) or not 0 <= label < self.num_classes:
                raise DataError(
                    f"split {split!r}, row {row}: label {label!r} is outside the configured "
                    f"classes 0..{self.num_classes - 1} (data.num_classes={self.num_classes})"
                )

    def collator(self, train: bool = False) -> ClassificationCollator:
        return ClassificationCollator(self.codec)
