"""Language-model decoding on the KV cache for the decoder-only model: greedy and sampled
continuation (temperature, top-k, top-p, repetition penalty, stop tokens, batched prompts of
different lengths). The encoder-decoder's greedy and beam search are in `modules.seq2seq`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from modules.codec import pad_rows
from modules.layers import LayerCache, cache_length
from modules.models import DecoderTransformer

Overflow = Literal["error", "slide", "shift"]
OVERFLOWS: tuple[Overflow, ...] = ("error", "slide", "shift")


@dataclass(frozen=True)
class Sampling:
    """How `generate` picks each next token. temperature 0 is greedy decoding; otherwise
    logits are divided by the temperature, cut to the `top_k` most likely tokens and to the
    smallest set whose probability reaches `top_p`, then sampled. A `repetition_penalty` > 1
    makes tokens already in the sequence less likely (CTRL, Keskar et al. 2019)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be > 0")


def next_token(
    logits: Tensor, seen: Tensor | None, sampling: Sampling, generator: torch.Generator | None
) -> Tensor:
    """(batch, vocab) logits -> (batch,) next tokens. `seen` marks (batch, vocab) tokens
    already in each sequence, for the repetition penalty."""
    logits = logits.float()
    if sampling.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(
            logits > 0, logits / sampling.repetition_penalty, logits * sampling.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.size(-1):
        kth = logits.topk(sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop = (cumulative - ordered.softmax(dim=-1)) >= sampling.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probabilities = logits.softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model: DecoderTransformer,
    prompts: list[list[int]],
    max_new_tokens: int,
    sampling: Sampling | None = None,
    stop_ids: tuple[int, ...] = (),
    pad_id: int = 0,
    overflow: Overflow = "error",
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens; returns the new tokens only,
    each list ending before its first stop token.

    Prompts of different lengths are left-padded; positions count from each prompt's first
    real token (as HF GPT-2 does), so padding never changes a continuation. When prompt plus
    continuation exceed the model's context (`cfg.max_length`), overflow="error" refuses with
    the lengths, "slide" keeps going on the last `max_length` tokens like nanoGPT (recomputing
    the whole window, without the cache, for every token once it slides), and "shift" keeps the
    cache: when it is full, the newest half of the window is encoded again into a fresh cache
    and the oldest half dropped (llama.cpp's context shift; learned positions do not allow
    keeping the cached keys). A shifted continuation sees between half and all of the window,
    so its text differs from a slid one, at one half-window forward per half window of new
    tokens instead of one whole-window forward per token. A batch shifts all its rows when the
    longest prompt's window is full, so past that point a shorter prompt's continuation can
    differ from its continuation alone.
    """
    sampling = sampling or Sampling()
    max_length = model.cfg.max_length
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (an empty prompt has no context)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    longest = max(len(p) for p in prompts)
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow={overflow!r}: choose one of {', '.join(OVERFLOWS)}")
    if overflow == "error" and longest + max_new_tokens > max_length:
        raise ValueError(
            f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
            f"context of {max_length} tokens; shorten the prompt, lower max_new_tokens, or use "
            "overflow='slide' or 'shift'"
        )
    device = next(model.parameters()).device
    tokens = pad_rows(prompts, pad_id, side="left").to(device)
    mask = pad_rows([[1] * len(p) for p in prompts], 0, side="left").to(device)
    padded = any(len(p) < longest for p in prompts)
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros(len(prompts), model.cfg.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, tokens, mask.bool())
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    shift = overflow == "shift"
    if shift and longest > max_length:  # the window starts full and shifts at the first token
        tokens, mask, longest = tokens[:, -max_length:], mask[:, -max_length:], max_length
    capacity = min(max_length, longest + max_new_tokens)
    cache = model.new_cache(capacity) if use_cache and longest <= max_length else None
    logits = _forward(model, tokens, mask if padded else None, cache, max_length)
    out: list[Tensor] = []
    for step in range(max_new_tokens):
        token = next_token(logits[:, -1], seen, sampling, generator).masked_fill(finished, pad_id)
        out.append(token)
        if len(stops):
            finished |= torch.isin(token, stops)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if tokens.size(1) > max_length:  # the new token does not fit in the window
            if shift:  # keep the newest half, encoded again (on a fresh cache)
                keep = max(1, max_length // 2)
                tokens, mask = tokens[:, -keep:], mask[:, -keep:]
                cache = model.new_cache(capacity) if cache is not None else None
            else:
                cache = None  # the window slides from here on: recompute without the cache
        # a fresh or no cache takes the whole window, a filled one the new token
        new = tokens if cache_length(cache) == 0 else tokens[:, -1:]
        logits = _forward(model, new, mask if padded else None, cache, max_length)
    generated = torch.stack(out, dim=1).tolist()
    return [until_stop(row, stop_ids) for row in generated]


def _forward(
    model: DecoderTransformer,
    tokens: Tensor,
    mask: Tensor | None,
    cache: list[LayerCache] | None,
    max_length: int,
) -> Tensor:
    """Logits of the last position of `tokens`: with a cache, the new tokens come after the
    cached ones; without, the whole sequence is cut to its last `max_length` positions. `mask`
    (1 = real token) covers every position, cached ones included; positions count from each
    row's first real token."""
    if cache is None:
        tokens = tokens[:, -max_length:]
        mask = mask[:, -max_length:] if mask is not None else None
        past = 0
    else:
        past = cache_length(cache)
    if mask is None:
        positions = torch.arange(past, past + tokens.size(1), device=tokens.device)[None]
    else:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past : past + tokens.size(1)]
    return model(tokens, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)


def until_stop(ids: list[int], stop_ids: tuple[int, ...]) -> list[int]:
    """The ids before the first stop token."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids
