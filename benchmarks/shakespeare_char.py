"""Tiny Shakespeare, character level, at nanoGPT's CPU settings, side by side:
(a) `tsuite fit -c experiments/configs/gpt/shakespeare-char-cpu.yaml` (Lightning, logging,
checkpoints, validation on the whole split every 250 steps), and
(b) a plain PyTorch reference written the way nanoGPT's train.py trains: its model (pre-LN,
no biases, tied embeddings, N(0, 0.02) init with scaled residual projections), random windows
drawn with replacement, its warm-up + cosine rate function, AdamW with decay on matrices,
clipping at 1.0, and its estimate of the losses (20 batches of train and validation) every
250 iterations.

Both sides get the same characters (first 90% train, last 10% validation), the same sizes
and the same seed, and one evaluator scores both final models two ways: the mean loss over
the whole validation split (non-overlapping windows of 64, what `tsuite fit` reports), and
nanoGPT's estimate (20 batches of 12 random windows), whose mean and spread over many draws
show how far a single estimate (nanoGPT's 1.886 in the issue) can fall from the whole split.

    python -m benchmarks.shakespeare_char                   # seed 1337, about 4 minutes
    python -m benchmarks.shakespeare_char --seeds 1337 1 2
    python -m benchmarks.shakespeare_char --seeds 1337 1 2 --equal-validation --repeats 2

Single runs on this kind of machine vary by 10-20% from one minute to the next; `--repeats`
interleaves the two sides and keeps the faster run of each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules import CausalLMDataModule, Source, TokenizerSpec
from experiments.allocator import keep_freed_memory
from modules.tasks import load_task

CONFIG = Path(__file__).parents[1] / "experiments/configs/gpt/shakespeare-char-cpu.yaml"
# nanoGPT's README command for a CPU: train_shakespeare_char.py with these overrides
LAYERS, HEADS, WIDTH, BLOCK, BATCH, STEPS = 4, 4, 128, 64, 12, 2000  # STEPS: --steps
LR, MIN_LR, WARMUP, BETAS, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 100, (0.9, 0.99), 0.1, 1.0
EVAL_INTERVAL, EVAL_ITERS = 250, 20


class ReferenceBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH, bias=False)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.attn_proj = nn.Linear(WIDTH, WIDTH, bias=False)
        self.ln_2 = nn.LayerNorm(WIDTH, bias=False)
        self.fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.mlp_proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(WIDTH, dim=2)
        q, k, v = (z.view(b, t, HEADS, WIDTH // HEADS).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, WIDTH))
        return x + self.mlp_proj(F.gelu(self.fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    """nanoGPT's architecture at dropout 0 and bias=False, written out plainly."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, WIDTH)
        self.wpe = nn.Embedding(BLOCK, WIDTH)
        self.blocks = nn.ModuleList(ReferenceBlock() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.head = nn.Linear(WIDTH, vocab_size, bias=False)
        self.head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for name, param in self.named_parameters():
            if name.endswith(("attn_proj.weight", "mlp_proj.weight")):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * LAYERS))

    def forward(self, idx: Tensor) -> Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def nanogpt_lr(it: int, steps: int) -> float:
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def random_windows(stream: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    starts = torch.randint(len(stream) - BLOCK, (BATCH,), generator=generator)
    x = torch.stack([stream[s : s + BLOCK] for s in starts.tolist()])
    y = torch.stack([stream[s + 1 : s + 1 + BLOCK] for s in starts.tolist()])
    return x, y


@torch.no_grad()
def estimate(model: nn.Module, stream: Tensor, generator: torch.Generator) -> float:
    """nanoGPT's estimate_loss for one split: the mean of 20 random batches."""
    losses = []
    for _ in range(EVAL_ITERS):
        x, y = random_windows(stream, generator)
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    return torch.stack(losses).mean().item()


@torch.no_grad()
def whole_split_loss(model: nn.Module, stream: Tensor) -> float:
    """Mean loss over every position of non-overlapping windows from the start of the split."""
    starts = range(0, len(stream) - BLOCK, BLOCK)
    total, count = 0.0, 0
    for chunk in range(0, len(starts), 256):
        batch = starts[chunk : chunk + 256]
        x = torch.stack([stream[s : s + BLOCK] for s in batch])
        y = torch.stack([stream[s + 1 : s + 1 + BLOCK] for s in batch])
        total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


def train_reference(
    train: Tensor, val: Tensor, vocab_size: int, seed: int, steps: int, evaluate: bool = True
) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ReferenceGPT(vocab_size)
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
    start = time.perf_counter()
    for it in range(steps + 1):
        if evaluate and it % EVAL_INTERVAL == 0:
            model.eval()
            for split in (train, val):  # nanoGPT's evaluation, for its cost (values unused)
                estimate(model, split, generator)
            model.train()
        if it == steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(it, steps)
        x, y = random_windows(train, generator)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval(), time.perf_counter() - start


def train_ours(
    data: Path,
    seed: int,
    steps: int,
    runs: Path,
    overrides: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """`tsuite fit` in a child process; returns the final model and its times: the training
    loop with its validations (`loop`, summary.json), the whole fit (`fit`) and the child's
    wall time from start to exit (`process`)."""
    source = json.dumps(
        {"kind": "local", "name": str(data), "sample_by": "document", "validation_fraction": 0.1}
    )
    run_dir = runs / f"seed{seed}-{len(list(runs.glob('seed*')))}"
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "fit",
            "-c",
            str(CONFIG),
            f"--run_dir={run_dir}",
            f"--data.init_args.source={source}",
            f"--seed_everything={seed}",
            f"--trainer.max_steps={steps}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    process_seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tsuite fit failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    checkpoints = run_dir / "checkpoints" / "last.ckpt"
    model = load_task(checkpoints).model if checkpoints.is_file() else nn.Identity()
    times = {"loop": summary["loop_seconds"], "fit": summary["wall_seconds"]}
    return model, {**times, "process": process_seconds}


def streams(data: Path) -> tuple[Tensor, Tensor, int]:
    """The token ids `tsuite fit` trains on: the same split, tokenizer and cache."""
    dm = CausalLMDataModule(
        Source(kind="local", name=str(data), sample_by="document", validation_fraction=0.1),
        TokenizerSpec(kind="char"),
        max_length=BLOCK,
        batch_size=BATCH,
    )
    dm.prepare_data()
    dm.setup("fit")
    train, val = (
        torch.from_numpy(dm.streams[s][:].astype(np.int64)) for s in ("train", "validation")
    )
    return train, val, dm.codec.vocab_size


def score(model: nn.Module, val: Tensor, draws: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    estimates = torch.tensor([estimate(model, val, generator) for _ in range(draws)])
    return {
        "whole": whole_split_loss(model, val),
        "estimate_mean": estimates.mean().item(),
        "estimate_std": estimates.std().item(),
        "estimate_min": estimates.min().item(),
    }


# nanoGPT evaluates 20 batches of each split every 250 steps: 40 batches of 12 windows, the
# work `--equal-validation` gives `tsuite fit` (40 of the 145 validation batches)
EQUAL_VALIDATION = (f"--trainer.limit_val_batches={2 * EVAL_ITERS}",)
# What `--breakdown` takes away from `tsuite fit`, one after another (each row without all the
# ones above it): the time each saves is its cost.
LADDER: list[tuple[str, tuple[str, ...], dict[str, str]]] = [
    ("as shipped (whole-split validation)", (), {}),
    ("validation as the plain loop's (40 batches)", EQUAL_VALIDATION, {}),
    ("- samples after each validation", ("--model.init_args.sample_tokens=0",), {}),
    ("- W&B (offline) logging", (), {"WANDB_MODE": "disabled"}),
    ("- checkpoints", ("--trainer.enable_checkpointing=false",), {}),
    ("- progress bar", ("--trainer.enable_progress_bar=false",), {}),
    ("- validation", ("--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"), {}),
]


def breakdown(
    data: Path, seed: int, steps: int, runs: Path, train: Tensor, val: Tensor, vocab: int
) -> None:
    """Seconds of the training loop (with its validations) per rung of the ladder, and the
    plain loop with and without its evaluation; each rung once, then each again (interleaved),
    the faster of the two counts."""
    overrides: tuple[str, ...] = ()
    env: dict[str, str] = {}
    rungs = []
    for name, more, extra in LADDER:  # a later value of the same key wins on the command line
        overrides, env = (*overrides, *more), {**env, **extra}
        rungs.append((name, overrides, dict(env)))
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in rungs}
    plain: dict[str, list[float]] = {
        "plain loop, its evaluation": [],
        "plain loop, no evaluation": [],
    }
    for _ in range(2):
        for name, overrides, env in rungs:
            seconds[name].append(train_ours(data, seed, steps, runs, overrides, env)[1]["loop"])
        plain["plain loop, its evaluation"].append(
            train_reference(train, val, vocab, seed, steps)[1]
        )
        plain["plain loop, no evaluation"].append(
            train_reference(train, val, vocab, seed, steps, False)[1]
        )
    print(
        f"\nwhere the time goes: {steps} steps, seed {seed}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'tsuite fit':<46} {'loop s':>7} {'saved s':>8}")
    previous = None
    for name, _, _ in rungs:
        best = min(seconds[name])
        saved = "" if previous is None else f"{previous - best:8.1f}"
        print(f"{name:<46} {best:7.1f} {saved}")
        previous = best
    for name, values in plain.items():
        print(f"{name:<46} {min(values):7.1f}")
    print(
        f"fixed cost per step (bare suite - plain loop without evaluation): "
        f"{1000 * (previous - min(plain['plain loop, no evaluation'])) / steps:.2f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data/tinyshakespeare/input.txt"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1337])
    p.add_argument("--draws", type=int, default=100, help="nanoGPT estimates drawn per model")
    p.add_argument("--steps", type=int, default=STEPS, help="optimizer steps (nanoGPT: 2000)")
    p.add_argument(
        "--equal-validation",
        action="store_true",
        help="tsuite fit validates 40 batches, the plain loop's evaluation work (2 x 20)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each side per seed, interleaved; the faster of each side counts",
    )
    p.add_argument(
        "--plain-keeps-freed-memory",
        action="store_true",
        help="the plain loop's process keeps freed memory as tsuite does (experiments/allocator.py)",
    )
    p.add_argument(
        "--breakdown", action="store_true", help="where the suite's time goes (first seed)"
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"Tiny Shakespeare not found at {args.data} (input.txt)")
    if args.plain_keeps_freed_memory and not keep_freed_memory():
        raise SystemExit("--plain-keeps-freed-memory: glibc's malloc settings are not available")
    train, val, vocab_size = streams(args.data)
    rows = []
    overrides = EQUAL_VALIDATION if args.equal_validation else ()
    with tempfile.TemporaryDirectory(prefix="tsuite-shakespeare-") as runs:
        if args.breakdown:
            breakdown(args.data, args.seeds[0], args.steps, Path(runs), train, val, vocab_size)
            return
        for seed in args.seeds:
            ours_runs, plain_runs = [], []
            for _ in range(args.repeats):  # interleaved: a slow spell hits both sides
                ours_runs.append(train_ours(args.data, seed, args.steps, Path(runs), overrides))
                plain_runs.append(train_reference(train, val, vocab_size, seed, args.steps))
            model, times = min(ours_runs, key=lambda run: run[1]["loop"])
            rows.append(
                {
                    "side": "tsuite fit",
                    "seed": seed,
                    "seconds": times["loop"],
                    "all_seconds": [run[1]["loop"] for run in ours_runs],
                    "fit_seconds": times["fit"],
                    "process_seconds": times["process"],
                    **score(model, val, args.draws),
                }
            )
            model, seconds = min(plain_runs, key=lambda run: run[1])
            rows.append(
                {
                    "side": "plain loop (nanoGPT's way)",
                    "seed": seed,
                    "seconds": seconds,
                    "all_seconds": [run[1] for run in plain_runs],
                    **score(model, val, args.draws),
                }
            )
            print_table(rows, args.steps, args.draws)
    ours = [r["seconds"] for r in rows if r["side"] == "tsuite fit"]
    theirs = [r["seconds"] for r in rows if r["side"] != "tsuite fit"]
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    print(
        f"training time, tsuite fit / plain loop: {', '.join(f'{r:.3f}' for r in ratios)} "
        f"(median {ratios[len(ratios) // 2]:.3f}); validation: "
        f"{'40 batches (equal work)' if args.equal_validation else 'whole split (suite)'}; "
        f"each the faster of {args.repeats} interleaved run(s); plain loop's allocator: "
        f"{'kept freed memory' if args.plain_keeps_freed_memory else 'glibc default'}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"shakespeare-char-{stamp}.json").write_text(json.dumps(rows, indent=2))


def print_table(rows: list[dict], steps: int, draws: int) -> None:
    repeats = len(rows[0]["all_seconds"])
    print(
        f"\nTiny Shakespeare (char), {LAYERS} layers x {WIDTH}, context {BLOCK}, batch {BATCH}, "
        f"{steps} steps, cpu x{torch.get_num_threads()}, fp32; validation loss of the final model"
    )
    print(
        f"{'implementation':<28} {'seed':>5} {'whole split':>11} "
        f"{f'20-batch estimate, {draws} draws':>32} {'train s':>8} {'fit s':>6} {'process s':>9}"
        + (f"  train s of the {repeats} runs" if repeats > 1 else "")
    )
    for r in rows:
        spread = (
            f"{r['estimate_mean']:.4f} +- {r['estimate_std']:.4f} (min {r['estimate_min']:.4f})"
        )
        process = f"{r['process_seconds']:.1f}" if "process_seconds" in r else "-"
        fit = f"{r['fit_seconds']:.1f}" if "fit_seconds" in r else "-"
        print(
            f"{r['side']:<28} {r['seed']:>5} {r['whole']:>11.4f} {spread:>32} "
            f"{r['seconds']:>8.1f} {fit:>6} {process:>9}"
            + ("  " + " ".join(f"{x:.1f}" for x in r["all_seconds"]) if repeats > 1 else ""),
            flush=True,
        )
    for side in dict.fromkeys(r["side"] for r in rows):
        whole = [r["whole"] for r in rows if r["side"] == side]
        print(
            f"mean whole-split loss, {side}: {sum(whole) / len(whole):.4f} over {len(whole)} seed(s)"
        )


if __name__ == "__main__":
    main()
