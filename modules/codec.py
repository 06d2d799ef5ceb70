"""Text <-> token ids for one model family: a `tokenizers.Tokenizer`, the ids of its special
tokens, and the family's template (which special tokens frame a text, a pair or a target, and
which side is padded). The data modules, the tasks and every tool go through a `Codec`, and
checkpoints carry it, so a model always reads text the way it was trained to.

The tokenizer itself never adds special tokens (no post-processor): the template here does,
the same way for every tokenizer kind.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import torch
from tokenizers import Encoding, Tokenizer
from torch import Tensor

Family = Literal["encoder", "decoder", "encoder-decoder"]
IGNORE = -100  # label of a position that is not a target
ROLES = ("pad", "bos", "eos", "mask", "unk")
# Token strings each role may have, in the conventions of our tokenizers, BERT and GPT-2.
ROLE_TOKENS = {
    "pad": ("<pad>", "[PAD]", "<|endoftext|>"),
    "bos": ("<s>", "[CLS]", "<|endoftext|>"),
    "eos": ("</s>", "[SEP]", "<|endoftext|>"),
    "mask": ("<mask>", "[MASK]"),
    "unk": ("<unk>", "[UNK]"),
}


def pad_rows(rows: list[list[int]], value: int, side: Literal["left", "right"] = "right") -> Tensor:
    """(len(rows), longest) long tensor, each row filled up with `value` on `side`."""
    longest = max(len(r) for r in rows)
    # one tensor from padded lists: a tensor per row made collation ~6x slower
    if side == "right":
        return torch.tensor([[*r, *[value] * (longest - len(r))] for r in rows], dtype=torch.long)
    return torch.tensor([[*[value] * (longest - len(r)), *r] for r in rows], dtype=torch.long)


def longest_first(first: int, second: int, room: int) -> tuple[int, int]:
    """How many tokens each side of a pair keeps under HF tokenizers' `longest_first`
    truncation: the longer side is cut to what the shorter leaves, or, when that is not
    enough, both to half the room (the odd token goes to the longer side, on a tie to the
    second)."""
    if first + second <= room:
        return first, second
    short, long = sorted((first, second))
    long = max(short, room - short)
    if short + long > room:
        short, long = room // 2, room // 2 + room % 2
    return (long, short) if first > second else (short, long)


class Codec:
    """A tokenizer with named special-token ids and its family's template:

    - encoder (BERT): `[CLS] text [SEP]`, pairs `[CLS] a [SEP] b [SEP]` with token types 0/1;
    - decoder (GPT): the plain pieces; documents end with the end-of-text token; prompts are
      padded on the left;
    - encoder-decoder: the source as plain pieces; the target as `[bos] t` (decoder input)
      and `t [eos]` (labels).
    """

    def __init__(self, tokenizer: Tokenizer, family: Family, source: str = "") -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.family, self.source = family, source
        vocab = tokenizer.get_vocab()
        ids = {
            role: next((vocab[t] for t in ROLE_TOKENS[role] if t in vocab), None) for role in ROLES
        }
        missing = [r for r in ("pad", "bos", "eos") if ids[r] is None]
        if missing:
            raise ValueError(
                f"tokenizer {source or '(in memory)'} has no {missing} token; expected one of "
                f"{[ROLE_TOKENS[r] for r in missing]}"
            )
        self.pad_id: int = ids["pad"]  # type: ignore[assignment]
        self.bos_id: int = ids["bos"]  # type: ignore[assignment]
        self.eos_id: int = ids["eos"]  # type: ignore[assignment]
        self.mask_id, self.unk_id = ids["mask"], ids["unk"]
        self.special_ids = sorted({i for i in ids.values() if i is not None})

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()[:16]

    # --- text -> pieces -----------------------------------------------------------------
    def encodings(self, texts: list[str]) -> list[Encoding]:
        """Encodings without special tokens: ids, character offsets into each text
        (`offsets`) and the word each piece belongs to (`word_ids`)."""
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def pieces(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.encodings(texts)]

    # --- the family's template ------------------------------------------------------------
    def frame(self, first: list[int], second: list[int] | None = None) -> list[int]:
        """Pieces with the family's special tokens around them (encoder: [CLS] ... [SEP])."""
        if self.family != "encoder":
            return [*first, *(second or [])]
        if second is None:
            return [self.bos_id, *first, self.eos_id]
        return [self.bos_id, *first, self.eos_id, *second, self.eos_id]

    def room(self, max_length: int, pair: bool = False) -> int:
        """Pieces that fit in `max_length` tokens once the template is added."""
        return max_length - (0 if self.family != "encoder" else 3 if pair else 2)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """One text in the family's template, its pieces cut to fit `max_length`."""
        ids = self.pieces([text])[0]
        return self.frame(ids if max_length is None else ids[: self.room(max_length)])

    def encode_pairs(
        self, first: list[list[int]], second: list[list[int]], max_length: int
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Pairs of piece lists framed as `[CLS] a [SEP] b [SEP]`, cut longest-first to
        `max_length`, with their token types (0 up to the first [SEP], then 1)."""
        ids, types = [], []
        for a, b in zip(first, second, strict=True):
            keep_a, keep_b = longest_first(len(a), len(b), self.room(max_length, pair=True))
            ids.append(self.frame(a[:keep_a], b[:keep_b]))
            types.append([0] * (keep_a + 2) + [1] * (keep_b + 1))
        return ids, types

    def document(self, ids: list[int]) -> list[int]:
        """A document of a token stream: its pieces ended by the end-of-text token."""
        return [*ids, self.eos_id]

    def target(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """A sequence-to-sequence target: (decoder input `[bos] t`, labels `t [eos]`)."""
        return [self.bos_id, *ids], [*ids, self.eos_id]

    # --- batches --------------------------------------------------------------------------
    def pad(
        self, rows: list[list[int]], side: Literal["left", "right"] = "right"
    ) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask) of rows of different lengths, 1 = real token."""
        mask = pad_rows([[1] * len(r) for r in rows], 0, side)
        return pad_rows(rows, self.pad_id, side), mask

    # --- ids -> text ----------------------------------------------------------------------
    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def decode_batch(self, rows: list[list[int]]) -> list[str]:
        return self.tokenizer.decode_batch(rows, skip_special_tokens=True)

    def piece_texts(self, ids: list[int]) -> list[str]:
        """Each id as the text of its piece, special tokens included (for plots)."""
        return [self.tokenizer.decode([i], skip_special_tokens=False) for i in ids]

    # --- inside checkpoints ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_str(), "family": self.family}

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str = "") -> Codec:
        return cls(Tokenizer.from_str(state["tokenizer"]), state["family"], source)
