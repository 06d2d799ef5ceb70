"""Building blocks shared by the three models: norms, feed-forward, the block, the stack,
embeddings and weight initialisation. Variants are configuration, not subclasses."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from modules.attention import KVCache, MultiHeadAttention
from modules.config import TransformerConfig
from modules.masks import make_mask
from modules.positions import RotaryEmbedding, SinusoidalPositions

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def make_norm(cfg: TransformerConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class FeedForward(nn.Module):
    """Position-wise feed-forward: down(act(up(x))), or down(silu(gate) * up) for SwiGLU."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.activation = cfg.activation
        self.gated = cfg.activation == "swiglu"
        self.act = ACTIVATIONS["silu" if self.gated else cfg.activation]
        self.up = nn.Linear(cfg.d_model, cfg.d_ff * (2 if self.gated else 1), bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.gated:
            gate, h = h.chunk(2, dim=-1)
            return self.down(self.act(gate) * h)
        return self.down(self.act(h))


@dataclass
class LayerCache:
    """KV caches of one block: its self-attention and, in a decoder, its cross-attention."""

    self_attn: KVCache
    cross_attn: KVCache | None = None


class Block(nn.Module):
    """Self-attention, optional cross-attention and feed-forward, each a residual sublayer."""

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = False) -> None:
        super().__init__()
        attn = dict(
            n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, bias=cfg.bias, key_dim=cfg.key_dim
        )
        self.self_attn = MultiHeadAttention(cfg.d_model, dropout=cfg.attn_dropout, **attn)
        self.self_attn_norm = make_norm(cfg)
        self.cross_attn = None
        self.cross_attn_norm = None
        if cross_attention:
            self.cross_attn = MultiHeadAttention(
                cfg.d_model, cross=True, dropout=cfg.attn_dropout, **attn
            )
            self.cross_attn_norm = make_norm(cfg)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pre_norm = cfg.pre_norm

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        memory: Tensor | None = None,
        cross_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        kv_length: int | None = None,
    ) -> Tensor:
        """mask / cross_mask: boolean attention masks of the self- and cross-attention
        (True = may attend; None = every key visible). kv_length: keys and values from the
        first `kv_length` positions only (two-stream attention)."""
        x = self._sublayer(
            x,
            self.self_attn_norm,
            lambda h: self.self_attn(
                h,
                mask=mask,
                is_causal=is_causal,
                rope=rope,
                cache=cache and cache.self_attn,
                kv_length=kv_length,
            ),
        )
        if self.cross_attn is not None and self.cross_attn_norm is not None:
            cross_attn = self.cross_attn
            x = self._sublayer(
                x,
                self.cross_attn_norm,
                lambda h: cross_attn(h, memory, mask=cross_mask, cache=cache and cache.cross_attn),
            )
        return self._sublayer(x, self.ffn_norm, self.ffn)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:  # x + f(norm(x))  (GPT-2)
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))  # norm(x + f(x))  (paper, BERT)


