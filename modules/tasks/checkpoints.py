"""How a checkpoint becomes a task or a model, in one place: read a file (with errors that say
what is wrong with it), bring a checkpoint of an older format up to date, rebuild the task from
the resolved model config and codec stored inside, or take just its model."""

from __future__ import annotations

import importlib
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.models import FAMILIES
from modules.tasks.base import FORMAT_VERSION, TaskModule

RENAMED_FIELDS = {"max_len": "max_length"}  # model config fields renamed since format 1
FORMAT_1_LINKED = ("vocab_size", "pad_id", "bos_id", "eos_id", "tokenizer_path", "bleu")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, memory-mapped (tensors are read only when used), or a clear
    error for a file that is missing, damaged or not a checkpoint."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is not a file")
    with path.open("rb") as file:
        start = file.read(4)
    if start != b"PK\x03\x04":  # torch.save writes a zip archive
        raise ValueError(
            f"{path} is not a readable checkpoint: not written by torch.save (a checkpoint is a "
            f"zip archive; this file starts with {start!r})"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} is not a readable checkpoint: truncated or damaged (a copy or download that "
            f"stopped early?), {path.stat().st_size:,} bytes: {reason}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} holds no model weights (no state_dict): not a training checkpoint"
        )
    version = checkpoint.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer transformer-suite (checkpoint format {version}; this "
            f"version reads up to {FORMAT_VERSION}): upgrade transformer-suite"
        )
    return checkpoint


def import_task(name: str) -> type[TaskModule]:
    """The task class of a dotted name such as `modules.tasks.TranslationModule`."""
    module_name, _, class_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, TaskModule)):
        raise ValueError(f"{name} is not a transformer-suite task class")
    return cls


def task_class(checkpoint: dict[str, Any], path: Path) -> type[TaskModule]:
    name = checkpoint.get("task_class")
    if not name:
        raise ValueError(f"{path} is not a transformer-suite task checkpoint (no task_class)")
    return import_task(name)


def describe_checkpoint(checkpoint: dict[str, Any], path: Path) -> str:
    """What a checkpoint holds, e.g. 'a CausalLMModule (decoder, 4 layers, d_model 192)'."""
    cls = task_class(checkpoint, path)
    arch = checkpoint.get("hyper_parameters", {}).get("arch") or {}
    size = f", {arch['n_layers']} layers, d_model {arch['d_model']}" if "d_model" in arch else ""
    return f"a {cls.__name__} ({cls.family}{size}, step {checkpoint.get('global_step', '?')})"


def upgraded(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint of format 1 (the tokenizer's facts as task arguments, the model rebuilt from
    its preset) in the current format: the model config resolved with today's presets (what
    loading it did before), the codec made from the stored tokenizer."""
    if checkpoint.get("format_version", 1) >= FORMAT_VERSION:
        return checkpoint
    cls = task_class(checkpoint, path)
    hparams = dict(checkpoint["hyper_parameters"])
    arch = {RENAMED_FIELDS.get(k, k): v for k, v in (hparams.get("arch") or {}).items()}
    linked = {"vocab_size": hparams["vocab_size"]}
    if hparams.get("pad_id") is not None:
        linked["pad_token_id"] = hparams["pad_id"]
    _, config_class = FAMILIES[cls.family]
    fields = {**arch, **linked, **cls.model_changes}
    if hparams.get("init_from"):  # the pretrained model's config, as it was built then
        from modules.tasks.pretrained import pretrained_model

        model_class = FAMILIES[cls.family][0]
        source = pretrained_model(
            hparams["init_from"], model_class, None, arch, **cls.model_changes
        )
        cfg = source.cfg  # type: ignore[assignment]
    else:
        cfg = config_class.from_preset(hparams.get("preset", "tiny"), **fields)
    for key in FORMAT_1_LINKED:
        hparams.pop(key, None)
    out = {k: v for k, v in checkpoint.items() if k != "tokenizer_json"}
    out["hyper_parameters"] = {**hparams, "arch": asdict(cfg), "init_from": None}
    if "tokenizer_json" in checkpoint:
        out["codec"] = {"tokenizer": checkpoint["tokenizer_json"], "family": cls.family}
    out["format_version"] = FORMAT_VERSION
    return out


def load_task(
    path: Path,
    device: str = "cpu",
    expected: type[TaskModule] | tuple[type[TaskModule], ...] = TaskModule,
    purpose: str = "",
) -> TaskModule:
    """The task of one of our checkpoints, built from the model config and codec inside (the
    presets and tokenizer files of today do not matter), in eval mode. A checkpoint of a task
    other than `expected` is refused with what it holds and the `purpose` it cannot serve."""
    checkpoint = upgraded(read_checkpoint(path), path)
    cls = task_class(checkpoint, path)
    if not issubclass(cls, expected):
        raise ValueError(f"{path} holds {describe_checkpoint(checkpoint, path)}; {purpose}")
    # LightningCLI adds _class_path and _instantiator to the hyperparameters
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    task = cls(**hparams)
    task.on_load_checkpoint(checkpoint)
    weights = {k: v for k, v in checkpoint["state_dict"].items()}
    try:
        task.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(
            f"{path}: the weights do not fit {describe_checkpoint(checkpoint, path)}: {error}"
        ) from error
    return task.to(device).eval()


def load_model(path: Path, model_class: type[nn.Module]) -> nn.Module:
    """Only the model of one of our checkpoints (to fine-tune it in another task)."""
    task = load_task(path)
    if not isinstance(task.model, model_class):
        raise ValueError(
            f"{path} holds {describe_checkpoint(read_checkpoint(path), path)}, whose model is a "
            f"{type(task.model).__name__}, not a {model_class.__name__}"
        )
    return task.model
