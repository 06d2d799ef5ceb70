"""Our encoder-only model <-> BERT: `BertForMaskedLM` (MLM head), `BertForSequenceClassification`
(pooler + classifier), `BertForQuestionAnswering` (qa_outputs), or a bare `BertModel`.

A pooler that the HF class does not build (an MLM model that also has one) is kept on the
exported model's `bert.pooler`, where `BertForSequenceClassification` finds it when it loads
the folder, as it does from Google's BERT checkpoints.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from modules.config import EncoderConfig
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
from modules.models import EncoderTransformer

RENAMED = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_layers": "num_hidden_layers",
    "d_ff": "intermediate_size",
    "max_length": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "norm_eps": "layer_norm_eps",
    "dropout": "hidden_dropout_prob",
    "attn_dropout": "attention_probs_dropout_prob",
}
REQUIRED = {
    "n_kv_heads": None,
    "key_dim": None,
    "norm": "layernorm",
    "pre_norm": False,
    "positions": "learned",
    "bias": True,
    "scale_embeddings": False,
    "embedding_norm": True,
}
DEFAULTS = {
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "type_vocab_size": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "id2label": None,
    "is_decoder": False,
}
HEAD_KEYS = {"classification": "classifier", "question_answering": "qa_outputs"}


def head_kind(state: dict[str, Tensor]) -> str | None:
    """The standard task head a BERT checkpoint carries, if any."""
    return next((kind for kind, key in HEAD_KEYS.items() if f"{key}.weight" in state), None)


def our_config(c: Any, state: dict[str, Tensor], p: str) -> dict[str, Any]:
    if c.position_embedding_type != "absolute":
        raise ValueError(f"BERT position_embedding_type={c.position_embedding_type!r} unsupported")
    if c.is_decoder:
        raise ValueError("BERT with is_decoder=True (causal attention) is unsupported")
    return {
        "activation": activation_from_hf(c.hidden_act),
        "mlm_head": "cls.predictions.bias" in state,
        "pooler": f"{p}pooler.dense.weight" in state,
        "tie_embeddings": True,
        "pad_token_id": c.pad_token_id,
    }


def hf_config(cfg: EncoderConfig, specials: SpecialTokens, head: TaskHead | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "hidden_act": ACTIVATIONS_TO_HF[cfg.activation],
        "pad_token_id": specials.pad_id,
    }
    if head is not None and head.kind == "classification":
        labels = head.labels or [f"LABEL_{i}" for i in range(head.linear.out_features)]
        values["id2label"] = dict(enumerate(labels))
        values["label2id"] = {label: i for i, label in enumerate(labels)}
    return values


def blockers(cfg: EncoderConfig, head: TaskHead | None) -> list[str]:
    found = []
    if cfg.activation not in ACTIVATIONS_TO_HF:
        found.append(f"activation={cfg.activation!r} (BERT has an ungated MLP)")
    if cfg.type_vocab_size < 1:
        found.append("type_vocab_size=0 (BERT always adds a token-type embedding)")
    if cfg.mlm_head and not cfg.tie_embeddings:
        found.append("tie_embeddings=False (BERT's MLM decoder is the word embedding)")
    if head is not None and cfg.mlm_head:
        found.append(f"mlm_head=True (a {head.kind} BERT has no MLM head)")
    if head is not None and head.kind == "classification" and not cfg.pooler:
        found.append("pooler=False (BertForSequenceClassification classifies the pooled token)")
    return found


def hf_class(cfg: EncoderConfig, head: TaskHead | None) -> str:
    if head is not None:
        return {
            "classification": "BertForSequenceClassification",
            "question_answering": "BertForQuestionAnswering",
        }[head.kind]
    return "BertForMaskedLM" if cfg.mlm_head else "BertModel"


def build(transformers: Any, config: Any, cfg: EncoderConfig, head: TaskHead | None) -> Any:
    name = hf_class(cfg, head)
    if name == "BertModel":
        return transformers.BertModel(config, add_pooling_layer=cfg.pooler)
    model = getattr(transformers, name)(config)
    if cfg.pooler and model.bert.pooler is None:
        from transformers.models.bert.modeling_bert import BertPooler

        model.bert.pooler = BertPooler(config)
    return model


def keymap(cfg: EncoderConfig, p: str, head: str | None) -> KeyMap:
    e = f"{p}embeddings."
    weights: list[Entry] = [
        ("embed.tokens.weight", (f"{e}word_embeddings.weight",), "same"),
        ("embed.positions.weight", (f"{e}position_embeddings.weight",), "same"),
        ("embed.token_types.weight", (f"{e}token_type_embeddings.weight",), "same"),
    ]
    weights += linear("embed.norm", f"{e}LayerNorm")
    for i in range(cfg.n_layers):
        ours, theirs = f"stack.blocks.{i}.", f"{p}encoder.layer.{i}."
        qkv = (f"{theirs}attention.self.{n}" for n in ("query", "key", "value"))
        weights += linear(f"{ours}self_attn.qkv", *qkv)
        weights += linear(f"{ours}self_attn.out", f"{theirs}attention.output.dense")
        weights += linear(f"{ours}self_attn_norm", f"{theirs}attention.output.LayerNorm")
        weights += linear(f"{ours}ffn.up", f"{theirs}intermediate.dense")
        weights += linear(f"{ours}ffn.down", f"{theirs}output.dense")
        weights += linear(f"{ours}ffn_norm", f"{theirs}output.LayerNorm")
    if cfg.pooler:
        weights += linear("pooler.dense", f"{p}pooler.dense")
    tied = {}
    if cfg.mlm_head:
        weights += linear("mlm_head.dense", "cls.predictions.transform.dense")
        weights += linear("mlm_head.norm", "cls.predictions.transform.LayerNorm")
        weights.append(("mlm_head.decoder.bias", ("cls.predictions.bias",), "same"))
        tied = {
            "cls.predictions.decoder.weight": f"{e}word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        }
    if head is not None:
        weights += linear("head", HEAD_KEYS[head])  # our task head, beside the encoder
    return KeyMap(
        weights,
        tied=tied,
        computed={f"{e}position_ids", f"{e}token_type_ids"},
        dropped=("cls.seq_relationship.",),  # next-sentence head of BertForPreTraining
    )


BERT = Adapter(
    model_type="bert",
    family=EncoderTransformer,
    config_class=EncoderConfig,
    prefix_marker="embeddings.word_embeddings.weight",
    renamed=RENAMED,
    required=REQUIRED,
    converted=frozenset({"activation", "mlm_head", "pooler", "tie_embeddings", "pad_token_id"}),
    unused=frozenset({"rope_base", "init_std", "scaled_residual_init"}),
    hf_defaults=DEFAULTS,
    our_config=our_config,
    hf_config=hf_config,
    blockers=blockers,
    hf_class=hf_class,
    keymap=keymap,
    build=build,
)
