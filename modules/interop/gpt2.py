"""Our decoder-only model in its GPT-2 form <-> `GPT2LMHeadModel` (and `GPT2Model`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from modules.config import DecoderConfig
from modules.interop.core import (
    ACTIVATIONS_TO_HF,
    Adapter,
    Entry,
    KeyMap,
    SpecialTokens,
    TaskHead,
    activation_from_hf,
)
from modules.models import DecoderTransformer

RENAMED = {
    "vocab_size": "vocab_size",
    "d_model": "n_embd",
    "n_heads": "n_head",
    "n_layers": "n_layer",
    "max_length": "n_positions",
    "norm_eps": "layer_norm_epsilon",
    "dropout": "resid_pdrop",
    "attn_dropout": "attn_pdrop",
}
REQUIRED = {
    "positions": "learned",
    "norm": "layernorm",
    "pre_norm": True,
    "bias": True,
    "scale_embeddings": False,
    "embedding_norm": False,
    "tie_embeddings": True,
    "n_kv_heads": None,
    "key_dim": None,
}
DEFAULTS = {
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "resid_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "pad_token_id": None,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "reorder_and_upcast_attn": False,
}


def our_config(c: Any, state: dict[str, Tensor], p: str) -> dict[str, Any]:
    if c.scale_attn_by_inverse_layer_idx or not c.scale_attn_weights:
        raise ValueError("GPT-2 with scale_attn_by_inverse_layer_idx or unscaled attention")
    return {
        "d_ff": c.n_inner or 4 * c.n_embd,
        "activation": activation_from_hf(c.activation_function),
        "pad_token_id": c.pad_token_id,
    }


def hf_config(cfg: DecoderConfig, specials: SpecialTokens, head: TaskHead | None) -> dict[str, Any]:
    return {
        "n_inner": cfg.d_ff,
        "embd_pdrop": cfg.dropout,
        "activation_function": ACTIVATIONS_TO_HF[cfg.activation],
        "bos_token_id": specials.bos_id,
        "eos_token_id": specials.eos_id,
        "pad_token_id": specials.pad_id,
    }


def blockers(cfg: DecoderConfig, head: TaskHead | None) -> list[str]:
    if cfg.activation not in ACTIVATIONS_TO_HF:
        return [f"activation={cfg.activation!r} (it has an ungated MLP)"]
    return []


def keymap(cfg: DecoderConfig, p: str, head: str | None) -> KeyMap:
    weights: list[Entry] = [
        ("embed.tokens.weight", (f"{p}wte.weight",), "same"),
        ("embed.positions.weight", (f"{p}wpe.weight",), "same"),
        ("stack.final_norm.weight", (f"{p}ln_f.weight",), "same"),
        ("stack.final_norm.bias", (f"{p}ln_f.bias",), "same"),
    ]
    pairs = {
        "self_attn_norm": "ln_1",
        "self_attn.qkv": "attn.c_attn",
        "self_attn.out": "attn.c_proj",
        "ffn_norm": "ln_2",
        "ffn.up": "mlp.c_fc",
        "ffn.down": "mlp.c_proj",
    }
    for i in range(cfg.n_layers):
        for ours, theirs in pairs.items():
            layout = "same" if "norm" in ours else "transposed"  # Conv1D stores (in, out)
            weights.append(
                (f"stack.blocks.{i}.{ours}.weight", (f"{p}h.{i}.{theirs}.weight",), layout)
            )
            weights.append((f"stack.blocks.{i}.{ours}.bias", (f"{p}h.{i}.{theirs}.bias",), "same"))
    return KeyMap(weights, tied={"lm_head.weight": f"{p}wte.weight"})


GPT2 = Adapter(
    model_type="gpt2",
    family=DecoderTransformer,
    config_class=DecoderConfig,
    prefix_marker="wte.weight",
    renamed=RENAMED,
    required=REQUIRED,
    converted=frozenset({"d_ff", "activation", "pad_token_id"}),
    unused=frozenset({"rope_base", "init_std", "scaled_residual_init"}),
    hf_defaults=DEFAULTS,
    our_config=our_config,
    hf_config=hf_config,
    blockers=blockers,
    hf_class=lambda cfg, head: "GPT2LMHeadModel",
    keymap=keymap,
)
