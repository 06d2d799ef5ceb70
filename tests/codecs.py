"""A word-level codec with fixed ids for tests: <pad> 0, <s> 1, </s> 2, <mask> 3, then w4, w5..."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers

from modules.codec import Codec, Family


def toy_codec(vocab_size: int = 1000, family: Family = "encoder") -> Codec:
    words = ["<pad>", "<s>", "</s>", "<mask>", *(f"w{i}" for i in range(4, vocab_size))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Codec(tokenizer, family, "toy")
