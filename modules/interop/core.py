"""What every Hugging Face mapping is made of: an `Adapter` per HF architecture, holding one
declarative config table and one key table (`KeyMap`) that serve import and export alike, in the
manner of torchtitan's state_dict_adapter.

Import (`to_ours`) and export (`to_theirs`) check every key and shape both ways: a checkpoint
or a model that does not fit fails with the keys named instead of converting half its weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from modules.config import TransformerConfig

# How a HF tensor is laid out relative to ours: the same, transposed (GPT-2's Conv1D stores
# (in, out)), or as a (1, n) row of our (n,) vector (Marian's final_logits_bias).
Layout = Literal["same", "transposed", "row"]
# (our key, HF keys concatenated along dim 0 to make it, their layout)
Entry = tuple[str, tuple[str, ...], Layout]

# HF activation names -> ours, and ours -> the HF name export writes (exactly our function).
ACTIVATIONS_FROM_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "swish": "silu",
    "silu": "silu",
}
ACTIVATIONS_TO_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "silu": "silu",
}


class NoEquivalent(ValueError):
    """Our model has no exact counterpart in any Hugging Face architecture we export to."""


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens our data path uses (named as on `Codec`): padding, the
    start token (BERT's [CLS], the decoder's first input), the end token ([SEP], end of text),
    and the mask and unknown tokens where the vocabulary has them."""

    pad_id: int
    bos_id: int
    eos_id: int
    mask_id: int | None = None
    unk_id: int | None = None


@dataclass
class TaskHead:
    """A fine-tuning head on an encoder. "classification": `linear` maps the pooled first token
    to one logit per class (`labels` names them); "question_answering": `linear` maps every
    token to a start and an end logit."""

    kind: Literal["classification", "question_answering"]
    linear: nn.Linear
    labels: list[str] | None = None


class HFConfig(dict):
    """A config.json read as attributes, with the architecture's defaults for missing keys
    (HF leaves out values equal to its defaults)."""

    def __init__(self, values: dict[str, Any], defaults: dict[str, Any]) -> None:
        super().__init__(values)
        self.defaults = defaults

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in self.defaults:
            return self.defaults[name]
        raise AttributeError(f"config.json has no {name!r}")


@dataclass
class KeyMap:
    """How our state dict and one HF architecture's correspond.

    tied: HF keys that hold the same tensor as another HF key (shared embeddings);
    computed: HF buffers that each side computes itself (position tables, position ids);
    dropped: prefixes of HF weights that import leaves out on purpose (BERT's next-sentence head).
    """

    weights: list[Entry]
    tied: dict[str, str] = field(default_factory=dict)
    computed: set[str] = field(default_factory=set)
    dropped: tuple[str, ...] = ()


def linear(ours: str, *theirs: str, bias: bool = True) -> list[Entry]:
    """Weight (and bias) of one of our linear or norm layers from one or more HF layers."""
    entries: list[Entry] = [(f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), "same")]
    if bias:
        entries.append((f"{ours}.bias", tuple(f"{t}.bias" for t in theirs), "same"))
    return entries


@dataclass(frozen=True)
class Adapter:
    """One HF architecture. Every field of our config dataclass is in exactly one of `renamed`
    (the same value under another name), `required` (the only value the architecture has),
    `converted` (handled by `our_config` / `hf_config`) or `unused` (does not change what the
    model computes: initialisation, and dropout where HF has none)."""

    model_type: str  # HF config.model_type
    family: type[nn.Module]
    config_class: type[TransformerConfig]
    prefix_marker: str  # the end of a key every checkpoint has, after the base model's prefix
    renamed: dict[str, str]
    required: dict[str, Any]
    converted: frozenset[str]
    unused: frozenset[str]
    hf_defaults: dict[str, Any]
    our_config: Callable[[Any, dict[str, Tensor], str], dict[str, Any]]  # HF config, state, prefix
    hf_config: Callable[[Any, SpecialTokens, TaskHead | None], dict[str, Any]]
    blockers: Callable[[Any, TaskHead | None], list[str]]  # beyond `required`
    hf_class: Callable[[Any, TaskHead | None], str]
    keymap: Callable[[Any, str, str | None], KeyMap]  # (our config, prefix, head kind)
    build: Callable[[Any, Any, Any, TaskHead | None], Any] | None = None  # custom HF model

    def hf_model(self, transformers: Any, config: Any, cfg: Any, head: TaskHead | None) -> Any:
        """A new HF model of this architecture (random weights) for `config`."""
        if self.build is not None:
            return self.build(transformers, config, cfg, head)
        return getattr(transformers, self.hf_class(cfg, head))(config)

    def blocking(self, cfg: TransformerConfig, head: TaskHead | None) -> list[str]:
        """Our config's fields that have no exact equivalent in this architecture."""
        found = [
            f"{name}={getattr(cfg, name)!r} (it has only {value!r})"
            for name, value in self.required.items()
            if canonical(cfg, name) != value
        ]
        return found + self.blockers(cfg, head)


def canonical(cfg: TransformerConfig, name: str) -> Any:
    """A config field with the spellings of "the default" made one: grouped-query heads equal
    to the heads and a key size equal to the head size are both None."""
    value = getattr(cfg, name)
    if name == "n_kv_heads" and value == cfg.n_heads:
        return None
    if name == "key_dim" and value == cfg.head_dim:
        return None
    return value


def activation_from_hf(name: str) -> str:
    if name not in ACTIVATIONS_FROM_HF:
        raise ValueError(
            f"unsupported HF activation {name!r}; known: {sorted(ACTIVATIONS_FROM_HF)}"
        )
    return ACTIVATIONS_FROM_HF[name]


def own_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict without the second names of shared (tied) parameters."""
    aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)} - {
        name for name, _ in model.named_parameters()
    }
    return {k: v for k, v in model.state_dict().items() if k not in aliases}


def to_ours(
    keymap: KeyMap, theirs: dict[str, Tensor], ours: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Our tensors made from a HF state dict; `ours` gives the keys and shapes we need."""
    new: dict[str, Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for our_key, hf_keys, layout in keymap.weights:
        missing = [k for k in hf_keys if k not in theirs]
        if missing:
            problems.append(f"HF checkpoint lacks {missing} (for {our_key})")
            continue
        tensor = torch.cat([_from_layout(theirs[k], layout) for k in hf_keys])
        if our_key not in ours:
            problems.append(f"our model has no {our_key} (from {list(hf_keys)})")
        elif tensor.shape != ours[our_key].shape:
            problems.append(
                f"{our_key}: shape {tuple(ours[our_key].shape)} but HF {list(hf_keys)} gives "
                f"{tuple(tensor.shape)}"
            )
        new[our_key] = tensor
        used.update(hf_keys)
    for key, source in keymap.tied.items():
        if key in theirs:
            if not torch.equal(theirs[key], theirs[source]):
                problems.append(f"HF {key} is not tied to {source}; untied weights unsupported")
            used.add(key)
    uncovered = sorted(set(ours) - set(new))
    if uncovered:
        problems.append(f"our weights not found in the HF checkpoint: {uncovered}")
    unused = sorted(
        k for k in set(theirs) - used - keymap.computed if not k.startswith(keymap.dropped)
    )
    if unused:
        problems.append(f"HF weights that have no place in our model: {unused}")
    if problems:
        raise ValueError("cannot load the HF checkpoint:\n  " + "\n  ".join(problems))
    return new


def to_theirs(
    keymap: KeyMap, ours: dict[str, Tensor], theirs: dict[str, Tensor]
) -> dict[str, Tensor]:
    """A HF state dict made from ours; `theirs` is the HF model's own state dict (its keys,
    shapes and the buffers it computes itself)."""
    new: dict[str, Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for our_key, hf_keys, layout in keymap.weights:
        missing = [k for k in hf_keys if k not in theirs]
        if missing or our_key not in ours:
            problems.append(f"no place for {our_key} in HF {list(hf_keys)}")
            continue
        sizes = [_from_layout(theirs[k], layout).size(0) for k in hf_keys]
        if sum(sizes) != ours[our_key].size(0):
            problems.append(f"{our_key}: {ours[our_key].size(0)} rows, HF {hf_keys} has {sizes}")
            continue
        for key, piece in zip(hf_keys, ours[our_key].split(sizes), strict=True):
            new[key] = _to_layout(piece, layout).contiguous()
            if new[key].shape != theirs[key].shape:
                problems.append(
                    f"{key}: HF shape {tuple(theirs[key].shape)} but {our_key} gives "
                    f"{tuple(new[key].shape)}"
                )
        used.add(our_key)
    for key, source in keymap.tied.items():
        if key in theirs and source in new:
            new[key] = new[source]
    for key in keymap.computed & set(theirs):
        new[key] = theirs[key]
    unfilled = sorted(set(theirs) - set(new))
    if unfilled:
        problems.append(f"HF weights our model has nothing for: {unfilled}")
    left = sorted(set(ours) - used)
    if left:
        problems.append(f"our weights that have no place in the HF model: {left}")
    if problems:
        raise ValueError("cannot export to the HF model:\n  " + "\n  ".join(problems))
    return new


def _from_layout(tensor: Tensor, layout: Layout) -> Tensor:
    if layout == "transposed":
        return tensor.t()
    if layout == "row":
        return tensor.reshape(-1)
    return tensor


def _to_layout(tensor: Tensor, layout: Layout) -> Tensor:
    if layout == "transposed":
        return tensor.t()
    if layout == "row":
        return tensor.reshape(1, -1)
    return tensor
