"""Hugging Face interop: load GPT-2, Llama, BERT and Marian weights into our models (`from_hf`)
and export our models back (`to_hf`, then `save_hf_folder` for a folder `from_pretrained` reads).

Each HF architecture has one adapter (`modules/interop/gpt2.py`, ...) whose config and key
tables serve both directions. `transformers` is needed for export only, imported when used.
"""

from modules.interop.convert import ADAPTERS, EXPORTS, from_hf, from_hf_with_head, to_hf
from modules.interop.core import NoEquivalent, SpecialTokens, TaskHead
from modules.interop.folder import hf_tokenizer, read_hf_folder, resolve_model_path, save_hf_folder

__all__ = [
    "ADAPTERS",
    "EXPORTS",
    "NoEquivalent",
    "SpecialTokens",
    "TaskHead",
    "from_hf",
    "from_hf_with_head",
    "hf_tokenizer",
    "read_hf_folder",
    "resolve_model_path",
    "save_hf_folder",
    "to_hf",
]
