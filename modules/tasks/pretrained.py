"""Start a task's model from pretrained weights: a HF folder (or `package:MODULE`) through
`from_hf`, or a checkpoint of one of our own runs (.ckpt)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from modules.config import DecoderConfig, EncoderConfig, TransformerConfig
from modules.interop import from_hf
from modules.models import DecoderTransformer, EncoderTransformer
from modules.tasks.base import TaskModule

CONFIGS: dict[type[nn.Module], type[TransformerConfig]] = {
    DecoderTransformer: DecoderConfig,
    EncoderTransformer: EncoderConfig,
}
RUNTIME_KEYS = {"dropout", "attn_dropout"}  # what may differ from the pretrained model


def load_checkpoint_model(path: str, family: type[nn.Module]) -> nn.Module:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    linked = {"vocab_size": hparams["vocab_size"]}
    if hparams.get("pad_id") is not None:
        linked["pad_token_id"] = hparams["pad_id"]
    cfg = CONFIGS[family].from_preset(hparams["preset"], **(hparams.get("arch") or {}), **linked)
    model = family(cfg)
    weights = {
        k.removeprefix("model."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("model.")
    }
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit a {family.__name__}: {error}") from error
    return model


def pretrained_model(
    init_from: str,
    family: type[nn.Module],
    vocab_size: int,
    arch: dict[str, Any] | None = None,
    **changes: Any,
) -> nn.Module:
    """The pretrained `family` model with the configured dropout (`arch` may change nothing
    else) and `changes` (e.g. dropping a head); checked against the data's vocabulary."""
    extra = sorted(set(arch or {}) - RUNTIME_KEYS)
    if extra:
        raise ValueError(f"model.arch {extra} cannot change the pretrained weights of {init_from}")
    source = (
        load_checkpoint_model(init_from, family)
        if init_from.endswith(".ckpt")
        else from_hf(init_from)
    )
    if not isinstance(source, family):
        raise ValueError(f"{init_from} holds a {type(source).__name__}, not a {family.__name__}")
    if source.cfg.vocab_size != vocab_size:
        raise ValueError(
            f"{init_from} has a vocabulary of {source.cfg.vocab_size} tokens but the data "
            f"module's tokenizer has {vocab_size}; use the model's own tokenizer.json "
            "(data.tokenizer.path)"
        )
    model = family(dataclasses.replace(source.cfg, **(arch or {}), **changes))
    wanted = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in source.state_dict().items() if k in wanted})
    return model


def fine_tuning_encoder(
    task: TaskModule,
    init_from: str | None,
    preset: str,
    arch: dict[str, Any] | None,
    vocab_size: int,
    pad_id: int,
    **heads: bool,
) -> EncoderTransformer:
    """The encoder of a fine-tuning task: pretrained from `init_from`, or a new `preset` one;
    `heads` turns the MLM head and the pooler on or off (mlm_head=..., pooler=...)."""
    if init_from:
        model = pretrained_model(init_from, EncoderTransformer, vocab_size, arch, **heads)
    else:
        cfg = task.build_config(preset, arch, vocab_size=vocab_size, pad_token_id=pad_id, **heads)
        model = EncoderTransformer(cfg)  # type: ignore[arg-type]
    assert isinstance(model, EncoderTransformer)
    return model
