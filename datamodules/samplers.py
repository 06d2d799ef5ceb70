"""Samplers that shard across data-parallel ranks themselves (trainer presets set
`use_distributed_sampler: false`): every rank gets the same number of training batches, so
no rank waits forever in a gradient all-reduce."""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    """Indices 0..size-1, shuffled per epoch (seed + epoch), this rank's share.

    The order is a pure function of (seed, epoch): global position g of the epoch goes to
    rank g % world_size, so with a fixed global batch (per-device batch x devices x
    accumulation) every optimizer step takes the same indices whatever the device count.
    even=True (training) drops the remainder so every rank gets size // world_size indices;
    even=False (evaluation) keeps every index and lets the last ranks have one fewer.
    The order is kept as an array of 8 bytes per index (a list would take 36).
    """

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.even = rank, world_size, even
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> array[int]:
        order = array("q", range(self.size))
        if self.shuffle:  # the same permutation as shuffling a list
            random.Random(self.seed + self.epoch).shuffle(order)
        if self.even:
            order = order[: len(order) // self.world_size * self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order())

    def __len__(self) -> int:
        if self.even:
            return self.size // self.world_size
        return len(range(self.rank, self.size, self.world_size))


class WindowSampler(ShardedSampler):
    """Start offsets of `block`-long windows over a token stream of `n_tokens`.

    When shuffling, every epoch moves all window boundaries by a random shift in [0, block),
    so a model sees different cuts of the same text (nanoGPT samples random windows).
    """

    def __init__(self, n_tokens: int, block: int, shuffle: bool, **kwargs: int | bool) -> None:
        # windows need block + 1 tokens (inputs and next-token labels); keep room for a shift
        reserve = block + 1 if shuffle else 1
        n_windows = max(0, (n_tokens - reserve) // block)
        super().__init__(n_windows, shuffle, **kwargs)  # type: ignore[arg-type]
        self.block = block

    def __iter__(self) -> Iterator[int]:
        shift = (
            random.Random(self.seed - 1 - self.epoch).randrange(self.block) if self.shuffle else 0
        )
        return (shift + i * self.block for i in self._order())


MIX_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters neighbouring inputs."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class RandomWindowSampler(ShardedSampler):
    """nanoGPT's sampling: training windows at random starts, drawn with replacement. The start
    of global position g in an epoch is a hash of (seed, epoch, g), so nothing is kept per
    window and a resumed or re-sharded run draws the same windows. An epoch has as many
    windows as `WindowSampler`'s (about one pass over the tokens); ranks draw at disjoint
    positions, but with replacement two positions can land on the same window."""

    CHUNK = 1 << 16  # starts computed this many at a time

    def __init__(self, n_tokens: int, block: int, **kwargs: int | bool) -> None:
        n_windows = max(0, (n_tokens - block - 1) // block)
        super().__init__(n_windows, shuffle=True, **kwargs)  # type: ignore[arg-type]
        self.block, self.span = block, max(1, n_tokens - block)  # start + block + 1 <= n_tokens

    def starts(self, positions: np.ndarray) -> np.ndarray:
        """Window starts at these global positions of the current epoch."""
        key = mix64(np.array([self.seed & 0xFFFFFFFF, self.epoch], np.uint64) + MIX_GAMMA)
        with np.errstate(over="ignore"):
            state = (key[0] ^ (key[1] << np.uint64(1))) + positions.astype(np.uint64) * np.uint64(
                MIX_GAMMA
            )
        return (mix64(state) % np.uint64(self.span)).astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        total = len(self) * self.world_size  # even: every rank the same count
        for first in range(self.rank, total, self.CHUNK * self.world_size):
            stop = min(total, first + self.CHUNK * self.world_size)
            yield from self.starts(np.arange(first, stop, self.world_size)).tolist()


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """fairseq-style batches of similar-length examples under a token budget.

    Examples are sorted by length (ties broken at random per epoch), cut into batches whose
    padded size (longest length x count) stays within `max_tokens`, and the batches are
    shuffled and dealt to ranks; training keeps a multiple of world_size batches.
    """

    def __init__(
        self,
        lengths: list[int],
        max_tokens: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens={max_tokens} must be positive")
        self.lengths, self.max_tokens = lengths, max_tokens
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size, self.even = rank, world_size, even
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        ties = [rng.random() for _ in self.lengths] if self.shuffle else [0.0] * len(self.lengths)
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], ties[i]))
        batches: list[list[int]] = []
        batch: list[int] = []
        longest = 0
        for index in order:
            length = self.lengths[index]
            if batch and max(longest, length) * (len(batch) + 1) > self.max_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(index)
            longest = max(longest, length)
        if batch:
            batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        if self.even:
            batches = batches[: len(batches) // self.world_size * self.world_size]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


class ResumableBatches(Sampler[list[int]]):
    """Skips the batches of the current epoch that were trained before a resume.

    Lightning restarts a resumed epoch's loader from its first batch; `done()` says how many
    batches of this epoch the checkpoint had already seen (0 at a fresh epoch). The length
    stays the full epoch's, as Lightning keeps counting from the resumed batch index.
    """

    def __init__(self, batches: Sampler[list[int]], done: Callable[[], int]) -> None:
        self.batches, self.done = batches, done

    def set_epoch(self, epoch: int) -> None:
        for sampler in (self.batches, getattr(self.batches, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        return islice(iter(self.batches), self.done(), None)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]
