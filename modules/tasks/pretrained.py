"""Start a task's model from pretrained weights: a HF folder (or `package:MODULE`) through
`from_hf`, or a checkpoint of one of our own runs (.ckpt). An encoder-decoder can also start
from a BERT-style encoder (`modules.warm_start`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from modules.interop import from_hf
from modules.models import EncoderDecoderTransformer, EncoderTransformer
from modules.warm_start import warm_start

RUNTIME_KEYS = {"dropout", "attn_dropout"}  # what may differ from the pretrained model


def pretrained_model(
    init_from: str,
    model_class: type[nn.Module],
    vocab_size: int | None,
    arch: dict[str, Any] | None = None,
    decoder_from_encoder: bool = True,
    **changes: Any,
) -> nn.Module:
    """The pretrained model with the configured dropout (`arch` may change nothing else) and
    `changes` (e.g. dropping a head); checked against the data's vocabulary. An encoder-decoder
    from an encoder is warm-started: the encoder from it and, with `decoder_from_encoder`, the
    decoder's embeddings, self-attention and feed-forward too (`arch` may then also set
    `n_decoder_layers`); the log lists the tensors loaded and the ones that start fresh."""
    if init_from.endswith(".ckpt"):
        from modules.tasks.checkpoints import load_model

        source = load_model(Path(init_from), nn.Module)
    else:
        source = from_hf(init_from)
    warm = model_class is EncoderDecoderTransformer and isinstance(source, EncoderTransformer)
    extra = sorted(set(arch or {}) - RUNTIME_KEYS - ({"n_decoder_layers"} if warm else set()))
    if extra:
        raise ValueError(f"model.arch {extra} cannot change the pretrained weights of {init_from}")
    if not warm and not isinstance(source, model_class):
        raise ValueError(
            f"{init_from} holds a {type(source).__name__}, not a {model_class.__name__}"
        )
    cfg: Any = source.cfg
    if vocab_size is not None and cfg.vocab_size != vocab_size:
        raise ValueError(
            f"{init_from} has a vocabulary of {cfg.vocab_size} tokens but the data "
            f"module's tokenizer has {vocab_size}; use the model's own tokenizer.json "
            "(data.tokenizer.path)"
        )
    if warm:
        started = warm_start(source, decoder_from_encoder, **(arch or {}), **changes)  # type: ignore[arg-type]
        rank_zero_info(started.report(init_from))
        return started.model
    model = model_class(dataclasses.replace(cfg, **(arch or {}), **changes))
    wanted = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in source.state_dict().items() if k in wanted})
    return model
