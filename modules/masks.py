"""Boolean attention masks. Convention (SDPA's): True = the query may attend to the key.

Masks broadcast as (batch, 1, queries, keys). When no mask is needed the helpers return None
so the kernel can take its fastest path (`is_causal=True` instead of a materialised mask).
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(query_len: int, key_len: int, device: torch.device | None = None) -> Tensor:
    """(queries, keys) mask where query i sees keys up to its own position.

    Right-aligned: with a KV cache the queries are the last `query_len` of `key_len` positions.
    """
    ones = torch.ones(query_len, key_len, dtype=torch.bool, device=device)
    return ones.tril(diagonal=key_len - query_len)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """(batch, 1, 1, keys) mask from an HF-style `attention_mask` (1 = real token, 0 = padding)."""
    return attention_mask.bool()[:, None, None, :]


def make_mask(
    attention_mask: Tensor | None,
    query_len: int,
    key_len: int,
    causal: bool,
    device: torch.device | None = None,
) -> tuple[Tensor | None, bool]:
    """The mask and `is_causal` flag for `query_len` queries attending over `key_len` keys.

    `attention_mask` is (batch, key_len) with 1 for real tokens, or None when nothing is padded.
    Returns `(None, True)` when SDPA's built-in causal mask is exact (no padding, no cache
    offset), `(None, False)` when every key is visible, and a boolean mask otherwise.
    """
    if attention_mask is not None:
        if attention_mask.dim() != 2 or attention_mask.shape[1] != key_len:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                f"(batch, {key_len}): one entry per key position (1 = real token, 0 = padding)"
            )
        mask = padding_mask(attention_mask)
        if causal:
            mask = mask & causal_mask(query_len, key_len, attention_mask.device)
        return mask, False
    if not causal or query_len == 1:
        return None, False
    if query_len == key_len:
        return None, True
    return causal_mask(query_len, key_len, device), False
