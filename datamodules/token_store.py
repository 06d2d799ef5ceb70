"""Token shards on disk, the store of the language-model data modules (nanoGPT's and llm.c's
flat token files): every split is one sequence of tokens, cut into shard files of about
`shard_tokens` each, with the row (document) boundaries in an offsets file.

A file is a 64-byte header (magic, format version, bytes per item, item count) and the items
(uint16 token ids when the vocabulary fits in 16 bits, else uint32; uint64 offsets; uint8
flags such as word starts). `manifest.json`, written last, lists every split, column and
shard. A store is written inside a temporary folder that is renamed when complete
(`cache.atomic_folder`); `check_store` finds a missing, damaged or truncated file from the
headers and file sizes alone, so a store is validated in milliseconds whatever its size.

Readers map the files read-only (`np.memmap`): nothing proportional to the corpus is read
into process memory, and every process and data-loader worker on a machine shares one
page-cache copy.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

FORMAT_VERSION = 1
MAGIC = b"TSTOKENS"
HEADER = struct.Struct("<8sIIQ")  # magic, format version, bytes per item, item count
HEADER_BYTES = 64  # items start here, aligned for every item type
MANIFEST = "manifest.json"
OFFSETS = "offsets"  # the column of row boundaries: rows + 1 uint64 positions
DEFAULT_SHARD_TOKENS = 100_000_000


class StoreError(ValueError):
    """A store that is missing, partial or damaged: rebuild it, never read it."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def shard_name(column: str, index: int) -> str:
    return f"{column}-{index:05d}.bin"


# --- one file ------------------------------------------------------------------------------
class ArrayFile:
    """Appends items to one file; the header's count is written on `close`, so a file whose
    writer died keeps count 0 and fails `read_header`'s size check."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.file.write(self._header(0))

    def _header(self, count: int) -> bytes:
        return HEADER.pack(MAGIC, FORMAT_VERSION, self.dtype.itemsize, count).ljust(
            HEADER_BYTES, b"\0"
        )

    def append(self, items: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(items, self.dtype).tobytes())
        self.count += len(items)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header(self.count))
        self.file.close()


def read_header(path: Path, dtype: np.dtype, count: int) -> None:
    """Raise StoreError unless `path` holds exactly `count` items of `dtype`."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_BYTES)
        size = path.stat().st_size
    except OSError as error:
        raise StoreError(f"{path}: {error.strerror or error}") from error
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise StoreError(f"{path} has no token-store header")
    _, version, itemsize, stored = HEADER.unpack_from(head)
    if version != FORMAT_VERSION:
        raise StoreError(f"{path} is format version {version}, not {FORMAT_VERSION}")
    if itemsize != np.dtype(dtype).itemsize or stored != count:
        raise StoreError(
            f"{path} holds {stored} items of {itemsize} bytes; the manifest says {count} of "
            f"{np.dtype(dtype).itemsize}"
        )
    if size != HEADER_BYTES + count * itemsize:
        raise StoreError(f"{path} is {size} bytes, not {HEADER_BYTES + count * itemsize}")


def map_file(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """The items of one file, memory-mapped read-only (an empty file maps to an empty array)."""
    if count == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))


# --- reading -------------------------------------------------------------------------------
class ShardedArray:
    """One column of a split: its shard files read as one array of `len(self)` items.
    Slices within a shard are views of the memory map; a slice across shards is a copy of
    its items. Maps open lazily in each process; pickling (for spawned loader workers)
    carries only the paths."""

    def __init__(self, paths: list[Path], counts: list[int], dtype: np.dtype) -> None:
        self.paths, self.counts, self.dtype = paths, counts, np.dtype(dtype)
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._maps: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def maps(self) -> list[np.ndarray]:
        if self._maps is None:
            self._maps = [
                map_file(p, self.dtype, c) for p, c in zip(self.paths, self.counts, strict=True)
            ]
        return self._maps

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise IndexError("a ShardedArray takes contiguous slices only")
        if stop <= start:
            return np.zeros(0, self.dtype)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop, side="left")) - 1
        if first == last:
            offset = self.starts[first]
            return self.maps[first][start - offset : stop - offset]
        pieces = []
        for i in range(first, last + 1):
            offset, end = self.starts[i], self.starts[i + 1]
            pieces.append(self.maps[i][max(start, offset) - offset : min(stop, end) - offset])
        return np.concatenate(pieces)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}


