"""Translate with a trained encoder-decoder checkpoint.

`tsuite translate CHECKPOINT [--input FILE] [--output FILE]`: one sentence a line (stdin and
stdout by default), beam search (beam 4, length penalty 0.6, as in the paper) or greedy
(`--beam 1`), detokenised output in input order.
`tsuite evaluate CHECKPOINT --source FILE --reference FILE`: the same, then corpus sacreBLEU
(with its signature) and chrF of the detokenised output against the raw references; written
as JSON into the run folder and added to the run's W&B summary.
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
from modules.tasks import TranslationModule, load_task
from modules.tasks.checkpoints import read_checkpoint, upgraded


def load_translator(checkpoint: Path) -> TranslationModule:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    purpose = "this tool translates with an encoder-decoder (a TranslationModule checkpoint)"
    task = load_task(checkpoint, device, TranslationModule, purpose)
    assert isinstance(task, TranslationModule)
    return task


def decoding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=checkpoint_file)
    p.add_argument("--beam", type=int, default=4, help="beam size; 1 = greedy")
    p.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty")
    p.add_argument("--batch_size", type=int, default=64)


def check_decoding(args: argparse.Namespace) -> None:
    for name in ("beam", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: must be at least 1")


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
    task = load_translator(args.checkpoint)
    if lines is None:
        lines = read_lines(args.input)
    translations = task.translate_texts(lines, args.beam, args.alpha, args.batch_size)
    output = "\n".join(translations) + "\n"
    if args.output:
        args.output.write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)


def evaluate_main(argv: list[str]) -> None:
    import sacrebleu

    p = argparse.ArgumentParser(prog="tsuite evaluate", description=__doc__)
    decoding_options(p)
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--name", help="name of this evaluation (default: the source file's name)")
    args = p.parse_args(argv)
    check_decoding(args)
    sources, references = read_lines(args.source), read_lines(args.reference)
    if len(sources) != len(references):
        raise ValueError(
            f"{args.source} has {len(sources)} lines but {args.reference} has {len(references)}"
        )
    task = load_translator(args.checkpoint)
    hypotheses = task.translate_texts(sources, args.beam, args.alpha, args.batch_size)
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
        "beam": args.beam,
        "alpha": args.alpha,
        "sentences": len(sources),
        "checkpoint": str(args.checkpoint),
    }
    name = args.name or args.source.name
    run_dir = args.checkpoint.resolve().parent.parent
    folder = run_dir / "eval" if (run_dir / "config.yaml").is_file() else Path("eval")
    folder.mkdir(parents=True, exist_ok=True)
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
