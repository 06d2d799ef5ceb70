"""`tsuite generate CHECKPOINT --prompt TEXT`: continue a prompt with a trained decoder-only
model (greedy by default; temperature / top-k / top-p / repetition penalty to sample)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from experiments.checkpoints import load_task
from modules.generation import Sampling, generate
from modules.tasks import CausalLMModule


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsuite generate", description=__doc__)
    p.add_argument("checkpoint", type=Path, help="a .ckpt of a CausalLMModule run")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--stop", action="append", default=[], help="stop at this token (repeatable)")
    p.add_argument(
        "--overflow",
        choices=["error", "slide"],
        default="error",
        help="past the model's context: refuse, or slide the window as nanoGPT does",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if not args.prompt:
        raise ValueError("--prompt is empty: give at least one character of text to continue")
    module = load_task(args.checkpoint, args.device)
    if not isinstance(module, CausalLMModule):
        raise ValueError(
            f"{args.checkpoint} is a {type(module).__name__}; generate continues text with a "
            "decoder-only model (a CausalLMModule checkpoint)"
        )
    tokenizer = module.tokenizer
    if tokenizer is None:
        raise ValueError(f"{args.checkpoint} carries no tokenizer to encode the prompt with")
    prompt = tokenizer.encode(args.prompt, add_special_tokens=False).ids
    stop_ids = []
    for text in args.stop:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ValueError(f"--stop {text!r} is {len(ids)} tokens; a stop must be one token")
        stop_ids.append(ids[0])
    if module.eos_id is not None:
        stop_ids.append(module.eos_id)
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    outputs = generate(
        module.model,
        [prompt] * args.num_samples,
        args.max_new_tokens,
        sampling,
        tuple(stop_ids),
        overflow=args.overflow,
        generator=generator,
    )
    for i, continuation in enumerate(outputs):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + tokenizer.decode(continuation, skip_special_tokens=True))
