"""Sequence-to-sequence decoding on the KV cache for the encoder-decoder: greedy and beam
search with the GNMT length penalty (the paper's beam 4, alpha 0.6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from modules.models import EncoderDecoderTransformer


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
    limits = (lengths + extra_length).clamp(max=model.cfg.max_length)  # per source, as beam_search
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
        min(int(n) + extra_length, model.cfg.max_length) for n in attention_mask.sum(dim=1).tolist()
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
