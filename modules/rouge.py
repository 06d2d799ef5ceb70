"""ROUGE as summarisation papers report it, and the lead baseline printed beside it.

Scores come from Google's `rouge-score` package (the reimplementation of ROUGE-1.5.5 that
fairseq, HF and most papers use): lowercased, non-alphanumeric characters dropped, the Porter
stemmer on words longer than three letters, F1 x 100. ROUGE-Lsum is the summary-level LCS
over sentences separated by newlines; nothing is split at run time, so no `nltk` data is
needed (torchmetrics' Lsum downloads punkt). With several references an example scores its
best reference for each type (`score_multi`); the corpus score is the mean over examples.
`Rouge.signature` names these settings, as sacreBLEU's signature does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import version

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class Rouge:
    types: tuple[str, ...] = ROUGE_TYPES
    stemmer: bool = True
    scorer: rouge_scorer.RougeScorer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types) - set(ROUGE_TYPES))
        if unknown:
            raise ValueError(f"unknown ROUGE type(s) {unknown}; choose from {list(ROUGE_TYPES)}")
        self.scorer = rouge_scorer.RougeScorer(list(self.types), use_stemmer=self.stemmer)

    def example(self, hypothesis: str, references: list[str]) -> dict[str, float]:
        """F1 x 100 of each type for one hypothesis, against its best reference."""
        if not references:
            raise ValueError("ROUGE needs at least one reference per hypothesis")
        scores = self.scorer.score_multi(references, hypothesis)
        return {name: 100 * scores[name].fmeasure for name in self.types}

    def corpus(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        """The mean over examples of `example`."""
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
        totals = dict.fromkeys(self.types, 0.0)
        for hypothesis, refs in zip(hypotheses, references, strict=True):
            for name, value in self.example(hypothesis, refs).items():
                totals[name] += value
        return {name: total / max(1, len(hypotheses)) for name, total in totals.items()}

    def signature(self, references: int = 1) -> str:
        """The settings behind the scores, e.g.
        `nrefs:1|f1x100|stem:porter|tok:rouge-score|lsum:newline|agg:mean|version:0.1.2`."""
        refs = f"max-of-{references}" if references > 1 else "1"
        return (
            f"nrefs:{refs}|f1x100|stem:{'porter' if self.stemmer else 'none'}|tok:rouge-score|"
            f"lsum:newline|agg:mean|version:{version('rouge-score')}"
        )


def lead(text: str, words: int | None = None) -> str:
    """The lead baseline: the first sentence of `text` (up to the first ., ! or ? followed by
    a space, or the first line break), or with `words` its first that many words."""
    text = text.strip()
    if words is not None:
        return " ".join(text.split()[:words])
    return SENTENCE_END.split(text, maxsplit=1)[0].strip()
