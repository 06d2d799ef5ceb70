"""AESLC subject lines: train both AESLC configs with `tsuite fit` on the local copy in
../shared/data/aeslc, decode the validation split with beam search (each task's decoding
settings) and print ROUGE-1/2/L F1 x 100 against `subject_line` and against the three human
`annotations` (the best of them), beside the lead baseline, with wall times and the device,
as one table.

    python -m benchmarks.aeslc                     # both configs as shipped (each sized to train within 40 min on 2 CPU cores)
    python -m benchmarks.aeslc --steps 20 --limit 50   # a smoke run: few steps, 50 emails

Anchors (AESLC test split, PEGASUS, Zhang et al. 2020, Table 1): a Transformer-base trained
from scratch 15.04/7.39/14.93; PEGASUS-base pretrained on C4 34.85/18.94/34.10. Targets: from
scratch at least the from-scratch anchor; warm-started from MiniLM at least 5 ROUGE-1 points
above our from-scratch run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from modules.rouge import Rouge, lead
from modules.tasks import Seq2SeqModule, load_task

CONFIGS = {
    "from scratch": "experiments/configs/summarization/aeslc.yaml",
    "warm start (MiniLM)": "experiments/configs/summarization/aeslc-minilm.yaml",
}
ANCHOR = {"rouge1": 15.04, "rouge2": 7.39, "rougeL": 14.93}  # Transformer-base, from scratch
PRETRAINED_ANCHOR = {"rouge1": 34.85, "rouge2": 18.94, "rougeL": 34.10}  # PEGASUS-base (C4)
TYPES = ("rouge1", "rouge2", "rougeL")


def tsuite(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "experiments", *args])
    if done.returncode != 0:
        raise SystemExit(f"tsuite {args[0]} failed (exit {done.returncode})")


def read_validation(data: Path, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in (data / "validation.jsonl").read_text().splitlines()]
    return rows[:limit] if limit else rows


def train(name: str, config: str, data: Path, runs: Path, steps: int | None) -> Path:
    experiment = "bench/aeslc-" + ("scratch" if "scratch" in name else "minilm")
    source = json.dumps({"kind": "local", "name": str(data), "config": None, "splits": {}})
    extra = []
    if steps:
        interval = max(1, steps // 2)
        extra = [f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={interval}"]
    tsuite(
        "fit",
        "-c",
        config,
        f"--experiment={experiment}",
        f"--runs_dir={runs}",
        f"--data.init_args.source={source}",
        *extra,
    )
    return max((runs / experiment).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def scores(rouge: Rouge, hypotheses: list[str], rows: list[dict]) -> dict[str, dict[str, float]]:
    return {
        "subject": rouge.corpus(hypotheses, [[r["subject_line"]] for r in rows]),
        "annotations": rouge.corpus(hypotheses, [r["annotations"] for r in rows]),
    }


def summarise(run_dir: Path, rows: list[dict], batch_size: int) -> tuple[list[str], int, float]:
    """Summaries of the validation emails by the run's last checkpoint (the schedule is
    fixed, so no choice is made on the split that is scored), decoding seconds, emails cut."""
    start = time.perf_counter()
    task = load_task(
        run_dir / "checkpoints" / "last.ckpt", "cuda" if torch.cuda.is_available() else "cpu"
    )
    assert isinstance(task, Seq2SeqModule)
    sources, lengths = task.encode_sources([r["email_body"] for r in rows])
    summaries = task.generate_ids(sources, batch_size=batch_size)
    cut = sum(n > task.source_limit() for n in lengths)
    return summaries, cut, time.perf_counter() - start


def row(label: str, found: dict[str, dict[str, float]], train_s: str, decode_s: str) -> str:
    def triple(which: str) -> str:
        return "/".join(f"{found[which][t]:5.2f}" for t in TYPES)

    return (
        f"{label:<24} {triple('subject'):>17}   {triple('annotations'):>17}   "
        f"{train_s:>7} {decode_s:>8}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data/aeslc"))
    p.add_argument("--runs_dir", type=Path, default=Path("runs"))
    p.add_argument("--steps", type=int, help="override max_steps (a smoke run)")
    p.add_argument("--limit", type=int, help="decode only the first N validation emails")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    p.add_argument("--batch_size", type=int, default=64, help="emails decoded together")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    if not (args.data / "train.jsonl").is_file() or not (args.data / "validation.jsonl").is_file():
        raise SystemExit(f"AESLC not found in {args.data} (train.jsonl, validation.jsonl)")
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    rows = read_validation(args.data, args.limit)
    load_at_start = os.getloadavg()[0]
    rouge = Rouge(TYPES)
    results = {}
    for name in args.configs:
        start = time.perf_counter()
        run_dir = train(name, CONFIGS[name], args.data, args.runs_dir, args.steps)
        trained = time.perf_counter() - start
        summaries, cut, decode_s = summarise(run_dir, rows, args.batch_size)
        results[name] = {
            **scores(rouge, summaries, rows),
            "train_seconds": round(trained),
            "decode_seconds": round(decode_s),
            "emails_cut": cut,
            "run_dir": str(run_dir),
            "samples": [
                {"subject": r["subject_line"], "summary": s}
                for r, s in zip(rows[:5], summaries[:5], strict=False)
            ],
        }
    baseline = scores(rouge, [lead(r["email_body"]) for r in rows], rows)
    print(
        f"\nAESLC validation ({len(rows):,} emails), ROUGE-1/2/L F1 x 100, device: {device}"
        f"{f', {args.steps} steps (smoke run)' if args.steps else ''}; "
        f"load average {os.getloadavg()[0]:.1f} (1 min), {load_at_start:.1f} at the start"
    )
    print(
        f"{'system':<24} {'vs subject_line':>17}   {'vs annotations':>17}   {'train s':>7} {'decode s':>8}"
    )
    for name, r in results.items():
        print(row(name, r, str(r["train_seconds"]), str(r["decode_seconds"])))
    print(row("lead (first sentence)", baseline, "-", "-"))
    anchors = "/".join(f"{ANCHOR[t]:.2f}" for t in TYPES)
    pretrained = "/".join(f"{PRETRAINED_ANCHOR[t]:.2f}" for t in TYPES)
    print(
        f"anchors (AESLC test, PEGASUS Table 1): Transformer-base from scratch {anchors}; "
        f"PEGASUS-base {pretrained}"
    )
    print(f"ROUGE {rouge.signature()}; annotations: nrefs:max-of-3")
    checks = {}
    scratch = results.get("from scratch")
    if scratch:
        checks["from scratch >= anchor"] = all(scratch["subject"][t] >= ANCHOR[t] for t in TYPES)
    warm = results.get("warm start (MiniLM)")
    if scratch and warm:
        gain = warm["subject"]["rouge1"] - scratch["subject"]["rouge1"]
        checks[f"warm start R1 - from scratch R1 = {gain:+.2f} >= 5"] = gain >= 5
    for check, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {check}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"aeslc-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "device": device,
                "steps": args.steps,
                "emails": len(rows),
                "rouge_signature": rouge.signature(),
                "results": results,
                "lead": baseline,
                "checks": checks,
            },
            indent=2,
        )
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
