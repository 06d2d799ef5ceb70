"""Content-keyed cache folders, written atomically: a temporary folder renamed when complete,
so an interrupted run never leaves a half-written entry behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    return Path(os.environ.get("TSUITE_CACHE", Path.home() / ".cache" / "transformer-suite"))


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it becomes `final` in one rename.

    If another process completed `final` first, its copy is kept and ours discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
