"""Files a user hands to a command (configs, text to translate or embed, run records), read
with errors that name the file and line instead of a decoder's or parser's traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def read_text(path: Path) -> str:
    """Any readable path (a file, /dev/stdin, a pipe or `<(...)`), or `-` for standard input."""
    if str(path) == "-":
        stream = getattr(sys.stdin, "buffer", None)  # text only when replaced (tests)
        data = stream.read() if stream is not None else sys.stdin.read().encode()
        path = Path("standard input")
    elif not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    elif path.is_dir():
        raise ValueError(f"{path} is a folder; give a file (or - for standard input)")
    else:
        data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not valid UTF-8 ({error.reason} at byte {error.start}); "
            "re-encode the file as UTF-8"
        ) from error


def read_lines(path: Path) -> list[str]:
    """One entry a line (a final newline does not make an empty last line)."""
    return read_text(path).rstrip("\n").split("\n")


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from error


def checkpoint_file(value: str) -> Path:
    """An argparse type: a checkpoint that exists, checked before the other arguments."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"checkpoint {path} does not exist")
    return path


def read_records(path: Path, column: str | None = None) -> list[str | list[str]]:
    """One entry a line, or with `column` (or a .jsonl/.json file) the `column` of each JSON
    line; a value may be a list of strings (several references). Empty entries, lines that
    are not JSON objects and a missing column are errors naming the file and line."""
    lines = read_lines(path)
    if column is None and path.suffix not in (".jsonl", ".json"):
        return list(lines)
    if column is None:
        raise ValueError(f"{path} holds JSON lines: name the field to read with --column")
    entries: list[str | list[str]] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict) or column not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}, line {number}: no field {column!r} (it has {keys})")
        value = record[column]
        texts = value if isinstance(value, list) else [value]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{path}, line {number}: field {column!r} is empty or not text")
        entries.append(value)
    return entries
