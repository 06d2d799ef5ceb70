"""Summarise with a trained encoder-decoder checkpoint, and score summaries with ROUGE.

`tsuite summarize CHECKPOINT [--input FILE] [--column NAME] [--output FILE]`: one document a
line (stdin by default), or JSON lines with the document in `--column`; decoded as the task
decodes (its `decoding`: beam, length penalty, min/max length, trigram blocking), each flag
overriding one setting. Documents longer than the task's `max_source_length` are cut, and
the command says how many were. Output: one summary a line (a newline inside a summary
becomes a space), or JSON lines {"summary": ...} for JSON-lines input.
`tsuite evaluate CHECKPOINT --source FILE --reference FILE` with a summarisation checkpoint:
ROUGE-1/2/L/Lsum F1 x 100 (`modules.rouge`, several references per document allowed) with
its signature, beside the lead baseline (the first sentence, or `--lead_words` N words).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from experiments.translate import (
    check_decoding,
    decoding,
    decoding_options,
    evaluation_folder,
    load_seq2seq,
    log_to_wandb,
)
from experiments.user_files import read_records
from modules.rouge import ROUGE_TYPES, Rouge, lead
from modules.tasks import Seq2SeqModule


def texts_of(records: list[str | list[str]], path: Path) -> list[str]:
    if any(isinstance(r, list) for r in records):
        raise ValueError(f"{path}: each document is one text, not a list")
    return [r for r in records if isinstance(r, str)]


def summarize_texts(
    task: Seq2SeqModule, documents: list[str], args: argparse.Namespace
) -> tuple[list[str], int]:
    """The summaries of `documents`, and how many documents were cut to fit."""
    sources, lengths = task.encode_sources(documents)
    cut = sum(n > task.source_limit() for n in lengths)
    if cut:
        print(
            f"[tsuite] {cut} of {len(documents)} documents were longer than "
            f"{task.source_limit()} tokens (max_source_length) and were cut",
            file=sys.stderr,
        )
    return task.generate_ids(sources, decoding(task, args), args.batch_size), cut


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="tsuite summarize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decoding_options(p)
    p.add_argument("--input", type=Path, help="one document a line, or JSON lines (stdin)")
    p.add_argument("--column", help="JSON lines: the field that holds the document")
    p.add_argument("--output", type=Path, help="default: stdout")
    args = p.parse_args(argv)
    check_decoding(args)
    records = read_records(args.input, args.column) if args.input else None  # before loading
    task = load_seq2seq(args.checkpoint, "summarisation")
    if records is None:
        records = list(sys.stdin.read().rstrip("\n").split("\n"))
    documents = texts_of(records, args.input or Path("<stdin>"))
    summaries, _ = summarize_texts(task, documents, args)
    if args.column:
        output = "".join(json.dumps({"summary": s}) + "\n" for s in summaries)
    else:
        output = "".join(" ".join(s.split("\n")) + "\n" for s in summaries)
    if args.output:
        args.output.write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)


def table(rows: dict[str, dict[str, float]], types: tuple[str, ...]) -> str:
    """Systems as rows, ROUGE types as columns."""
    width = max(len(name) for name in rows)
    lines = [f"{'system':<{width}}  " + "  ".join(f"{t:>9}" for t in types)]
    for name, scores in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{scores[t]:>9.2f}" for t in types))
    return "\n".join(lines)


def evaluate_summaries(task: Seq2SeqModule, args: argparse.Namespace) -> None:
    documents = texts_of(read_records(args.source, args.source_column), args.source)
    references = [
        r if isinstance(r, list) else [r]
        for r in read_records(args.reference, args.reference_column)
    ]
    if len(documents) != len(references):
        raise ValueError(
            f"{args.source} has {len(documents)} documents but {args.reference} has "
            f"{len(references)} references"
        )
    empty = [i for i, d in enumerate(documents, start=1) if not d.strip()]
    if empty:
        raise ValueError(f"{args.source}, line {empty[0]}: the document is empty")
    summaries, cut = summarize_texts(task, documents, args)
    rouge = Rouge(ROUGE_TYPES)
    lead_rule = f"first {args.lead_words} words" if args.lead_words else "first sentence"
    settings = decoding(task, args)
    model_row = f"model (beam {settings.beam_size})"
    rows = {
        model_row: rouge.corpus(summaries, references),
        f"lead ({lead_rule})": rouge.corpus(
            [lead(d, args.lead_words) for d in documents], references
        ),
    }
    signature = rouge.signature(max(len(r) for r in references))
    result = {
        **{name: round(value, 2) for name, value in rows[model_row].items()},
        "lead": {name: round(value, 2) for name, value in rows[f"lead ({lead_rule})"].items()},
        "lead_rule": lead_rule,
        "rouge_signature": signature,
        "decoding": asdict(settings),
        "documents": len(documents),
        "documents_cut": cut,
        "checkpoint": str(args.checkpoint),
    }
    name = args.name or args.source.name
    run_dir, folder = evaluation_folder(args.checkpoint)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2))
    (folder / f"{name}.hyp").write_text(
        "".join(" ".join(s.split("\n")) + "\n" for s in summaries), encoding="utf-8"
    )
    print(f"{table(rows, ROUGE_TYPES)}\nROUGE F1 x 100  {signature}")
    print(f"written: {folder / (name + '.json')}")
    log_to_wandb(args.checkpoint, run_dir, {f"eval/{name}/{t}": result[t] for t in ROUGE_TYPES})
