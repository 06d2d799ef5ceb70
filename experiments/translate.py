"""Translate with a trained encoder-decoder checkpoint.

`tsuite translate CHECKPOINT [--input FILE] [--output FILE]`: one sentence a line (stdin and
stdout by default), decoded as the task decodes (beam 4, length penalty 0.6, as in the paper,
unless the run configured `decoding` otherwise) or greedy (`--beam 1`), detokenised output in
input order.
`tsuite evaluate CHECKPOINT --source FILE --reference FILE`: the same, then corpus sacreBLEU
(with its signature) and chrF of the detokenised output against the raw references (a
summarisation checkpoint: ROUGE, see `experiments.summarize`); written as JSON into the run
folder and added to the run's W&B summary.
`tsuite average CHECKPOINT... --out FILE` (or `--last N --dir FOLDER`): the average of several
checkpoints' weights (the paper averages the last 5 for base, 20 for big).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from experiments.run_defaults import wandb_has_credentials, wandb_run_id
from experiments.user_files import checkpoint_file, read_lines
from modules.rouge import ROUGE_TYPES
from modules.seq2seq import Decoding
from modules.tasks import Seq2SeqModule, load_task
from modules.tasks.checkpoints import read_checkpoint, upgraded


def load_seq2seq(checkpoint: Path, kind: str = "translation") -> Seq2SeqModule:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    purpose = f"this tool needs an encoder-decoder {kind} model (a Seq2SeqModule checkpoint)"
    task = load_task(checkpoint, device, Seq2SeqModule, purpose)
    assert isinstance(task, Seq2SeqModule)
    return task


def decoding_options(p: argparse.ArgumentParser) -> None:
    """The checkpoint and the decoding flags; each flag left out keeps the task's setting."""
    p.add_argument("checkpoint", type=checkpoint_file)
    p.add_argument("--beam", type=int, help="beam size; 1 = greedy (default: the task's)")
    p.add_argument("--alpha", type=float, help="length penalty exponent (default: the task's)")
    p.add_argument("--min_length", type=int, help="target tokens before eos may end it")
    p.add_argument("--max_length", type=int, help="at most this many target tokens")
    p.add_argument("--no_repeat_ngram_size", type=int, help="block repeated n-grams (3: trigrams)")
    p.add_argument("--batch_size", type=int, default=64)


def check_decoding(args: argparse.Namespace) -> None:
    for name in ("beam", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: must be at least 1")


def decoding(task: Seq2SeqModule, args: argparse.Namespace) -> Decoding:
    """The task's decoding settings with the flags given on the command line."""
    return task.decoding.replace(
        beam_size=args.beam,
        length_penalty=args.alpha,
        min_length=args.min_length,
        max_length=args.max_length,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
    )


def translate_lines(
    task: Seq2SeqModule, lines: list[str], settings: Decoding, batch_size: int
) -> list[str]:
    """The translation of each line; a line longer than the model reads is an error (a
    translation of part of a sentence would be wrong)."""
    sources, lengths = task.encode_sources(lines)
    limit = task.source_limit()
    for number, length in enumerate(lengths, start=1):
        if length > limit:
            raise ValueError(f"line {number} has {length} tokens; the model reads at most {limit}")
    return task.generate_ids(sources, settings, batch_size)


def translate_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite translate", description=__doc__)
    decoding_options(p)
    p.add_argument(
        "--input", type=Path, default=Path("-"), help="one sentence a line (default -: stdin)"
    )
    p.add_argument("--output", type=Path, help="default: stdout")
    args = p.parse_args(argv)
    check_decoding(args)
    stdin = str(args.input) == "-"
    lines = None if stdin else read_lines(args.input)  # a bad file fails before loading
    task = load_seq2seq(args.checkpoint)
    if lines is None:
        lines = read_lines(args.input)
    translations = translate_lines(task, lines, decoding(task, args), args.batch_size)
    output = "\n".join(translations) + "\n"
    if args.output:
        args.output.write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)


def evaluate_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite evaluate", description=__doc__)
    decoding_options(p)
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--name", help="name of this evaluation (default: the source file's name)")
    p.add_argument("--source_column", help="JSON lines: the field with the source")
    p.add_argument(
        "--reference_column", help="JSON lines: the field with the reference (or a list of them)"
    )
    p.add_argument("--lead_words", type=int, help="lead baseline: first N words (summarisation)")
    args = p.parse_args(argv)
    check_decoding(args)
    task = load_seq2seq(args.checkpoint)
    if any(name in ROUGE_TYPES for name in task.text_metrics):
        from experiments.summarize import evaluate_summaries

        evaluate_summaries(task, args)
        return
    evaluate_translations(task, args)


def evaluation_folder(checkpoint: Path) -> tuple[Path, Path]:
    """(the run folder of a checkpoint, where its evaluations go: eval/ in the run folder, or
    ./eval for a checkpoint outside one)."""
    run_dir = checkpoint.resolve().parent.parent
    folder = run_dir / "eval" if (run_dir / "config.yaml").is_file() else Path("eval")
    folder.mkdir(parents=True, exist_ok=True)
    return run_dir, folder


def evaluate_translations(task: Seq2SeqModule, args: argparse.Namespace) -> None:
    import sacrebleu

    sources, references = read_lines(args.source), read_lines(args.reference)
    if len(sources) != len(references):
        raise ValueError(
            f"{args.source} has {len(sources)} lines but {args.reference} has {len(references)}"
        )
    settings = decoding(task, args)
    hypotheses = translate_lines(task, sources, settings, args.batch_size)
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    result = {
        "bleu": round(bleu_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "bleu_detail": str(bleu_score),
        "chrf": round(chrf_score.score, 2),
        "chrf_signature": str(chrf.get_signature()),
        "beam": settings.beam_size,
        "alpha": settings.length_penalty,
        "sentences": len(sources),
        "checkpoint": str(args.checkpoint),
    }
    name = args.name or args.source.name
    run_dir, folder = evaluation_folder(args.checkpoint)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2))
    (folder / f"{name}.hyp").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    print(
        f"{bleu_score}\n{bleu.get_signature()}\nchrF2 = {chrf_score.score:.2f}  {chrf.get_signature()}"
    )
    print(f"written: {folder / (name + '.json')}")
    log_to_wandb(
        args.checkpoint,
        run_dir,
        {f"eval/{name}/bleu": result["bleu"], f"eval/{name}/chrf": result["chrf"]},
    )


def log_to_wandb(checkpoint: Path, run_dir: Path, summary: dict[str, float]) -> None:
    """Add scores to the summary of the W&B run the checkpoint belongs to."""
    run_id = wandb_run_id(checkpoint)
    if not run_id or os.environ.get("WANDB_MODE") == "disabled" or not (run_dir / "wandb").is_dir():
        return
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")
    run = wandb.init(
        id=run_id, resume="allow", dir=str(run_dir), project="transformer-suite", mode=mode
    )
    run.summary.update(summary)
    run.finish()


def average_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite average", description=__doc__)
    p.add_argument("checkpoints", nargs="*", type=Path)
    p.add_argument("--last", type=int, help="the last N step-*.ckpt files of --dir")
    p.add_argument("--dir", type=Path, help="a run's checkpoints/ folder")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    paths = list(args.checkpoints)
    if args.last:
        if args.dir is None:
            raise ValueError("--last needs --dir (a run's checkpoints/ folder)")
        found = sorted(args.dir.glob("step-*.ckpt"), key=lambda f: int(f.stem.split("-")[1]))
        if len(found) < args.last:
            raise ValueError(
                f"--last {args.last}: only {len(found)} step-*.ckpt files in {args.dir} (save them with --keep_checkpoints_every)"
            )
        paths += found[-args.last :]
    if len(paths) < 2:
        raise ValueError("give at least two checkpoints to average")
    print(f"averaging {len(paths)} checkpoints: {', '.join(p.name for p in paths)}")
    average_checkpoints(paths, args.out)
    print(f"written: {args.out}")


def average_checkpoints(paths: list[Path], out: Path) -> None:
    """Average the weights; everything else (hyperparameters, tokenizer) from the last file.
    Optimizer and loop states are left out: the result is for decoding, not for resuming."""
    total: dict[str, torch.Tensor] = {}
    last: dict = {}
    for path in paths:
        last = upgraded(read_checkpoint(path), path)
        state = last["state_dict"]
        if total and state.keys() != total.keys():
            raise ValueError(f"{path} has different weights from {paths[0]}: not the same model")
        for key, value in state.items():
            total[key] = (
                total.get(key, torch.zeros_like(value, dtype=torch.float64)) + value.double()
            )
    averaged = {k: (v / len(paths)).to(last["state_dict"][k].dtype) for k, v in total.items()}
    keep = (
        "hyper_parameters",
        "task_class",
        "format_version",
        "codec",
        "wandb_run_id",
        "pytorch-lightning_version",
        "epoch",
        "global_step",
    )
    result = {k: v for k, v in last.items() if k in keep}
    result["state_dict"] = averaged
    result["averaged_from"] = [str(p) for p in paths]
    tmp = out.with_name(out.name + ".tmp")
    torch.save(result, tmp)
    tmp.replace(out)
