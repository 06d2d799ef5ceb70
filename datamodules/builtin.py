"""Built-in offline data sets: nothing to download, deterministic on every machine.

- `numbers`: number words in English, German and French (num2words). German writes numbers
  as one compound with units before tens ("einundzwanzig"), so translating them needs real
  reordering. Train, validation and test numbers are disjoint.
- `pydocs`: English prose from this Python installation: the pydoc topic pages and the
  docstrings of the standard library (read with `ast`, never imported).
"""

from __future__ import annotations

import ast
import random
import sys
import sysconfig
import zlib
from pathlib import Path

from datasets import Dataset, DatasetDict
from num2words import num2words

from datamodules.cache import atomic_folder, cache_key, remove_folder

NUMBER_LANGUAGES = ("en", "de", "fr")
BUILTIN_SOURCES = ("numbers", "pydocs")


def number_words(
    max_number: int = 10000,
    count: int | None = None,
    seed: int = 0,
    held_out: float = 0.1,
    languages: tuple[str, ...] = NUMBER_LANGUAGES,
) -> DatasetDict:
    """`count` distinct numbers from [0, max_number) (all of them by default) as words in each
    language; `held_out` of them for validation and as many again for test, drawn at random
    (fixed by `seed`), so no test number is ever seen in training."""
    rng = random.Random(seed)
    numbers = rng.sample(range(max_number), count or max_number)
    n_held = max(1, int(len(numbers) * held_out))
    splits = {
        "validation": numbers[:n_held],
        "test": numbers[n_held : 2 * n_held],
        "train": sorted(numbers[2 * n_held :]),
    }
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "number": values,
                    **{
                        lang: [num2words(n, lang=lang) for n in values] for lang in NUMBER_LANGUAGES
                    },
                }
            )
            for split, values in splits.items()
        }
    )


def _stdlib_docstrings() -> list[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip"}
    documents = []
    for path in sorted(stdlib.rglob("*.py")):
        if skip & set(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)
        ]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 200:  # skip one-liners: too little prose
                name = getattr(node, "name", "")
                documents.append((f"{path.relative_to(stdlib)}:{name}", doc))
    return documents


def python_docs(held_out: float = 0.05) -> DatasetDict:
    """Documents with a `text` column; each goes to train, validation or test by a hash of
    its name, so the split is stable however the set of documents changes."""
    from pydoc_data.topics import topics

    documents = [(f"topic:{k}", v) for k, v in sorted(topics.items())] + _stdlib_docstrings()
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for name, text in documents:
        bucket = zlib.crc32(name.encode()) % 10000 / 10000
        split = "validation" if bucket < held_out else "test" if bucket < 2 * held_out else "train"
        splits[split].append(text.strip())
    return DatasetDict({k: Dataset.from_dict({"text": v}) for k, v in splits.items()})


GENERATOR_VERSION = 1  # bump when a generator's output changes


def load_builtin(
    name: str, cache_dir: Path, languages: tuple[str, ...] = (), **options: int | float
) -> DatasetDict:
    """Generate a built-in data set once and keep it in the cache (num2words and parsing the
    standard library take seconds; every later run loads the saved copy)."""
    if name not in BUILTIN_SOURCES:
        raise ValueError(f"unknown built-in source {name!r}; choose one of {list(BUILTIN_SOURCES)}")
    if name == "numbers":
        unknown = sorted(set(languages) - set(NUMBER_LANGUAGES))
        if unknown:
            raise ValueError(
                f"the numbers source has no language {unknown}; it has {list(NUMBER_LANGUAGES)}"
            )
    version = (GENERATOR_VERSION, sys.version_info[:2] if name == "pydocs" else None)
    folder = cache_dir / "builtin" / cache_key(name, sorted(options.items()), languages, version)
    if folder.exists():
        try:
            return DatasetDict.load_from_disk(str(folder))
        except Exception:
            remove_folder(folder)  # damaged: generate again
    if name == "numbers":
        data = number_words(**options, languages=languages or NUMBER_LANGUAGES)  # type: ignore[arg-type]
    else:
        data = python_docs(**options)
    with atomic_folder(folder) as tmp:
        data.save_to_disk(str(tmp))
    return DatasetDict.load_from_disk(str(folder))