@dataclass
class StoreSplit:
    """One split: token columns of equal length and the rows' [start, end) boundaries."""

    columns: dict[str, ShardedArray]
    offsets: ShardedArray

    @property
    def n_tokens(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def n_rows(self) -> int:
        return len(self.offsets) - 1

    def row(self, index: int) -> dict[str, np.ndarray]:
        start, end = (int(x) for x in self.offsets[index : index + 2])
        return {name: column[start:end] for name, column in self.columns.items()}


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StoreError(f"{path} is missing or unreadable ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise StoreError(f"{path} is not a format-{FORMAT_VERSION} token-store manifest")
    return manifest


def check_store(folder: Path, splits: list[str]) -> dict[str, Any]:
    """The manifest of a complete store with (at least) these splits; StoreError names the
    first missing, damaged or truncated file."""
    manifest = read_manifest(folder)
    for split in splits:
        entry = manifest["splits"].get(split)
        if entry is None:
            raise StoreError(f"{folder / MANIFEST} lists no split {split!r}")
        for column, dtype in entry["columns"].items():
            for index, count in enumerate(entry["shards"]):
                read_header(folder / split / shard_name(column, index), np.dtype(dtype), count)
        read_header(folder / split / shard_name(OFFSETS, 0), np.dtype(np.uint64), entry["rows"] + 1)
    return manifest


def open_store(folder: Path, splits: list[str]) -> dict[str, StoreSplit]:
    """Every split of a complete store, memory-mapped (see `check_store`)."""
    manifest = check_store(folder, splits)
    out = {}
    for split in splits:
        entry = manifest["splits"][split]
        counts = entry["shards"]
        columns = {
            column: ShardedArray(
                [folder / split / shard_name(column, i) for i in range(len(counts))],
                counts,
                np.dtype(dtype),
            )
            for column, dtype in entry["columns"].items()
        }
        offsets = ShardedArray(
            [folder / split / shard_name(OFFSETS, 0)], [entry["rows"] + 1], np.dtype(np.uint64)
        )
        out[split] = StoreSplit(columns, offsets)
    return out


def store_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- writing -------------------------------------------------------------------------------
class SplitWriter:
    """Writes one split: `add` takes the flat columns of a batch of rows and their lengths;
    shards are cut every `shard_tokens` tokens (a row may run on into the next shard)."""

    def __init__(
        self, folder: Path, columns: dict[str, np.dtype], shard_tokens: int = DEFAULT_SHARD_TOKENS
    ) -> None:
        if shard_tokens <= 0:
            raise ValueError(f"shard_tokens={shard_tokens} must be positive")
        self.folder, self.dtypes, self.shard_tokens = folder, columns, shard_tokens
        folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[int] = []
        self.files: dict[str, ArrayFile] = {}
        self.offsets = ArrayFile(folder / shard_name(OFFSETS, 0), np.dtype(np.uint64))
        self.offsets.append(np.zeros(1, np.uint64))
        self.tokens = 0

    def _open_shard(self) -> None:
        index = len(self.shards)
        self.files = {
            name: ArrayFile(self.folder / shard_name(name, index), dtype)
            for name, dtype in self.dtypes.items()
        }
        self.shards.append(0)

    def _close_shard(self) -> None:
        for file in self.files.values():
            file.close()
        self.files = {}

    def add(self, columns: dict[str, np.ndarray], lengths: np.ndarray) -> None:
        n = int(lengths.sum())
        if any(len(c) != n for c in columns.values()) or set(columns) != set(self.dtypes):
            raise ValueError(
                f"columns {sorted(columns)} must be {sorted(self.dtypes)}, each {n} items long"
            )
        self.offsets.append(self.tokens + np.cumsum(lengths, dtype=np.uint64))
        done = 0
        while done < n:
            if not self.files or self.shards[-1] == self.shard_tokens:
                self._close_shard()
                self._open_shard()
            take = min(n - done, self.shard_tokens - self.shards[-1])
            for name, file in self.files.items():
                file.append(columns[name][done : done + take])
            self.shards[-1] += take
            done += take
        self.tokens += n

    def close(self) -> dict[str, Any]:
        """Finish the files; the split's manifest entry."""
        if not self.shards:
            self._open_shard()  # an empty split still has its (empty) shard files
        self._close_shard()
        self.offsets.close()
        return {
            "tokens": self.tokens,
            "rows": self.offsets.count - 1,
            "shards": self.shards,
            "columns": {name: dtype.name for name, dtype in self.dtypes.items()},
        }


def write_manifest(folder: Path, splits: dict[str, dict[str, Any]], **facts: Any) -> None:
    manifest = {"format": FORMAT_VERSION, **facts, "splits": splits}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def write_split(
    folder: Path,
    batches: Iterator[tuple[dict[str, np.ndarray], np.ndarray]],
    columns: dict[str, np.dtype],
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> dict[str, Any]:
    """Write encoded batches (flat columns, row lengths) as one split; its manifest entry."""
    writer = SplitWriter(folder, columns, shard_tokens)
    for batch_columns, lengths in batches:
        writer.add(batch_columns, lengths)
    return writer.close()
