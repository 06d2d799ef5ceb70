"""The paper's encoder-decoder (sinusoidal positions, scaled embeddings, one shared and tied
vocabulary, post-LN) <-> `MarianMTModel` (and `MarianModel`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from modules.config import EncoderDecoderConfig
from modules.interop.core import (
    ACTIVATIONS_TO_HF,
    Adapter,
    Entry,
    KeyMap,
    SpecialTokens,
    TaskHead,
    activation_from_hf,
    linear,
)
from modules.models import EncoderDecoderTransformer
from modules.positions import sinusoidal_table

RENAMED = {
    "vocab_size": "vocab_size",
    "d_model": "d_model",
    "n_heads": "encoder_attention_heads",
    "n_layers": "encoder_layers",
    "d_ff": "encoder_ffn_dim",
    "max_length": "max_position_embeddings",
    "dropout": "dropout",
    "attn_dropout": "attention_dropout",
    "scale_embeddings": "scale_embedding",
}
REQUIRED = {
    "n_kv_heads": None,
    "key_dim": None,
    "norm": "layernorm",
    "norm_eps": 1e-5,  # Marian's LayerNorms use PyTorch's default
    "pre_norm": False,
    "positions": "sinusoidal",
    "bias": True,
    "embedding_norm": False,
    "tie_embeddings": True,
}
DEFAULTS = {
    "activation_function": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "scale_embedding": False,
    "pad_token_id": 58100,
    "share_encoder_decoder_embeddings": True,
    "tie_word_embeddings": True,
}
BIAS = "final_logits_bias"


def our_config(c: Any, state: dict[str, Tensor], p: str) -> dict[str, Any]:
    if not c.share_encoder_decoder_embeddings or not c.tie_word_embeddings:
        raise ValueError("Marian models with separate or untied vocabularies are unsupported")
    if (
        c.encoder_attention_heads != c.decoder_attention_heads
        or c.encoder_ffn_dim != c.decoder_ffn_dim
    ):
        raise ValueError("Marian encoder and decoder must have the same heads and FFN size")
    for side in ("encoder", "decoder"):  # our sinusoidal table must be the one HF uses
        theirs = state.get(f"{p}{side}.embed_positions.weight")
        if theirs is not None:
            ours = sinusoidal_table(theirs.size(0), c.d_model)
            if not torch.allclose(theirs.float(), ours, atol=1e-5):
                raise ValueError(f"Marian {side} position table differs from our sinusoidal table")
    return {
        "n_decoder_layers": None if c.decoder_layers == c.encoder_layers else c.decoder_layers,
        "activation": activation_from_hf(c.activation_function),
        "pad_token_id": c.pad_token_id,
        "head_bias": BIAS in state and bool(state[BIAS].any()),  # a zero bias is no bias
    }


def hf_config(
    cfg: EncoderDecoderConfig, specials: SpecialTokens, head: TaskHead | None
) -> dict[str, Any]:
    return {
        "decoder_layers": cfg.decoder_layers,
        "decoder_attention_heads": cfg.n_heads,
        "decoder_ffn_dim": cfg.d_ff,
        "activation_function": ACTIVATIONS_TO_HF[cfg.activation],
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
        "pad_token_id": specials.pad_id,
        "bos_token_id": specials.bos_id,
        "eos_token_id": specials.eos_id,
        "decoder_start_token_id": specials.bos_id,  # our decoder starts from bos
        "forced_eos_token_id": None,
    }


def blockers(cfg: EncoderDecoderConfig, head: TaskHead | None) -> list[str]:
    if cfg.activation not in ACTIVATIONS_TO_HF:
        return [f"activation={cfg.activation!r} (Marian has an ungated MLP)"]
    return []


def keymap(cfg: EncoderDecoderConfig, p: str, head: str | None) -> KeyMap:
    weights: list[Entry] = [("encoder_embed.tokens.weight", (f"{p}shared.weight",), "same")]
    for side, n_layers in (("encoder", cfg.n_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n_layers):
            ours, theirs = f"{side}.blocks.{i}.", f"{p}{side}.layers.{i}."
            qkv = (f"{theirs}self_attn.{n}_proj" for n in "qkv")
            weights += linear(f"{ours}self_attn.qkv", *qkv)
            weights += linear(f"{ours}self_attn.out", f"{theirs}self_attn.out_proj")
            weights += linear(f"{ours}self_attn_norm", f"{theirs}self_attn_layer_norm")
            weights += linear(f"{ours}ffn.up", f"{theirs}fc1")
            weights += linear(f"{ours}ffn.down", f"{theirs}fc2")
            weights += linear(f"{ours}ffn_norm", f"{theirs}final_layer_norm")
            if side == "decoder":
                weights += linear(f"{ours}cross_attn.q", f"{theirs}encoder_attn.q_proj")
                kv = (f"{theirs}encoder_attn.{n}_proj" for n in "kv")
                weights += linear(f"{ours}cross_attn.kv", *kv)
                weights += linear(f"{ours}cross_attn.out", f"{theirs}encoder_attn.out_proj")
                weights += linear(f"{ours}cross_attn_norm", f"{theirs}encoder_attn_layer_norm")
    computed = {f"{p}encoder.embed_positions.weight", f"{p}decoder.embed_positions.weight"}
    if cfg.head_bias:
        weights.append(("lm_head.bias", (BIAS,), "row"))
    else:
        computed.add(BIAS)  # HF's zeros
    tied = {
        f"{p}encoder.embed_tokens.weight": f"{p}shared.weight",
        f"{p}decoder.embed_tokens.weight": f"{p}shared.weight",
        "lm_head.weight": f"{p}shared.weight",
    }
    return KeyMap(weights, tied=tied, computed=computed)


MARIAN = Adapter(
    model_type="marian",
    family=EncoderDecoderTransformer,
    config_class=EncoderDecoderConfig,
    prefix_marker="shared.weight",
    renamed=RENAMED,
    required=REQUIRED,
    converted=frozenset({"activation", "n_decoder_layers", "head_bias", "pad_token_id"}),
    unused=frozenset({"rope_base", "init_std", "scaled_residual_init"}),
    hf_defaults=DEFAULTS,
    our_config=our_config,
    hf_config=hf_config,
    blockers=blockers,
    hf_class=lambda cfg, head: "MarianMTModel",
    keymap=keymap,
)
