"""Translation: the encoder-decoder task (`Seq2SeqModule`) with translation's defaults, under
the name that configs and checkpoints use."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from modules.seq2seq import Decoding
from modules.tasks.optimization import OptimizerConfig
from modules.tasks.seq2seq import PAPER_OPTIM, Seq2SeqModule, TextMetric

TRANSLATION_OPTIM = PAPER_OPTIM


class TranslationModule(Seq2SeqModule):
    def __init__(
        self,
        preset: str = "paper-base",
        label_smoothing: float = 0.1,
        metrics: list[TextMetric] | None = None,
        beam_size: int | None = None,
        length_penalty: float | None = None,
        decoding: Decoding | dict[str, Any] = Decoding(),  # noqa: B008 (frozen)
        optim: OptimizerConfig = TRANSLATION_OPTIM,
        **common: Any,
    ) -> None:
        """BLEU, chrF and exact match by default; beam 4 and length penalty 0.6 (the paper).
        beam_size / length_penalty: decoding.beam_size / decoding.length_penalty, as configs
        and checkpoints written before `decoding` set them. See Seq2SeqModule."""
        decoding = Decoding(**decoding) if isinstance(decoding, dict) else decoding
        decoding = decoding.replace(beam_size=beam_size, length_penalty=length_penalty)
        super().__init__(
            preset=preset,
            label_smoothing=label_smoothing,
            metrics=metrics,
            decoding=decoding,
            optim=optim,
            **common,
        )

    def translate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        beam_size: int = 1,
        length_penalty: float | None = None,
    ) -> list[str]:
        """Detokenised translations: greedy (beam_size 1) or beam search."""
        decoding = self.decoding.replace(beam_size=beam_size, length_penalty=length_penalty)
        return self.generate(input_ids, attention_mask, decoding)

    def translate_texts(
        self,
        texts: list[str],
        beam_size: int,
        length_penalty: float | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """Translations of raw sentences in their order (empty lines stay empty)."""
        decoding = self.decoding.replace(beam_size=beam_size, length_penalty=length_penalty)
        return self.generate_texts(texts, decoding, batch_size)
