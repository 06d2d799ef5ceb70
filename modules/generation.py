"""Decoding on the KV cache. Greedy search for the encoder-decoder and the decoder-only model."""

from __future__ import annotations

import torch
from torch import Tensor

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
    `eos_id` (later positions are filled with eos). At most source length + `extra_length`
    tokens (the paper's limit), within the model's position table."""
    memory = model.encode(input_ids, attention_mask)
    steps = min(input_ids.size(1) + extra_length, model.cfg.max_len)
    cache = model.new_cache(steps)
    token = torch.full((input_ids.size(0), 1), bos_id, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    out = []
    for _ in range(steps):
        logits = model.decode(token, memory, attention_mask, cache=cache)
        token = logits[:, -1].argmax(dim=-1, keepdim=True).masked_fill(finished[:, None], eos_id)
        out.append(token)
        finished |= token[:, 0] == eos_id
        if bool(finished.all()):
            break
    return torch.cat(out, dim=1)


@torch.no_grad()
def greedy_continue(model: DecoderTransformer, input_ids: Tensor, max_new_tokens: int) -> Tensor:
    """Greedy continuation (batch, max_new_tokens) of unpadded prompts of equal length."""
    steps = min(max_new_tokens, model.cfg.max_len - input_ids.size(1))
    cache = model.new_cache(input_ids.size(1) + steps)
    logits = model(input_ids, cache=cache)
    out = []
    for _ in range(steps):
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        out.append(token)
        logits = model(token, cache=cache)
    return torch.cat(out, dim=1) if out else input_ids[:, :0]


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    """The ids before the first `eos_id`."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids
