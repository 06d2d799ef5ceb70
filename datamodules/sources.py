"""Where raw data comes from: the Hugging Face hub, local files, or a built-in generator.

Every source ends as a `datasets.DatasetDict` with `train`, `validation` (and maybe `test`)
splits whose columns are checked against what the data module needs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Literal

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset

from datamodules.builtin import load_builtin

LOCAL_FORMATS = {
    ".txt": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
}
SPLIT_NAMES = ("train", "validation", "test")


class DataError(ValueError):
    """Bad data a user can fix: the message names the file, split, column or row."""


@dataclass
class Source:
    """A data source.

    kind: `builtin` (name = numbers | pydocs), `hub` (name = a dataset on the HF hub, with
    optional `config`), or `local` (name = a folder or file).
    splits: our split name -> the hub split, or for local data the file (relative to `name`,
    globs allowed). For `parallel` local data a file stem whose language suffixes are added
    (`train` -> `train.en` + `train.de`).
    columns: rename columns, {"source name": "our name"}.
    validation_fraction: when there is no validation split, the last fraction of the training
    rows becomes the validation split (contiguous, as nanoGPT splits Tiny Shakespeare).
    streaming: read a hub or local data set as a `datasets` stream instead of downloading and
    converting it first (causal LM training; see datamodules/streaming.py for what it costs).
    validation_rows: when streaming, the first N rows of the validation split (or, when the
    source has none, of the training stream, which then leaves them out) are the validation
    split; streaming cannot take a fraction of a split it never reads to the end.
    """

    kind: Literal["builtin", "hub", "local"] = "builtin"
    name: str = "numbers"
    config: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    format: Literal["text", "json", "parquet", "csv", "tsv", "parallel"] | None = None
    columns: dict[str, str] = field(default_factory=dict)
    validation_fraction: float | None = None
    sample_by: Literal["line", "paragraph", "document"] = "line"  # rows of local text files
    options: dict[str, int | float] = field(default_factory=dict)  # for built-in generators
    streaming: bool = False
    validation_rows: int | None = None

    def describe(self) -> str:
        return f"{self.kind}:{self.name}" + (f"/{self.config}" if self.config else "")


def load_source(source: Source, cache_dir: Path, languages: tuple[str, ...] = ()) -> DatasetDict:
    """Load the raw splits; `languages` names the columns of `parallel` local files and the
    languages a built-in translation source generates."""
    if source.streaming:
        raise DataError(
            f"source {source.describe()}: source.streaming is for causal-LM training "
            "(datamodules.CausalLMDataModule); this data module reads whole splits"
        )
    if source.kind == "builtin":
        data = load_builtin(source.name, cache_dir, languages, **source.options)
    elif source.kind == "hub":
        data = _load_hub(source)
    else:
        data = _load_local(source, languages)
    data = _flatten_translation(data)
    if source.columns:
        data = DatasetDict(
            {
                split: ds.rename_columns(
                    {k: v for k, v in source.columns.items() if k in ds.column_names}
                )
                for split, ds in data.items()
            }
        )
    if "validation" not in data and source.validation_fraction:
        data = _split_off_validation(data, source.validation_fraction)
    if "train" not in data or "validation" not in data:
        raise DataError(
            f"source {source.describe()} has splits {sorted(data)}; it needs 'train' and "
            "'validation' (map them with source.splits, or set source.validation_fraction)"
        )
    for split, ds in data.items():
        if len(ds) == 0:
            raise DataError(f"split {split!r} of source {source.describe()} is empty")
    return data


def require_columns(data: DatasetDict, columns: list[str], source: Source) -> None:
    for split, ds in data.items():
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise DataError(
                f"split {split!r} of {source.describe()} lacks column(s) {missing}; it has "
                f"{ds.column_names}. Rename columns with source.columns "
                '(e.g. --data.source.columns=\'{"sentence": "text"}\')'
            )


def fingerprint(data: DatasetDict, columns: list[str]) -> str:
    """Content hash of the given columns of every split (stable, unlike datasets' own)."""
    digest = hashlib.sha256()
    for split in sorted(data):
        digest.update(split.encode())
        for column in columns:
            if column not in data[split].column_names:
                continue
            table = data[split].data.column(column)
            for chunk in table.chunks:
                for buffer in chunk.buffers():
                    if buffer is not None:
                        digest.update(memoryview(buffer))
    return digest.hexdigest()[:16]


def load_streaming(source: Source) -> tuple[IterableDataset, DatasetDict, bool]:
    """(the training split as a stream, the evaluation splits read into memory, whether the
    validation rows were taken from the training stream)."""
    if source.kind == "builtin":
        raise DataError("source.streaming is for hub and local data; built-in sources are small")
    if source.validation_fraction:
        raise DataError(
            f"source {source.describe()}: streaming cannot take source.validation_fraction of "
            "a split it never reads to the end; set source.validation_rows instead"
        )
    if source.kind == "hub":
        streams = _load_hub(source, streaming=True)
    else:
        streams = _load_local(source, (), streaming=True)
    if source.columns:
        streams = IterableDatasetDict(
            {split: s.rename_columns(source.columns) for split, s in streams.items()}
        )
    if "train" not in streams:
        raise DataError(f"source {source.describe()} has no 'train' split (source.splits)")
    train, limit = streams["train"], source.validation_rows
    evaluation = {s: streams[s] for s in ("validation", "test") if s in streams}
    from_train = "validation" not in evaluation
    if from_train:
        if not limit:
            raise DataError(
                f"source {source.describe()} has no validation split: set "
                "source.validation_rows to take the first rows of the training stream"
            )
        evaluation["validation"] = train
    rows = {}
    for split, stream in evaluation.items():
        rows[split] = Dataset.from_list(list(islice(stream, limit)))
        if len(rows[split]) == 0:
            raise DataError(f"split {split!r} of source {source.describe()} is empty")
    return train, DatasetDict(rows), from_train


def _load_hub(source: Source, streaming: bool = False) -> DatasetDict | IterableDatasetDict:
    try:
        loaded = load_dataset(source.name, source.config, streaming=streaming)
    except Exception as error:  # datasets raises many types; all mean "cannot load"
        offline = (
            os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        )
        hint = (
            " Offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) and the data set is not in "
            "the local cache: download it once online, or point source.kind=local at files."
            if offline
            else ""
        )
        raise DataError(f"cannot load hub data set {source.describe()}: {error}.{hint}") from error
    assert isinstance(loaded, DatasetDict | IterableDatasetDict)
    mapping = source.splits or {s: s for s in loaded if s in SPLIT_NAMES}
    for ours, theirs in mapping.items():
        if theirs not in loaded:
            raise DataError(
                f"hub data set {source.describe()} has no split {theirs!r} (for {ours!r}); "
                f"it has {sorted(loaded)}"
            )
    return type(loaded)({ours: loaded[theirs] for ours, theirs in mapping.items()})


def _load_local(
    source: Source, languages: tuple[str, ...], streaming: bool = False
) -> DatasetDict | IterableDatasetDict:
    root = Path(source.name).expanduser()
    if not root.exists():
        raise DataError(f"local data path {root} does not exist (source.name)")
    if source.format == "parallel":
        if streaming:
            raise DataError("parallel text files cannot be streamed (source.streaming)")
        return _load_parallel(
            root, source.splits or {"train": "train", "validation": "valid"}, languages
        )
    if root.is_file():
        files = {"train": [root]}
    else:
        patterns = source.splits or {s: s for s in SPLIT_NAMES}
        # a bare name matches itself or any suffix: "train" finds train.jsonl
        files = {
            split: sorted(root.glob(p)) or sorted(root.glob(f"{p}.*"))
            for split, p in patterns.items()
        }
        files = {s: f for s, f in files.items() if f}
        if not files:
            raise DataError(f"no data files in {root} matching {patterns} (source.splits)")
    suffixes = {f.suffix for fs in files.values() for f in fs}
    fmt = source.format or (LOCAL_FORMATS.get(suffixes.pop()) if len(suffixes) == 1 else None)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {sorted(str(f) for fs in files.values() for f in fs)}; "
            f"set source.format to one of {sorted(set(LOCAL_FORMATS.values()) | {'parallel'})}"
        )
    builder, options = fmt, {}
    if fmt == "text":
        options = {"sample_by": source.sample_by}
    if fmt in ("csv", "tsv"):
        builder = "csv"
        if fmt == "tsv" or all(f.suffix == ".tsv" for fs in files.values() for f in fs):
            options = {"delimiter": "\t", "quoting": 3}  # QUOTE_NONE: text may contain quotes
    for fs in files.values():
        for f in fs:
            _check_readable(f, fmt)
    # one split at a time: splits may differ in columns (AESLC's validation rows carry
    # annotations), which one builder for all splits refuses to cast
    loaded = {}
    for split, fs in files.items():
        try:
            loaded[split] = load_dataset(
                builder, data_files={split: [str(f) for f in fs]}, streaming=streaming, **options
            )[split]
        except Exception as error:
            raise DataError(f"cannot read {fmt} files {[str(f) for f in fs]}: {error}") from error
    return IterableDatasetDict(loaded) if streaming else DatasetDict(loaded)


