"""Row 4: greedy decoding of 256 new tokens on the KV cache, our `generate` against HF
`generate` with the same weights (through `from_hf`); and our cached against uncached
decoding. The generated tokens must be identical on every side."""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.references import SIZES, Size, pair, parameters
from benchmarks.timing import interleaved_times, paired_ratio
from modules.generation import generate

NEW_TOKENS, PROMPT = 256, 32


def prompts(size: Size, batch: int, length: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, size.vocab_size, (batch, length), generator=g)


def hf_generate(model: nn.Module, prompt: Tensor, new_tokens: int, use_cache: bool = True) -> Any:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            use_cache=use_cache,
        )
    return out[:, prompt.size(1) :].tolist()


def measure(
    size: Size,
    batch: int,
    new_tokens: int,
    prompt_length: int,
    repeats: int,
    device: str,
    uncached_repeats: int = 0,
) -> list[dict[str, Any]]:
    """Ours against HF `generate` (`repeats` interleaved pairs after one untimed call each);
    with `uncached_repeats`, also our cached against our uncached decoding (whose first
    call is timed too: it takes seconds, a warm-up would not change it)."""
    ours, reference = pair("decoder", size)
    ours.to(device).eval()
    reference.to(device).eval()
    prompt = prompts(size, batch, prompt_length).to(device)
    ids = prompt.tolist()
    outputs: dict[str, Any] = {}

    def side(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def call() -> None:
            outputs[name] = fn()

        return call

    sides = {
        "ours": side("ours", lambda: generate(ours, ids, new_tokens)),
        "reference": side("reference", lambda: hf_generate(reference, prompt, new_tokens)),
        "uncached": side("uncached", lambda: generate(ours, ids, new_tokens, use_cache=False)),
    }
    case = f"{parameters(ours) / 1e6:.1f}M b{batch} prompt {prompt_length} +{new_tokens}"
    tokens = batch * new_tokens
    versus = [("reference", repeats, 1, "greedy vs HF", "GPT2LMHeadModel.generate", " (aim 1.5)")]
    if uncached_repeats:
        versus.append(
            ("uncached", uncached_repeats, 0, "cached vs uncached", "our uncached generate", "")
        )
    rows = []
    for other, n, warmup, what, reference_name, aim in versus:
        times = interleaved_times({"ours": sides["ours"], other: sides[other]}, n, warmup)
        if outputs[other] != outputs["ours"]:
            raise AssertionError(f"greedy tokens differ: ours and {other} ({case})")
        seconds = {name: statistics.median(t) for name, t in times.items()}
        ratio = paired_ratio(times[other], times["ours"])
        rows.append(
            {
                "row": "generate",
                "case": f"{what}, {case}",
                "reference_name": reference_name,
                "ours": tokens / seconds["ours"],
                "reference": tokens / seconds[other],
                "unit": "tok/s",
                "ratio": ratio,
                "target": f">= 1.0{aim}",
                "passed": ratio >= 1.0,
                "ours_ms": seconds["ours"] * 1e3,
                "reference_ms": seconds[other] * 1e3,
            }
        )
    return rows


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    if quick:
        return measure(SIZES["tiny"], 1, 16, 8, 1, device, uncached_repeats=1)
    return [
        *measure(SIZES["10M"], 1, NEW_TOKENS, PROMPT, 5, device, uncached_repeats=1),
        *measure(SIZES["10M"], 4, NEW_TOKENS, PROMPT, 3, device),
    ]
