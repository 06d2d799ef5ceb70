"""`tsuite generate CHECKPOINT --prompt TEXT`: continue a prompt with a trained decoder-only
model (greedy by default; temperature / top-k / top-p / repetition penalty to sample)."""

from __future__ import annotations

import argparse

import torch

from experiments.user_files import checkpoint_file
from modules.generation import OVERFLOWS, Sampling
from modules.tasks import CausalLMModule, load_task


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsuite generate", description=__doc__)
    p.add_argument("checkpoint", type=checkpoint_file, help="a .ckpt of a CausalLMModule run")
    p.add_argument("--prompt", help="the text to continue")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--stop", action="append", default=[], help="stop at this token (repeatable)")
    p.add_argument(
        "--overflow",
        choices=OVERFLOWS,
        default="error",
        help="past the model's context: refuse; slide the window a token at a time as nanoGPT "
        "does (one whole-window forward per token); or shift it by half a window on the KV "
        "cache (several times faster; sees half to all of the window)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    task = load_task(
        args.checkpoint,
        args.device,
        CausalLMModule,
        "tsuite generate continues text with a decoder-only model (a CausalLMModule checkpoint)",
    )
    assert isinstance(task, CausalLMModule)
    if not args.prompt:
        raise ValueError("--prompt is empty or missing: give at least one character of text")
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    texts = task.continue_text(
        args.prompt,
        args.max_new_tokens,
        sampling,
        tuple(args.stop),
        args.num_samples,
        args.overflow,
        args.seed,
    )
    for i, text in enumerate(texts):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(text)
