"""Causal-LM training windows read from a `datasets` stream (`source.streaming: true`), for
corpora larger than the local disk, with the batch contract of the token store.

Every rank's data-loader workers are readers: reader k of R = devices x max(1, num_workers)
reads its part of the stream (`split_dataset_by_node`: whole files when their number divides
by R, else every R-th row), tokenises rows on the fly and cuts its token stream into
consecutive `block`-long windows, a whole batch at a time. Each batch carries its reader's
position (the stream's own `state_dict` before the rows it is in, and the tokens of those
rows already used), which the data module records as the batch is trained and saves in
checkpoints, so a resumed run continues with exactly the next batch. The stream never
ends: after its last row it starts the next epoch, and `max_steps` ends training.

What it costs, against the token store (`prepare_data` / `tsuite prepare`):
- every rank tokenises its share while training, in its loader workers: the store
  tokenises once, with every core, and later runs only map files;
- the shuffle is only the stream's: `datasets` reorders the source's files each epoch, and
  windows follow the document order inside them (no shuffle buffer: a resume would lose
  its contents, so it could not continue exactly), where the store draws every window of
  the corpus in a random order;
- the order depends on devices x workers (each reader has its own part), and changing
  either cannot resume a checkpoint; epochs have no known length;
- the validation split is read once and kept in the store (`source.validation_rows`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import IterableDataset as TorchIterableDataset
from torch.utils.data import get_worker_info

from datamodules.sources import DataError

STATE_KEY = "stream_state"  # the batch key of the reader position, removed before the step
ROWS_PER_READ = 256


def text_key(text: str) -> bytes:
    """The identity of a row's text (validation rows are left out of training by it)."""
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


class StreamedWindows(TorchIterableDataset):
    """Batches {"input_ids", "labels", STATE_KEY} of `batch_size` windows of `block` tokens
    from this rank's readers (one per loader worker). `resume`: a rank's recorded progress,
    {"batches": batches trained, "readers": {reader: position}}."""

    def __init__(
        self,
        stream: IterableDataset,
        encode: Callable[[dict[str, list]], tuple[dict[str, np.ndarray], np.ndarray]],
        text_column: str,
        block: int,
        batch_size: int,
        rank: int,
        world_size: int,
        workers: int,
        held_out: frozenset[bytes] = frozenset(),
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.stream, self.encode, self.text_column = stream, encode, text_column
        self.block, self.batch_size = block, batch_size
        self.rank, self.world_size, self.workers = rank, world_size, max(1, workers)
        self.held_out, self.resume = held_out, resume or {"batches": 0, "readers": {}}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if (info.num_workers if info else 1) != self.workers:
            raise RuntimeError(f"StreamedWindows was made for {self.workers} loader workers")
        if info is not None:
            import fsspec  # forked workers must not share the parent's event-loop lock

            fsspec.asyn.reset_lock()
        # The DataLoader takes batch i from worker i % workers, starting again at worker 0
        # after a resume: the reader whose batch comes next goes to worker 0.
        worker = info.id if info else 0
        reader = (worker + self.resume["batches"]) % self.workers
        stream = split_dataset_by_node(
            self.stream,
            rank=self.rank * self.workers + reader,
            world_size=self.world_size * self.workers,
        )
        return self.read(stream, reader, self.resume["readers"].get(reader))

    def read(
        self, stream: IterableDataset, reader: int, position: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        position = position or {"epoch": 0, "rows": None, "skip": 0}
        epoch, rows, skip = position["epoch"], position["rows"], position["skip"]
        size = self.batch_size * self.block  # tokens a batch uses; it reads one more
        chunks: deque[tuple[dict[str, Any], np.ndarray]] = deque()  # (where its rows begin, ids)
        used = 0  # tokens of chunks[0] already in batches
        available = 0
        while True:
            stream.set_epoch(epoch)
            if rows is not None:
                stream.load_state_dict(rows)
            start: dict[str, Any] = {"epoch": epoch, "rows": rows}
            read_any = False
            for batch in stream.iter(batch_size=ROWS_PER_READ):
                read_any = True
                texts = [t for t in batch[self.text_column] if text_key(t) not in self.held_out]
                if texts:
                    chunks.append((start, self.encode({self.text_column: texts})[0]["ids"]))
                start = {"epoch": epoch, "rows": stream.state_dict()}
                if not texts:
                    continue
                ids = chunks[-1][1]
                available += len(ids) - skip
                used, skip = used + skip, 0
                while available > size:
                    window, used = self._take(chunks, used, size + 1), used + size
                    available -= size
                    while used >= len(chunks[0][1]):
                        used -= len(chunks.popleft()[1])
                    where = {**chunks[0][0], "skip": used}
                    yield self._batch(window, {"reader": reader, **where})
            if not read_any:
                raise DataError(
                    f"stream reader {reader} of rank {self.rank} got no rows: the stream has "
                    f"fewer rows than devices x loader workers = {self.world_size * self.workers}"
                )
            epoch, rows = epoch + 1, None

    @staticmethod
    def _take(chunks: deque[tuple[dict[str, Any], np.ndarray]], used: int, n: int) -> np.ndarray:
        """The next `n` tokens, from position `used` of the first chunk on."""
        pieces, need = [], n
        for index, (_, ids) in enumerate(chunks):
            piece = ids[used if index == 0 else 0 :][:need]
            pieces.append(piece)
            need -= len(piece)
            if need == 0:
                break
        return np.concatenate(pieces)

    def _batch(self, tokens: np.ndarray, position: dict[str, Any]) -> dict[str, Any]:
        starts = np.arange(self.batch_size)[:, None] * self.block
        windows = torch.from_numpy(tokens[starts + np.arange(self.block + 1)].astype(np.int64))
        return {
            "input_ids": windows[:, :-1].contiguous(),
            "labels": windows[:, 1:].contiguous(),
            STATE_KEY: position,
        }


class StreamProgress:
    """What a rank has trained of its stream, recorded from each batch as it is trained."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state: dict[str, Any] = state or {"batches": 0, "readers": {}}

    def record(self, batch: Any) -> Any:
        """The batch without its STATE_KEY, which goes into the record."""
        if isinstance(batch, dict) and STATE_KEY in batch:
            position = dict(batch.pop(STATE_KEY))
            self.state["readers"][position.pop("reader")] = position
            self.state["batches"] += 1
        return batch
