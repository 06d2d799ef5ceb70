"""Decoding on the KV cache: greedy and beam search (GNMT length penalty) for the
encoder-decoder; greedy and sampled continuation (temperature, top-k, top-p, repetition
penalty, stop tokens, batched prompts of different lengths) for the decoder-only model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from modules.layers import LayerCache
from modules.models import DecoderTransformer, EncoderDecoderTransformer


@torch.no_grad()
def greedy_translate(
    model: EncoderDecoderTransformer,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    extra_length: int = 50,
) -> Tensor:
    """Greedy target ids (batch, steps) for a batch of sources; each row ends at its first
    `eos_id` (later positions are filled with eos). At most the source's own length +
    `extra_length` tokens (the paper's limit), within the model's position table."""
    memory = model.encode(input_ids, attention_mask)
    lengths = (
        attention_mask.sum(dim=1)
        if attention_mask is not None
        else torch.full_like(input_ids[:, 0], input_ids.size(1))
    )
    limits = (lengths + extra_length).clamp(max=model.cfg.max_len)  # per source, as beam_search
    steps = int(limits.max())
    cache = model.new_cache(steps)
    token = torch.full((input_ids.size(0), 1), bos_id, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    out = []
    for step in range(steps):
        logits = model.decode(token, memory, attention_mask, cache=cache)
        finished |= limits <= step
        token = logits[:, -1].argmax(dim=-1, keepdim=True).masked_fill(finished[:, None], eos_id)
        out.append(token)
        finished |= token[:, 0] == eos_id
        if bool(finished.all()):
            break
    return torch.cat(out, dim=1)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5 + length) / 6) ** alpha


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos and eos
    score: float  # summed log-probability (of eos too, when complete) / length_penalty
    complete: bool = True  # False: stopped by the length limit before eos


@torch.no_grad()
def beam_search(
    model: EncoderDecoderTransformer,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    extra_length: int = 50,
    use_cache: bool = True,
) -> list[Hypothesis]:
    """The best translation of each source by beam search, as in the paper: beam 4, length
    penalty alpha 0.6, at most source length + 50 tokens, stopping a source early once no
    live beam can still beat its `beam_size` finished hypotheses.

    All beams of all sources decode together on the KV cache (the cross-attention keys and
    values are computed once; beams reorder the self-attention caches). Scores are summed
    log-probabilities divided by the length penalty of the hypothesis length with its eos.
    """
    batch, device = input_ids.size(0), input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    memory = model.encode(input_ids, attention_mask).repeat_interleave(beam_size, dim=0)
    memory_mask = attention_mask.repeat_interleave(beam_size, dim=0)
    # each source may grow to its own length + extra_length tokens (within the position table)
    limits = [
        min(int(n) + extra_length, model.cfg.max_len) for n in attention_mask.sum(dim=1).tolist()
    ]
    steps = max(limits)
    cache = model.new_cache(steps) if use_cache else None
    tokens = torch.full((batch * beam_size, 1), bos_id, dtype=torch.long, device=device)
    # only the first beam of each source is live at the start (the others are copies)
    scores = torch.full((batch, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    rows = torch.arange(batch, device=device)[:, None] * beam_size
    for step in range(steps):
        decoder_input = tokens[:, -1:] if cache is not None else tokens
        logits = model.decode(decoder_input, memory, memory_mask, cache=cache)[:, -1]
        vocab = logits.size(-1)
        candidates = (
            scores[:, :, None] + logits.float().log_softmax(-1).view(batch, beam_size, vocab)
        ).view(batch, -1)
        top_scores, top_index = candidates.topk(2 * beam_size, dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos_id
        # hypotheses that end here: eos among the best beam_size candidates
        penalty = length_penalty(step + 1, alpha)
        for b, rank in (
            (is_eos[:, :beam_size] & top_scores[:, :beam_size].isfinite()).nonzero().tolist()
        ):
            if not done[b]:
                beam = top_beam[b, rank].item()
                history = tokens[b * beam_size + beam, 1:].tolist()
                finished[b].append(Hypothesis(history, top_scores[b, rank].item() / penalty))
        # the live beams: the best beam_size candidates that do not end
        live_scores, live_rank = top_scores.masked_fill(is_eos, float("-inf")).topk(
            beam_size, dim=1
        )
        chosen_beam = top_beam.gather(1, live_rank)
        chosen_token = top_token.gather(1, live_rank)
        order = (rows + chosen_beam).view(-1)
        tokens = torch.cat([tokens[order], chosen_token.view(-1, 1)], dim=1)
        scores = live_scores
        if cache is not None:
            for layer in cache:
                layer.self_attn.reorder(order)
        best_live = scores[:, 0].tolist()
        for b in range(batch):
            if done[b]:
                continue
            if step + 1 == limits[b]:  # out of length: the live beams end here, without eos
                for beam in range(beam_size):
                    if scores[b, beam].isfinite():
                        history = tokens[b * beam_size + beam, 1:].tolist()
                        score = scores[b, beam].item() / length_penalty(step + 1, alpha)
                        finished[b].append(Hypothesis(history, score, complete=False))
                done[b] = True
            elif len(finished[b]) >= beam_size:
                worst = sorted(h.score for h in finished[b])[-beam_size]
                # a live beam's log-probability only falls; its penalty is largest at the limit
                done[b] = best_live[b] / length_penalty(limits[b], alpha) <= worst
        if all(done):
            break
    # a hypothesis cut by the length limit never paid for its eos: prefer complete ones
    return [max(hypotheses, key=lambda h: (h.complete, h.score)) for hypotheses in finished]


def sequence_score(
    model: EncoderDecoderTransformer,
    input_ids: Tensor,
    target: list[int],
    bos_id: int,
    eos_id: int,
    alpha: float = 0.6,
) -> float:
    """The beam-search score of one given target (without bos/eos) for one source."""
    memory = model.encode(input_ids)
    decoder_input = torch.tensor([[bos_id, *target]], device=input_ids.device)
    log_probs = model.decode(decoder_input, memory).float().log_softmax(-1)[0]
    labels = torch.tensor([*target, eos_id], device=input_ids.device)
    total = log_probs.gather(1, labels[:, None]).sum().item()
    return total / length_penalty(len(labels), alpha)


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
    overflow: Literal["error", "slide"] = "error",
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens; returns the new tokens only,
    each list ending before its first stop token.

    Prompts of different lengths are left-padded; positions count from each prompt's first
    real token (as HF GPT-2 does), so padding never changes a continuation. When prompt plus
    continuation exceed the model's context (`cfg.max_len`), overflow="error" refuses with
    the lengths, "slide" keeps going on the last `max_len` tokens like nanoGPT (recomputing,
    without the cache, once the window slides).
    """
    sampling = sampling or Sampling()
    context = model.cfg.max_len
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (an empty prompt has no context)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    longest = max(len(p) for p in prompts)
    if overflow == "error" and longest + max_new_tokens > context:
        raise ValueError(
            f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
            f"context of {context} tokens; shorten the prompt, lower max_new_tokens, or use "
            "overflow='slide'"
        )
    device = next(model.parameters()).device
    tokens = torch.full((len(prompts), longest), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(tokens)
    for row, prompt in enumerate(prompts):
        tokens[row, longest - len(prompt) :] = torch.tensor(prompt)
        mask[row, longest - len(prompt) :] = 1
    padded = any(len(p) < longest for p in prompts)
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros(len(prompts), model.cfg.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, tokens, mask.bool())
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    capacity = min(context, longest + max_new_tokens)
    cache = model.new_cache(capacity) if use_cache and longest <= context else None
    logits = _forward(model, tokens, mask if padded else None, cache, context)
    out: list[Tensor] = []
    for _ in range(max_new_tokens):
        token = next_token(logits[:, -1], seen, sampling, generator).masked_fill(finished, pad_id)
        out.append(token)
        if len(stops):
            finished |= torch.isin(token, stops)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        if bool(finished.all()):
            break
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if cache is not None and cache[0].self_attn.length >= capacity:
            cache = None  # the window slides from here on: recompute without the cache
        new = tokens[:, -1:] if cache is not None else tokens
        logits = _forward(model, new, mask if padded else None, cache, context)
    generated = torch.stack(out, dim=1).tolist()
    return [_until_stop(row, stop_ids) for row in generated]


def _forward(
    model: DecoderTransformer,
    tokens: Tensor,
    mask: Tensor | None,
    cache: list[LayerCache] | None,
    context: int,
) -> Tensor:
    """Logits of the last position of `tokens`: with a cache, the new tokens come after the
    cached ones; without, the whole sequence is cut to its last `context` positions. `mask`
    (1 = real token) covers every position, cached ones included; positions count from each
    row's first real token."""
    if cache is None:
        tokens = tokens[:, -context:]
        mask = mask[:, -context:] if mask is not None else None
        past = 0
    else:
        past = cache[0].self_attn.length
    if mask is None:
        positions = torch.arange(past, past + tokens.size(1), device=tokens.device)[None]
    else:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past : past + tokens.size(1)]
    return model(tokens, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)


def _until_stop(ids: list[int], stop_ids: tuple[int, ...]) -> list[int]:
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    """The ids before the first `eos_id`."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids
