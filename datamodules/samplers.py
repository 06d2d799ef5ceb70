"""Samplers that shard across data-parallel ranks themselves (trainer presets set
`use_distributed_sampler: false`): every rank gets the same number of training batches, so
no rank waits forever in a gradient all-reduce."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import islice

from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    """Indices 0..size-1, shuffled per epoch (seed + epoch), this rank's share.

    even=True (training) drops the remainder so every rank gets size // world_size indices;
    even=False (evaluation) keeps every index and lets the last ranks have one fewer.
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

    def _order(self) -> list[int]:
        order = list(range(self.size))
        if self.shuffle:
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
