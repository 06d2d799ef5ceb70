"""Sequence-to-sequence decoding on the KV cache for the encoder-decoder: greedy and beam search
(the paper's beam 4 with the GNMT length penalty 0.6), with the constraints summarisation
needs: a minimum length (eos blocked until then), a maximum length (absolute, and relative to
the source length), no repeated n-grams, fairseq/HF's exponent length penalty and early
stopping. `Decoding` holds these settings; `decode` runs greedy or beam search by them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from modules.generation import until_stop
from modules.models import EncoderDecoderTransformer

PenaltyForm = Literal["gnmt", "exponent"]


@dataclass(frozen=True)
class Decoding:
    """How a target is decoded.

    beam_size: 1 decodes greedily. length_penalty: the exponent alpha of `penalty`, "gnmt"
    ((5 + length) / 6) ** alpha (Wu et al. 2016, the paper's 0.6) or "exponent"
    length ** alpha (fairseq's --lenpen, HF's length_penalty); the summed log-probability of a
    hypothesis is divided by it. early_stopping: stop a source as soon as it has `beam_size`
    finished hypotheses (fairseq, HF's True); otherwise only once no live beam can still beat
    them. min_length: target tokens before eos may end it. Each source's target is at most
    min(max_length, length_ratio * source length + extra_length) tokens, eos included, within
    the model's position table (the paper: source length + 50). no_repeat_ngram_size: no
    n-gram of this size appears twice in a target (trigram blocking: 3; 0 = off)."""

    beam_size: int = 4
    length_penalty: float = 0.6
    penalty: PenaltyForm = "gnmt"
    early_stopping: bool = False
    min_length: int = 0
    max_length: int | None = None
    length_ratio: float = 1.0
    extra_length: int = 50
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"decoding.beam_size={self.beam_size} must be at least 1")
        for name in ("min_length", "extra_length", "no_repeat_ngram_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"decoding.{name}={getattr(self, name)} must be >= 0")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"decoding.max_length={self.max_length} must be at least 1")
        if self.length_ratio < 0:
            raise ValueError(f"decoding.length_ratio={self.length_ratio} must be >= 0")
        if self.penalty not in ("gnmt", "exponent"):
            raise ValueError(f"decoding.penalty={self.penalty!r}: choose 'gnmt' or 'exponent'")

    def replace(self, **changes: object) -> Decoding:
        """A copy with the given fields changed; None values change nothing."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def length_penalty(length: int, alpha: float, form: PenaltyForm = "gnmt") -> float:
    """GNMT's ((5 + length) / 6) ** alpha (Wu et al. 2016, eq. 14), or length ** alpha."""
    if form == "exponent":
        return float(length) ** alpha
    return ((5 + length) / 6) ** alpha


def length_limits(
    model: EncoderDecoderTransformer,
    source_lengths: Tensor,
    extra_length: int = 50,
    length_ratio: float = 1.0,
    max_length: int | None = None,
) -> Tensor:
    """The most target tokens (eos included) of each source: length_ratio * its length +
    extra_length, at most `max_length` and the model's position table."""
    limits = (source_lengths * length_ratio).long() + extra_length
    cap = min(max_length or model.cfg.max_length, model.cfg.max_length)
    return limits.clamp(min=1, max=cap)


def repeated_ngrams(history: Tensor, n: int, vocab: int) -> Tensor:
    """(rows, vocab) True for each token that would complete an n-gram already in that row of
    `history` (rows, steps) (fairseq's and HF's no_repeat_ngram)."""
    rows, steps = history.shape
    if n == 0 or steps < n:
        return torch.zeros(rows, vocab, dtype=torch.bool, device=history.device)
    windows = history.unfold(1, n, 1)  # (rows, steps - n + 1, n): every n-gram so far
    current = history[:, steps - n + 1 :]  # the last n - 1 tokens, the next n-gram's start
    seen = (windows[:, :, :-1] == current[:, None, :]).all(dim=-1)
    counts = torch.zeros(rows, vocab, dtype=torch.long, device=history.device)
    return counts.scatter_add_(1, windows[:, :, -1], seen.long()) > 0


def constrain(
    scores: Tensor,
    history: Tensor,
    eos_id: int,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """Next-token scores (rows, vocab) after `history` (rows, steps: the target tokens so far,
    without bos), with eos blocked while fewer than `min_length` tokens precede it and the
    tokens that would repeat an n-gram blocked. Unconstrained scores are returned as they are."""
    if history.size(1) < min_length:
        scores = scores.clone()
        scores[:, eos_id] = float("-inf")
    if no_repeat_ngram_size:
        banned = repeated_ngrams(history, no_repeat_ngram_size, scores.size(-1))
        scores = scores.masked_fill(banned, float("-inf"))
    return scores


@torch.no_grad()
def greedy_translate(
    model: EncoderDecoderTransformer,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    extra_length: int = 50,
    length_ratio: float = 1.0,
    max_length: int | None = None,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """Greedy target ids (batch, steps) for a batch of sources; each row ends at its first
    `eos_id` (later positions are filled with eos), within its length limit (`length_limits`),
    under the `constrain` rules."""
    memory = model.encode(input_ids, attention_mask)
    lengths = (
        attention_mask.sum(dim=1)
        if attention_mask is not None
        else torch.full_like(input_ids[:, 0], input_ids.size(1))
    )
    limits = length_limits(model, lengths, extra_length, length_ratio, max_length)
    steps = int(limits.max())
    cache = model.new_cache(steps)
    token = torch.full((input_ids.size(0), 1), bos_id, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    out: list[Tensor] = []
    history = token[:, :0]  # the tokens so far (bos excluded)
    for step in range(steps):
        logits = model.decode(token, memory, attention_mask, cache=cache)[:, -1]
        logits = constrain(logits, history, eos_id, min_length, no_repeat_ngram_size)
        finished |= limits <= step
        token = logits.argmax(dim=-1, keepdim=True).masked_fill(finished[:, None], eos_id)
        out.append(token)
        finished |= token[:, 0] == eos_id
        if bool(finished.all()):
            break
        history = torch.cat([history, token], dim=1)
    return torch.cat(out, dim=1)


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
    penalty: PenaltyForm = "gnmt",
    early_stopping: bool = False,
    length_ratio: float = 1.0,
    max_length: int | None = None,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
) -> list[Hypothesis]:
    """The best target of each source by beam search: as in the paper by default (beam 4,
    length penalty alpha 0.6, at most source length + 50 tokens), stopping a source once no
    live beam can still beat its `beam_size` finished hypotheses, or with `early_stopping` as
    soon as it has them. Scores are summed log-probabilities divided by the length penalty
    of the hypothesis length with its eos; `constrain` blocks eos before `min_length` and
    repeated n-grams.

    All beams of all sources decode together on the KV cache (the cross-attention keys and
    values are computed once; beams reorder the self-attention caches).
    """
    batch, device = input_ids.size(0), input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    memory = model.encode(input_ids, attention_mask).repeat_interleave(beam_size, dim=0)
    memory_mask = attention_mask.repeat_interleave(beam_size, dim=0)
    limits = length_limits(
        model, attention_mask.sum(dim=1), extra_length, length_ratio, max_length
    ).tolist()
    steps = max(limits)
    cache = model.new_cache(steps) if use_cache else None
    tokens = torch.full((batch * beam_size, 1), bos_id, dtype=torch.long, device=device)
    # only the first beam of each source is live at the start (the others are copies)
    scores = torch.full((batch, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    rows = torch.arange(batch, device=device)[:, None] * beam_size

    def penalised(score: float, length: int) -> float:
        return score / length_penalty(length, alpha, penalty)

    for step in range(steps):
        decoder_input = tokens[:, -1:] if cache is not None else tokens
        logits = model.decode(decoder_input, memory, memory_mask, cache=cache)[:, -1]
        vocab = logits.size(-1)
        log_probs = constrain(
            logits.float().log_softmax(-1), tokens[:, 1:], eos_id, min_length, no_repeat_ngram_size
        )
        candidates = (scores[:, :, None] + log_probs.view(batch, beam_size, vocab)).view(batch, -1)
        top_scores, top_index = candidates.topk(2 * beam_size, dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos_id
        # hypotheses that end here: eos among the best beam_size candidates
        for b, rank in (
            (is_eos[:, :beam_size] & top_scores[:, :beam_size].isfinite()).nonzero().tolist()
        ):
            if not done[b]:
                beam = top_beam[b, rank].item()
                history = tokens[b * beam_size + beam, 1:].tolist()
                score = penalised(top_scores[b, rank].item(), step + 1)
                finished[b].append(Hypothesis(history, score))
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
                        score = penalised(scores[b, beam].item(), step + 1)
                        finished[b].append(Hypothesis(history, score, complete=False))
                done[b] = True
            elif len(finished[b]) >= beam_size:
                if early_stopping:
                    done[b] = True
                    continue
                worst = sorted(h.score for h in finished[b])[-beam_size]
                # a live beam's log-probability only falls, and the penalty is monotone in the
                # length: its best is at the next step or at the limit
                best = max(penalised(best_live[b], step + 2), penalised(best_live[b], limits[b]))
                done[b] = best <= worst
        if all(done):
            break
    # a hypothesis cut by the length limit never paid for its eos: prefer complete ones
    return [max(hypotheses, key=lambda h: (h.complete, h.score)) for hypotheses in finished]


def decode(
    model: EncoderDecoderTransformer,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    decoding: Decoding,
) -> list[list[int]]:
    """The target tokens (without bos and eos) of each source: greedy when
    `decoding.beam_size` is 1, else beam search."""
    d = decoding
    if d.beam_size == 1:
        ids = greedy_translate(
            model,
            input_ids,
            attention_mask,
            bos_id,
            eos_id,
            d.extra_length,
            d.length_ratio,
            d.max_length,
            d.min_length,
            d.no_repeat_ngram_size,
        )
        return [until_stop(row, (eos_id,)) for row in ids.tolist()]
    hypotheses = beam_search(
        model,
        input_ids,
        attention_mask,
        bos_id,
        eos_id,
        d.beam_size,
        d.length_penalty,
        d.extra_length,
        penalty=d.penalty,
        early_stopping=d.early_stopping,
        length_ratio=d.length_ratio,
        max_length=d.max_length,
        min_length=d.min_length,
        no_repeat_ngram_size=d.no_repeat_ngram_size,
    )
    return [h.tokens for h in hypotheses]


def sequence_score(
    model: EncoderDecoderTransformer,
    input_ids: Tensor,
    target: list[int],
    bos_id: int,
    eos_id: int,
    alpha: float = 0.6,
    penalty: PenaltyForm = "gnmt",
) -> float:
    """The beam-search score of one given target (without bos/eos) for one source."""
    memory = model.encode(input_ids)
    decoder_input = torch.tensor([[bos_id, *target]], device=input_ids.device)
    log_probs = model.decode(decoder_input, memory).float().log_softmax(-1)[0]
    labels = torch.tensor([*target, eos_id], device=input_ids.device)
    total = log_probs.gather(1, labels[:, None]).sum().item()
    return total / length_penalty(len(labels), alpha, penalty)
