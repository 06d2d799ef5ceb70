"""Text for permutation LM (XLNet): the masked-LM rows ([CLS] pieces [SEP], packed or not) with
a collator that picks the targets and samples a factorisation order instead of masking."""

from __future__ import annotations

import zlib
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch

from datamodules.language_modeling import MaskedLMDataModule
from datamodules.sources import Source
from datamodules.token_store import DEFAULT_SHARD_TOKENS
from datamodules.tokenization import TokenizerSpec
from modules.batch import PermutationLMBatch
from modules.codec import IGNORE, Codec, pad_rows


def span_targets(eligible: list[bool], draws: list[float], k: int, max_span: int) -> list[int]:
    """The target positions of one row, after XLNet's `_sample_mask` (its data_utils.py, less
    its alignment of spans to word starts): left to right, a span of n tokens (n in
    1..max_span with probability proportional to 1/n) placed at random within the next n * k
    tokens, so about one token in k is a target.
    Positions that are not `eligible` (special tokens, padding) are never targets. `draws`:
    uniform numbers in [0, 1), two per span (2 * len(eligible) are always enough)."""
    weights = list(accumulate(1 / n for n in range(1, max_span + 1)))
    cumulative = [w / weights[-1] for w in weights]
    targets: list[int] = []
    length, begin, i = len(eligible), 0, 0
    while begin < length:
        n = min(1 + bisect_right(cumulative, draws[i]), max_span)
        context = n * (k - 1)
        left = int(draws[i + 1] * (context + 1))
        start = begin + left
        targets.extend(p for p in range(start, min(start + n, length)) if eligible[p])
        begin, i = start + n + context - left, i + 2
    return targets


def check_targets(k: int, max_span: int) -> None:
    if k < 1:
        raise ValueError(f"data.partial_prediction_k={k}: one token in k is a target, k >= 1")
    if max_span < 1:
        raise ValueError(f"data.max_span={max_span}: a span has at least one token")


@dataclass
class PermutationLMCollator:
    """XLNet's partial prediction (Yang et al. 2019, section 2.3): about one real, non-special
    token in `k` is a target (`span_targets`), the targets are ranked in a random
    factorisation order (1, 2, ...) and every other token ranks 0: it is context that the
    others see and that sees no target. The input keeps the real tokens.

    The targets and the order are a pure function of the batch's tokens and `seed`: every
    training batch gets its own (each epoch puts rows into other batches), every validation
    the same ones, so evaluations compare, and a resumed run or a loader worker draws exactly
    what an uninterrupted run draws; the global random state is left alone."""

    codec: Codec
    k: int = 6
    max_span: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_targets(self.k, self.max_span)
        self.special_ids = torch.tensor(self.codec.special_ids)

    def __call__(self, examples: list[dict[str, Any]]) -> PermutationLMBatch:
        input_ids, mask = self.codec.pad([e["input_ids"] for e in examples])
        seed = zlib.crc32(input_ids.numpy().tobytes(), self.seed & 0xFFFFFFFF)
        generator = torch.Generator().manual_seed(seed)
        batch, length = input_ids.shape
        span_draws = torch.rand(batch, 2 * length, generator=generator).tolist()
        order_draws = torch.rand(batch, length, generator=generator)
        eligible = (mask == 1) & ~torch.isin(input_ids, self.special_ids)
        eligible[:, 0] = False  # [CLS]; the filler slots of target_positions point at it
        positions = [
            span_targets(row, draws, self.k, self.max_span)
            for row, draws in zip(eligible.tolist(), span_draws, strict=True)
        ]
        target = torch.zeros(batch, length, dtype=torch.bool)
        rows = [row for row, found in enumerate(positions) for _ in found]
        target[rows, [p for found in positions for p in found]] = True
        # non-targets first (key -1), the targets after them in a random order
        place = order_draws.masked_fill(~target, -1.0).argsort(1).argsort(1)
        first = length - target.sum(1, keepdim=True)
        ranks = torch.where(target, place - first + 1, 0)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": input_ids.masked_fill(~target, IGNORE),
            "ranks": ranks,
            "target_positions": pad_rows(positions, 0),
        }


class PermutationLMDataModule(MaskedLMDataModule):
    """The rows of `MaskedLMDataModule` ([CLS] pieces [SEP] of up to `max_length` tokens;
    `pack` joins whole rows into full sequences) with XLNet's targets and factorisation orders
    (`PermutationLMCollator`: about one token in `partial_prediction_k` is a target, in spans
    of 1 to `max_span` tokens) instead of BERT's masking. The token store is the one a masked-LM
    run of the same data and tokenizer prepares."""

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        max_length: int = 128,
        batch_size: int = 32,
        partial_prediction_k: int = 6,
        max_span: int = 5,
        pack: bool = False,
        text_column: str = "text",
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        num_proc: int | None = None,
    ) -> None:
        super().__init__(
            source,
            tokenizer,
            max_length,
            batch_size,
            pack=pack,
            text_column=text_column,
            num_workers=num_workers,
            seed=seed,
            cache_dir=cache_dir,
            shard_tokens=shard_tokens,
            num_proc=num_proc,
        )
        check_targets(partial_prediction_k, max_span)
        self.partial_prediction_k, self.max_span = partial_prediction_k, max_span

    def collator(self, train: bool) -> PermutationLMCollator:  # type: ignore[override]
        return PermutationLMCollator(
            self.codec, self.partial_prediction_k, self.max_span, self.seed
        )
