"""SQuAD-style extractive question answering: questions over contexts, answers as spans."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from datamodules.base import TextDataModule
from datamodules.collators import QuestionAnsweringCollator
from datamodules.sources import DataError, Source
from datamodules.tokenization import TokenizerSpec

NOT_CONTEXT = [-1, -1]  # offset of a token that is not part of the context


def window_starts(n_tokens: int, room: int, stride: int | None) -> list[int]:
    """First context token of each window of `room` tokens: windows move by `stride` tokens
    until one reaches the end of the context; `stride` None keeps only the first."""
    starts = [0]
    while stride is not None and starts[-1] + room < n_tokens:
        starts.append(starts[-1] + stride)
    return starts


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The first and last token (indices into `offsets`, the character spans of a window's
    tokens) covering characters [start, end), or None when the window does not hold them all."""
    if not offsets or offsets[0][0] > start or offsets[-1][1] < end:
        return None
    first = next(i for i, (_, e) in enumerate(offsets) if e > start)
    last = max(i for i, (s, _) in enumerate(offsets) if s < end)
    return first, last


class QuestionAnsweringDataModule(TextDataModule):
    """Rows with a question, a context and answers ({"text": [...], "answer_start": [character
    offsets into the context]}), as the hub's `rajpurkar/squad`.

    Each row becomes features [CLS] question [SEP] context window [SEP] of up to `max_length`
    tokens (token types 0, then 1 from the context on); the question is cut to
    `max_question_length` tokens. A context longer than the room left is read in overlapping
    windows that start `doc_stride` tokens apart (BERT's run_squad.py); `doc_stride: null`
    keeps only the first window (truncation: answers past it cannot be found). The first
    answer's character span becomes token positions through the tokenizer's offset mapping; a
    window that does not hold the whole answer is labelled [CLS] (position 0). Evaluation
    features also keep the offsets, the context and the answers, so the task can read the
    predicted span back out of the context and score it."""

    family = "encoder"

    def __init__(
        self,
        source: Source,
        tokenizer: TokenizerSpec,
        max_length: int = 384,
        max_question_length: int = 64,
        doc_stride: int | None = 128,
        question_column: str = "question",
        context_column: str = "context",
        answers_column: str = "answers",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(source, tokenizer, batch_size, num_workers, seed, cache_dir)
        room = max_length - max_question_length - 3
        if room < 1:
            raise ValueError(
                f"data.max_length={max_length} leaves no room for the context after a question "
                f"of data.max_question_length={max_question_length} tokens and 3 special tokens"
            )
        if doc_stride is not None and not 0 < doc_stride <= room:
            raise ValueError(
                f"data.doc_stride={doc_stride} must lie in 1..{room} (the context tokens a "
                "window holds), or be null to truncate long contexts"
            )
        self.max_length, self.max_question_length = max_length, max_question_length
        self.doc_stride = doc_stride
        self.question_column, self.context_column = question_column, context_column
        self.answers_column = answers_column

    def text_columns(self) -> list[str]:
        return [self.question_column, self.context_column]

    def required_columns(self) -> list[str]:
        return [*self.text_columns(), self.answers_column]

    def processing(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "max_question_length": self.max_question_length,
            "doc_stride": self.doc_stride,
            "columns": self.required_columns(),
        }

    def tokenize(self, split: str, data: Dataset) -> Dataset:
        self._check_rows(split, data)
        return super().tokenize(split, data.add_column("example_id", list(range(len(data)))))

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        codec = self.codec
        questions = codec.encodings(batch[self.question_column])
        contexts = codec.encodings(batch[self.context_column])
        out: dict[str, list] = {
            key: []
            for key in (
                "input_ids",
                "token_type_ids",
                "start_position",
                "end_position",
                "offsets",
                "example_id",
                "context",
                "answers",
            )
        }
        rows = zip(
            questions,
            contexts,
            batch[self.context_column],
            batch[self.answers_column],
            batch["example_id"],
            strict=True,
        )
        for question, context, text, answers, example_id in rows:
            q = question.ids[: self.max_question_length]
            room, shift = self.max_length - len(q) - 3, len(q) + 2
            for first in window_starts(len(context.ids), room, self.doc_stride):
                ids = context.ids[first : first + room]
                offsets = context.offsets[first : first + room]
                span = None
                if answers["text"]:
                    start = answers["answer_start"][0]
                    span = token_span(offsets, start, start + len(answers["text"][0]))
                out["input_ids"].append(codec.frame(q, ids))
                out["token_type_ids"].append([0] * shift + [1] * (len(ids) + 1))
                out["start_position"].append(span[0] + shift if span else 0)
                out["end_position"].append(span[1] + shift if span else 0)
                out["offsets"].append(
                    [NOT_CONTEXT] * shift + [list(o) for o in offsets] + [NOT_CONTEXT]
                )
                out["example_id"].append(example_id)
                out["context"].append(text)
                out["answers"].append(list(answers["text"]))
        return out

    def _check_rows(self, split: str, data: Dataset) -> None:
        for column in self.text_columns():
            for row, text in enumerate(data[column]):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(
                        f"split {split!r}, row {row}: column {column!r} is empty or missing"
                    )
        rows = zip(data[self.context_column], data[self.answers_column], strict=True)
        for row, (context, answers) in enumerate(rows):
            if (
                not isinstance(answers, dict)
                or not {"text", "answer_start"} <= set(answers)
                or len(answers["text"]) != len(answers["answer_start"])
            ):
                raise DataError(
                    f"split {split!r}, row {row}: column {self.answers_column!r} must be "
                    '{"text": [...], "answer_start": [...]} with one start per answer, got '
                    f"{answers!r}"
                )
            for answer, start in zip(answers["text"], answers["answer_start"], strict=True):
                found = context[start : start + len(answer)] if start >= 0 else None
                if not answer or found != answer:
                    raise DataError(
                        f"split {split!r}, row {row}: answer {answer!r} is not at character "
                        f"{start} of the context (it reads {found!r} there); answer_start "
                        "counts the characters of the context from 0"
                    )

    def collator(self, train: bool = False) -> QuestionAnsweringCollator:
        return QuestionAnsweringCollator(self.codec, keep_text=not train)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.raw.items())
        features = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items())
        return (
            f"{self.source.describe()} (questions: {sizes}; features: {features or 'not loaded'}; "
            f"vocabulary {self.codec.vocab_size:,})"
        )