def _load_parallel(root: Path, stems: dict[str, str], languages: tuple[str, ...]) -> DatasetDict:
    if len(languages) != 2:
        raise DataError("parallel text needs a source and a target language")
    splits = {}
    for split, stem in stems.items():
        columns = {}
        for lang in languages:
            path = root / f"{stem}.{lang}"
            if not path.is_file():
                raise DataError(f"missing parallel text file {path} (split {split!r})")
            _check_readable(path, "text")
            columns[lang] = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
        lengths = {lang: len(lines) for lang, lines in columns.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(
                f"parallel files of split {split!r} in {root} differ in line count: {lengths}"
            )
        splits[split] = Dataset.from_dict(columns)
    return DatasetDict(splits)


def _check_readable(path: Path, fmt: str) -> None:
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    if fmt in ("text", "json", "csv", "tsv"):
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(
                        f"{path}, line {number}: not valid UTF-8 ({error.reason} at byte "
                        f"{error.start}); re-encode the file as UTF-8"
                    ) from error


def _flatten_translation(data: DatasetDict) -> DatasetDict:
    """Hub translation sets (wmt14, iwslt) keep pairs in a `translation` dict column."""
    out = {}
    for split, ds in data.items():
        if "translation" in ds.column_names and isinstance(ds[0]["translation"], dict):
            flat = ds.flatten()
            prefix = "translation."
            renames = {c: c[len(prefix) :] for c in flat.column_names if c.startswith(prefix)}
            ds = flat.rename_columns(renames)
        out[split] = ds
    return DatasetDict(out)


def _split_off_validation(data: DatasetDict, fraction: float) -> DatasetDict:
    """The last `fraction` of the training rows; a single document is cut by characters."""
    train = data["train"]
    if len(train) == 1 and "text" in train.column_names:
        text = train[0]["text"]
        cut = int(len(text) * (1 - fraction))
        head = Dataset.from_dict({"text": [text[:cut]]})
        tail = Dataset.from_dict({"text": [text[cut:]]})
        return DatasetDict({**data, "train": head, "validation": tail})
    cut = len(train) - max(1, int(len(train) * fraction))
    return DatasetDict(
        {
            **data,
            "train": train.select(range(cut)),
            "validation": train.select(range(cut, len(train))),
        }
    )
