"""Parallel text for the encoder-decoder: one shared vocabulary, token-budget batches."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from torch.utils.data import DataLoader

from datamodules.base import TextDataModule
from datamodules.collators import Seq2SeqCollator
from datamodules.samplers import TokenBudgetBatchSampler
from datamodules.sources import Source
from datamodules.tokenization import TokenizerSpec


class TranslationDataModule(TextDataModule):
    """Pairs from columns named by language (`en`, `de`, ...; hub `translation` dicts are
    flattened to the same). Batches hold up to `max_tokens` padded tokens in all (global:
    divided over devices and accumulation steps); training pairs longer than `max_length`
    tokens on either side are dropped, evaluation pairs are all kept."""

    family = "encoder-decoder"

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        source_lang: str = "en",
        target_lang: str = "de",
        max_tokens: int = 4096,
        max_length: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, 0, num_workers, seed, cache_dir)
        self.source_lang, self.target_lang = source_lang, target_lang
        self.max_tokens, self.max_length = max_tokens, max_length

    def text_columns(self) -> list[str]:
        return [self.source_lang, self.target_lang]

    def languages(self) -> tuple[str, ...]:
        return (self.source_lang, self.target_lang)

    def processing(self) -> dict[str, Any]:
        return {"pair": self.languages(), "max_length": self.max_length}

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        return {
            "source_ids": self.codec.pieces(batch[self.source_lang]),
            "target_ids": self.codec.pieces(batch[self.target_lang]),
        }

    def tokenize(self, split: str, data: Dataset) -> Dataset:
        tokenized = super().tokenize(split, data)
        if split != "train":
            return tokenized
        limit = self.max_length
        return tokenized.filter(
            lambda e: 0 < len(e["source_ids"]) <= limit and 0 < len(e["target_ids"]) < limit
        )

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
        """The raw target sentences, for scoring detokenised hypotheses."""
        return list(self.raw[split][self.target_lang])
