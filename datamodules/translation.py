"""Parallel text for translation: `Seq2SeqDataModule` with columns named by language."""

from __future__ import annotations

from datamodules.seq2seq import Seq2SeqDataModule
from datamodules.sources import Source
from datamodules.tokenization import TokenizerSpec


class TranslationDataModule(Seq2SeqDataModule):
    """Pairs from columns named by language (`en`, `de`, ...; hub `translation` dicts are
    flattened to the same; `parallel` local files and the built-in numbers are read by these
    names). Training pairs longer than `max_length` tokens on either side are dropped,
    evaluation pairs are all kept (long_pairs="drop")."""

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        source_lang: str = "en",
        target_lang: str = "de",
        max_tokens: int = 4096,
        max_length: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            source,
            tokenizer,
            source_column=source_lang,
            target_column=target_lang,
            max_source_length=max_length,
            max_target_length=max_length,
            long_pairs="drop",
            max_tokens=max_tokens,
            num_workers=num_workers,
            seed=seed,
            cache_dir=cache_dir,
        )
        self.source_lang, self.target_lang = source_lang, target_lang
        self.max_length = max_length
