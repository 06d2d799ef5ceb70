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


def two_stream_mask(ranks: Tensor, attention_mask: Tensor, target_positions: Tensor) -> Tensor:
    """The stacked mask of XLNet's two-stream attention (Yang et al. 2019, section 2.3):
    (batch, 1, seq + targets, seq), the content stream's rows, then the query stream's.

    ranks: (batch, seq) each token's place in the factorisation order: 0 for the tokens that
    are not predicted (they come first and see each other), 1, 2, ... for the targets.
    Content row i sees the real keys j with rank[j] <= rank[i]; the query row of target t
    sees those with rank[j] < rank[t], so it never sees its own token. A query row at a
    position that is not a target (the filler of a short row) sees what its content row sees.
    """
    real = attention_mask.bool()[:, None, :]
    keys = ranks[:, None, :]
    content = (keys <= ranks[:, :, None]) & real
    query_ranks = ranks.gather(1, target_positions)[:, :, None]
    query = ((keys < query_ranks) | ((keys == 0) & (query_ranks == 0))) & real
    return torch.cat([content, query], dim=1)[:, None]