class Stack(nn.Module):
    """A stack of blocks: an encoder (bidirectional), a decoder (causal, with cross-attention)
    or a decoder-only stack (causal). Builds the masks once per forward for every block."""

    def __init__(
        self, cfg: TransformerConfig, n_layers: int, causal: bool, cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.causal = causal
        self.max_length = cfg.max_length
        self.blocks = nn.ModuleList(Block(cfg, cross_attention) for _ in range(n_layers))
        self.final_norm = make_norm(cfg) if cfg.pre_norm else None
        self.rotary = (
            RotaryEmbedding(cfg.qk_dim, cfg.max_length, cfg.rope_base)
            if cfg.positions == "rotary"
            else None
        )

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        mask: Tensor | None = None,
        kv_length: int | None = None,
    ) -> Tensor:
        """x: embedded inputs; attention_mask: (batch, cached + new) with 1 = real token;
        memory / memory_mask: the encoder output and its attention_mask (cross-attention).

        XLNet's two-stream attention: x is the content stream (its first `kv_length`
        positions) followed by the query stream, `mask` their stacked boolean mask
        (`modules.masks.two_stream_mask`, instead of one made from attention_mask). Both
        streams go through every block together, so they share every weight; keys and
        values come from the content stream only."""
        length, past = x.size(1), cache_length(cache)
        is_causal = False
        if mask is None:
            mask, is_causal = make_mask(
                attention_mask, length, past + length, self.causal, x.device
            )
        cross_mask = None
        if memory is not None and memory_mask is not None:
            cross_mask, _ = make_mask(memory_mask, length, memory.size(1), False)
        rope = None
        if self.rotary is not None:
            if position_ids is None:
                raise ValueError("rotary positions need position_ids")
            rope = self.rotary(position_ids)
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache else None
            x = block(x, mask, is_causal, rope, memory, cross_mask, layer_cache, kv_length)
        return x if self.final_norm is None else self.final_norm(x)

    def new_cache(self, max_length: int | None = None) -> list[LayerCache]:
        """Empty KV caches for incremental decoding of up to `max_length` positions."""
        size = max_length or self.max_length
        return [
            LayerCache(KVCache(size), KVCache() if block.cross_attn is not None else None)
            for block in self.blocks
        ]


def cache_length(cache: list[LayerCache] | None) -> int:
    """Number of positions already in the cache (0 without one)."""
    return cache[0].self_attn.length if cache else 0


class Embeddings(nn.Module):
    """Token embeddings (optionally scaled) plus absolute positions and token types,
    optionally normalised, then dropout. Rotary positions live in the attention instead."""

    def __init__(
        self, cfg: TransformerConfig, tokens: nn.Embedding | None = None, type_vocab_size: int = 0
    ) -> None:
        super().__init__()
        self.tokens = tokens if tokens is not None else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        self.positions: nn.Module | None = None
        if cfg.positions == "learned":
            self.positions = nn.Embedding(cfg.max_length, cfg.d_model)
        elif cfg.positions == "sinusoidal":
            self.positions = SinusoidalPositions(cfg.max_length, cfg.d_model)
        self.token_types = nn.Embedding(type_vocab_size, cfg.d_model) if type_vocab_size else None
        self.norm = make_norm(cfg) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, input_ids: Tensor, position_ids: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        x = self.tokens(input_ids)
        if self.scale != 1.0:
            x = x * self.scale
        return self.embed_vectors(x, position_ids, token_type_ids)

    def embed_vectors(
        self, x: Tensor, position_ids: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Vectors that stand in for token embeddings (XLNet's query stream), with the
        positions, token types, norm and dropout of the embeddings."""
        if self.positions is not None:
            x = x + self.positions(position_ids)
        if self.token_types is not None:
            types = (
                self.token_types.weight[0]
                if token_type_ids is None
                else self.token_types(token_type_ids)
            )
            x = x + types
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


RESIDUAL_PROJECTIONS = ("self_attn.out.weight", "cross_attn.out.weight", "ffn.down.weight")


def init_weights(model: nn.Module, cfg: TransformerConfig, n_layers: int) -> None:
    """N(0, init_std) matrices and embeddings (GPT-2, BERT), or Xavier-uniform matrices and
    N(0, d^-0.5) embeddings (paper, fairseq) when `init_std` is None. Biases start at zero.
    With `scaled_residual_init`, projections into the residual stream get std/sqrt(2*n_layers)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=cfg.init_std or cfg.d_model**-0.5)
        elif isinstance(module, nn.Linear):
            if id(module.weight) not in embeddings:  # a tied head keeps the embedding's init
                if cfg.init_std is None:
                    nn.init.xavier_uniform_(module.weight)
                else:
                    nn.init.normal_(module.weight, std=cfg.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if cfg.scaled_residual_init:
        std = (cfg.init_std or 0.02) / math.sqrt(2 * n_layers)
        for name, param in model.named_parameters():
            if name.endswith(RESIDUAL_PROJECTIONS):
                nn.init.normal_(param, std=std)
