"""Typed model configurations with named presets.

Each model family has one dataclass whose defaults are the family's reference architecture
(the paper's Transformer, BERT, GPT-2); presets change sizes only, and any field can be
overridden by keyword. Validation happens at construction, so a bad value fails with its name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Activation = Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu"]
Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["sinusoidal", "learned", "rotary"]

TINY: dict[str, Any] = dict(
    d_model=64, n_heads=4, n_layers=2, d_ff=128, vocab_size=512, max_length=128
)


@dataclass
class TransformerConfig:
    """Fields shared by the three families. Use a family subclass, not this class."""

    vocab_size: int = 32000
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 2048
    max_length: int = 1024
    n_kv_heads: int | None = None  # grouped-query attention when smaller than n_heads
    key_dim: int | None = None  # per-head query/key size d_k; None: d_model / n_heads
    dropout: float = 0.1  # on embeddings and residual branches
    attn_dropout: float = 0.0
    activation: Activation = "relu"
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    pre_norm: bool = False  # False: post-LN (paper, BERT); True: pre-LN (GPT-2) plus a final norm
    positions: Positions = "sinusoidal"
    rope_base: float = 10000.0
    bias: bool = True
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (paper)
    embedding_norm: bool = False  # normalise the summed embeddings (BERT)
    tie_embeddings: bool = True  # output projection shares the token embedding
    pad_token_id: int | None = None
    init_std: float | None = 0.02  # None: Xavier-uniform matrices, N(0, d^-0.5) embeddings
    scaled_residual_init: bool = False  # GPT-2: residual projections get std / sqrt(2 * layers)

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "choose sizes where d_model / n_heads is a whole head dimension"
            )
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ValueError(
                f"n_kv_heads={self.n_kv_heads} must be a positive divisor of n_heads={self.n_heads}"
            )
        if self.key_dim is not None and self.key_dim <= 0:
            raise ValueError(f"key_dim={self.key_dim} must be a positive integer")
        if self.positions == "rotary" and self.qk_dim % 2:
            raise ValueError(f"rotary positions need an even key dimension, got {self.qk_dim}")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def qk_dim(self) -> int:
        """Per-head size of queries and keys (where rotary positions act)."""
        return self.key_dim or self.head_dim

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TransformerConfig:
        """Build the named preset of this family, with any field overridden by keyword."""
        if name not in cls.presets:
            raise ValueError(
                f"unknown preset {name!r} for {cls.__name__}; choose one of {sorted(cls.presets)}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**{**cls.presets[name], **overrides})


@dataclass
class EncoderDecoderConfig(TransformerConfig):
    """The paper's model ("Attention Is All You Need", base size by default)."""

    vocab_size: int = 37000  # one vocabulary shared by source and target
    scale_embeddings: bool = True
    init_std: float | None = None
    n_decoder_layers: int | None = None  # None: same as n_layers
    head_bias: bool = False  # a bias on the output projection (Marian's final_logits_bias)

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper-base": {},
        "paper-big": dict(d_model=1024, n_heads=16, d_ff=4096, dropout=0.3),
        "tiny": TINY,
    }

    @property
    def decoder_layers(self) -> int:
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers


@dataclass
class EncoderConfig(TransformerConfig):
    """BERT (base size by default)."""

    vocab_size: int = 30522
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    max_length: int = 512
    activation: Activation = "gelu"
    norm_eps: float = 1e-12
    positions: Positions = "learned"
    embedding_norm: bool = True
    type_vocab_size: int = 2  # segment (token type) embeddings; 0 disables them
    mlm_head: bool = True
    pooler: bool = True

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "bert-base": {},
        "bert-large": dict(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
        # The compact BERTs of Turc et al. (google-research/bert README).
        "bert-tiny": dict(d_model=128, n_heads=2, n_layers=2, d_ff=512),
        "bert-mini": dict(d_model=256, n_heads=4, n_layers=4, d_ff=1024),
        "bert-small": dict(d_model=512, n_heads=8, n_layers=4, d_ff=2048),
        "bert-medium": dict(d_model=512, n_heads=8, n_layers=8, d_ff=2048),
        "tiny": TINY,
    }


@dataclass
class DecoderConfig(TransformerConfig):
    """GPT-2 (small size by default)."""

    vocab_size: int = 50257
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    activation: Activation = "gelu_tanh"
    pre_norm: bool = True
    positions: Positions = "learned"
    scaled_residual_init: bool = True

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "gpt2-small": {},
        "gpt2-medium": dict(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
        "gpt2-large": dict(d_model=1280, n_heads=20, n_layers=36, d_ff=5120),
        "tiny": TINY,
    }


__all__ = [
    "Activation",
    "DecoderConfig",
    "EncoderConfig",
    "EncoderDecoderConfig",
    "Norm",
    "Positions",
    "TransformerConfig",
]
