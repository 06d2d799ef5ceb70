"""Our decoder-only model with rotary positions, RMSNorm and SwiGLU (grouped-query heads
optional) <-> `LlamaForCausalLM` (and `LlamaModel`).

Our SwiGLU up-projection is [gate; up] stacked along the output, Llama's `gate_proj` and
`up_proj`; RoPE is the rotate-half form on both sides with rope_base = rope_theta.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from modules.config import DecoderConfig
from modules.interop.core import Adapter, Entry, KeyMap, SpecialTokens, TaskHead, linear
from modules.models import DecoderTransformer

RENAMED = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_layers": "num_hidden_layers",
    "d_ff": "intermediate_size",
    "max_length": "max_position_embeddings",
    "norm_eps": "rms_norm_eps",
    "attn_dropout": "attention_dropout",
    "tie_embeddings": "tie_word_embeddings",
}
REQUIRED = {
    "activation": "swiglu",
    "norm": "rmsnorm",
    "pre_norm": True,
    "positions": "rotary",
    "scale_embeddings": False,
    "embedding_norm": False,
    "key_dim": None,
}
DEFAULTS = {
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "head_dim": None,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rope_parameters": None,
    "pad_token_id": None,
    "pretraining_tp": 1,
}


def rope_theta(c: Any) -> float:
    """rope_theta of a Llama config, refusing scaled RoPE (it has no equivalent here)."""
    rope = c.rope_parameters or c.rope_scaling or {}  # transformers 5 / 4
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default" or rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"Llama with rope_type={kind!r} (scaled or partial RoPE) is unsupported")
    return float(rope.get("rope_theta", c.rope_theta))


def our_config(c: Any, state: dict[str, Tensor], p: str) -> dict[str, Any]:
    if c.hidden_act != "silu":
        raise ValueError(f"Llama with hidden_act={c.hidden_act!r}: only SwiGLU (silu) maps")
    if c.attention_bias != c.mlp_bias:
        raise ValueError("Llama with attention_bias != mlp_bias: our model has one `bias`")
    if c.head_dim not in (None, c.hidden_size // c.num_attention_heads):
        raise ValueError(f"Llama with head_dim={c.head_dim} != hidden_size / heads")
    if c.pretraining_tp not in (None, 1):
        raise ValueError(f"Llama with pretraining_tp={c.pretraining_tp} is unsupported")
    kv = c.num_key_value_heads
    return {
        "n_kv_heads": None if kv in (None, c.num_attention_heads) else kv,
        "rope_base": rope_theta(c),
        "bias": c.attention_bias,
        "dropout": 0.0,  # Llama has no dropout on embeddings or residual branches
        "pad_token_id": c.pad_token_id,
    }


def hf_config(cfg: DecoderConfig, specials: SpecialTokens, head: TaskHead | None) -> dict[str, Any]:
    return {
        "num_key_value_heads": cfg.n_kv_heads or cfg.n_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rope_theta": cfg.rope_base,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "bos_token_id": specials.bos_id,
        "eos_token_id": specials.eos_id,
        "pad_token_id": specials.pad_id,
    }


def keymap(cfg: DecoderConfig, p: str, head: str | None) -> KeyMap:
    weights: list[Entry] = [
        ("embed.tokens.weight", (f"{p}embed_tokens.weight",), "same"),
        ("stack.final_norm.weight", (f"{p}norm.weight",), "same"),
    ]
    for i in range(cfg.n_layers):
        ours, theirs = f"stack.blocks.{i}.", f"{p}layers.{i}."
        qkv = (f"{theirs}self_attn.{n}_proj" for n in "qkv")
        weights += linear(f"{ours}self_attn.qkv", *qkv, bias=cfg.bias)
        weights += linear(f"{ours}self_attn.out", f"{theirs}self_attn.o_proj", bias=cfg.bias)
        weights += linear(f"{ours}self_attn_norm", f"{theirs}input_layernorm", bias=False)
        gate_up = (f"{theirs}mlp.gate_proj", f"{theirs}mlp.up_proj")
        weights += linear(f"{ours}ffn.up", *gate_up, bias=cfg.bias)
        weights += linear(f"{ours}ffn.down", f"{theirs}mlp.down_proj", bias=cfg.bias)
        weights += linear(f"{ours}ffn_norm", f"{theirs}post_attention_layernorm", bias=False)
    tied = {}
    if cfg.tie_embeddings:
        tied["lm_head.weight"] = f"{p}embed_tokens.weight"
    else:
        weights.append(("lm_head.weight", ("lm_head.weight",), "same"))
    return KeyMap(weights, tied=tied)


LLAMA = Adapter(
    model_type="llama",
    family=DecoderTransformer,
    config_class=DecoderConfig,
    prefix_marker="embed_tokens.weight",
    renamed=RENAMED,
    required=REQUIRED,
    converted=frozenset({"n_kv_heads", "rope_base", "bias", "pad_token_id"}),
    unused=frozenset({"dropout", "init_std", "scaled_residual_init"}),
    hf_defaults=DEFAULTS,
    our_config=our_config,
    hf_config=hf_config,
    blockers=lambda cfg, head: [],
    hf_class=lambda cfg, head: "LlamaForCausalLM",
    keymap=keymap,
)
