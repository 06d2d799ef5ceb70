"""Start a task's model from pretrained weights: a HF folder (or `package:MODULE`) through
`from_hf`, or a checkpoint of one of our own runs (.ckpt)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from modules.interop import from_hf

RUNTIME_KEYS = {"dropout", "attn_dropout"}  # what may differ from the pretrained model


def pretrained_model(
    init_from: str,
    model_class: type[nn.Module],
    vocab_size: int | None,
    arch: dict[str, Any] | None = None,
    **changes: Any,
) -> nn.Module:
    """The pretrained model with the configured dropout (`arch` may change nothing else) and
    `changes` (e.g. dropping a head); checked against the data's vocabulary."""
    extra = sorted(set(arch or {}) - RUNTIME_KEYS)
    if extra:
        raise ValueError(f"model.arch {extra} cannot change the pretrained weights of {init_from}")
    if init_from.endswith(".ckpt"):
        from modules.tasks.checkpoints import load_model

        source = load_model(Path(init_from), model_class)
    else:
        source = from_hf(init_from)
    if not isinstance(source, model_class):
        raise ValueError(
            f"{init_from} holds a {type(source).__name__}, not a {model_class.__name__}"
        )
    if vocab_size is not None and source.cfg.vocab_size != vocab_size:
        raise ValueError(
            f"{init_from} has a vocabulary of {source.cfg.vocab_size} tokens but the data "
            f"module's tokenizer has {vocab_size}; use the model's own tokenizer.json "
            "(data.tokenizer.path)"
        )
    model = model_class(dataclasses.replace(source.cfg, **(arch or {}), **changes))
    wanted = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in source.state_dict().items() if k in wanted})
    return model
