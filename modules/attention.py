"""The attention core: one module for self-, causal self- and cross-attention.

`MultiHeadAttention._attend` is the only place the attention kernel is called
(`torch.nn.functional.scaled_dot_product_attention`). `attention_math` spells the same
computation out; it runs only when attention weights are requested and in tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from modules.masks import causal_mask
from modules.positions import apply_rotary

# On CUDA, SDPA takes the first backend in this order that supports the inputs. PyTorch's own
# order puts cuDNN last, yet on Hopper cuDNN's fused attention is the fastest (benchmarks/
# gpu_step.py times each). TSUITE_SDPA_BACKENDS=flash,efficient,math sets another order.
_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def _cuda_backends(names: str) -> list[SDPBackend]:
    unknown = [n for n in names.split(",") if n.strip() not in _BACKENDS]
    if unknown:
        raise ValueError(f"TSUITE_SDPA_BACKENDS: unknown {unknown}; choose from {list(_BACKENDS)}")
    return [_BACKENDS[n.strip()] for n in names.split(",")]


CUDA_BACKENDS = _cuda_backends(os.environ.get("TSUITE_SDPA_BACKENDS", "cudnn,flash,efficient,math"))


class KVCache:
    """Keys and values of one attention layer for incremental decoding.

    Self-attention caches are preallocated to `max_length` positions and grow with every step;
    a cross-attention cache (`max_length=None`) is sized by its one append of the source keys.
    Tensors are (batch, kv_heads, positions, key or value dim). For inference: appends are in-place.
    """

    def __init__(self, max_length: int | None = None) -> None:
        self.max_length = max_length
        self.length = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store new positions and return all cached keys and values."""
        end = self.length + keys.size(2)
        if self.keys is None or self.values is None:
            length = self.max_length or end
            self.keys = keys.new_empty(*keys.shape[:2], length, keys.shape[3])
            self.values = values.new_empty(*values.shape[:2], length, values.shape[3])
        if end > self.keys.size(2):
            raise ValueError(
                f"KV cache is full: {end} positions requested, room for {self.keys.size(2)}; "
                "create the cache with a larger max_length"
            )
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def cached(self) -> tuple[Tensor, Tensor]:
        if self.keys is None or self.values is None:
            raise RuntimeError("the KV cache is empty")
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the cache of the surviving hypotheses)."""
        if self.keys is not None and self.values is not None:
            self.keys, self.values = self.keys[index], self.values[index]


def attention_math(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False
) -> tuple[Tensor, Tensor]:
    """Explicit softmax(QK^T / sqrt(d)) V. Returns the output and the attention weights.

    Rows with no visible key get zero weights and a zero output, as on the SDPA path.
    """
    if k.size(1) != q.size(1):  # grouped-query attention: share each K/V head across a group
        k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
        v = v.repeat_interleave(q.size(1) // v.size(1), dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if is_causal:
        mask = causal_mask(q.size(-2), k.size(-2), q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)  # also turns all-masked NaN rows into zeros
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention with optional grouped-query heads, rotary positions and KV cache.

    Self-attention (`cross=False`) projects Q, K and V with one fused matrix; cross-attention
    projects Q from the decoder and K, V (fused) from the encoder output `memory`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        key_dim: int | None = None,
    ) -> None:
        """key_dim: size of each head's queries and keys (d_k); values keep d_model / n_heads
        (the paper's Table 3 varies d_k alone). Default: d_model / n_heads."""
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.value_dim = d_model // n_heads
        self.key_dim = key_dim or self.value_dim
        self.cross = cross
        self.dropout = dropout
        q_size, k_size = n_heads * self.key_dim, n_kv_heads * self.key_dim
        v_size = n_kv_heads * self.value_dim
        self.split_sizes = [q_size, k_size, v_size]
        if cross:
            self.q = nn.Linear(d_model, q_size, bias=bias)
            self.kv = nn.Linear(d_model, k_size + v_size, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, q_size + k_size + v_size, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        # Set `record_weights` to keep the last attention weights (batch, heads, queries, keys)
        # in `weights`; this switches to the explicit math path (for visualisation).
        self.record_weights = False
        self.weights: Tensor | None = None

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        kv_length: int | None = None,
    ) -> Tensor:
        """x: (batch, seq, d_model); memory: encoder output for cross-attention.

        mask: boolean, broadcastable to (batch, heads, seq, keys), True = may attend.
        kv_length: self-attention whose keys and values are only the first `kv_length`
        positions of x, every position a query (two-stream attention: the content stream
        followed by the query stream, as `modules.layers.Stack` runs it).
        """
        batch, length, d_model = x.shape
        if self.cross:
            q = self._heads(self.q(x), self.n_heads)
            if cache is not None and cache.length:
                k, v = cache.cached()  # the source K/V were computed at the first step
            else:
                if memory is None:
                    raise ValueError("cross-attention needs the encoder output as `memory`")
                k, v = self.kv(memory).split(self.split_sizes[1:], dim=-1)
                k, v = self._heads(k, self.n_kv_heads), self._heads(v, self.n_kv_heads)
                if cache is not None:
                    k, v = cache.append(k, v)
        else:
            q, k, v = self.qkv(x).split(self.split_sizes, dim=-1)
            q, k, v = (
                self._heads(q, self.n_heads),
                self._heads(k, self.n_kv_heads),
                self._heads(v, self.n_kv_heads),
            )
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if kv_length is not None:
                k, v = k[:, :, :kv_length], v[:, :, :kv_length]
            if cache is not None:
                k, v = cache.append(k, v)
        y = self._attend(q, k, v, mask, is_causal)
        return self.out(y.transpose(1, 2).reshape(batch, length, d_model))

    @staticmethod
    def _heads(t: Tensor, n_heads: int) -> Tensor:
        """(batch, seq, heads * dim) -> (batch, heads, seq, dim)."""
        return t.view(t.size(0), t.size(1), n_heads, -1).transpose(1, 2)

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        if self.record_weights:
            y, self.weights = attention_math(q, k, v, mask, is_causal)
            return y
        visible = None
        if mask is not None and not q.is_cpu:
            # A query with no visible key would give NaN on some backends (and NaN gradients):
            # let it see every key, then zero its output. PyTorch's CPU kernels (flash and
            # math) give zeros and zero gradients there themselves (tests/test_attention.py),
            # so the CPU skips these two extra passes over the output.
            visible = mask.any(dim=-1, keepdim=True)
            mask = mask | ~visible
        backends = sdpa_kernel(CUDA_BACKENDS, set_priority=True) if q.is_cuda else nullcontext()
        with backends:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=is_causal,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
        return y if visible is None else y.masked_fill(~visible, 0.0)


@contextmanager
def recorded_attention(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record the attention weights of every attention in `model` during the block.

    Yields a dict that, when the block ends, maps module names (e.g.
    "decoder.blocks.0.cross_attn") to their last weights (batch, heads, queries, keys).
    Uses each module's explicit math path; the SDPA path is back afterwards.
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)}
    weights: dict[str, Tensor] = {}
    for module in modules.values():
        module.record_weights = True
    try:
        yield weights
    finally:
        for name, module in modules.items():
            module.record_weights = False
            if module.weights is not None:
                weights[name] = module.weights.detach()
            module.weights = None
