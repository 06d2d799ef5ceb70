"""`tsuite export CHECKPOINT --out DIR`: the checkpoint as a Hugging Face model folder that
`transformers` loads with `AutoModel...from_pretrained` (config.json, model.safetensors, the
tokenizer files, generation_config.json where it applies, and a README.md model card).

    causal LM        -> GPT2LMHeadModel, or LlamaForCausalLM for RoPE/RMSNorm/SwiGLU/GQA models
    masked LM        -> BertForMaskedLM
    classification   -> BertForSequenceClassification (class names in id2label)
    question answering -> BertForQuestionAnswering
    translation      -> MarianMTModel

A model with no exact equivalent is refused with the settings that block it, never exported
approximately. Needs `transformers` (pip install 'transformer-suite[hf]').
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from experiments.run_folder import run_dir_of_checkpoint
from experiments.user_files import checkpoint_file
from modules.interop import SpecialTokens, TaskHead, save_hf_folder, to_hf
from modules.tasks import (
    CausalLMModule,
    MaskedLMModule,
    QuestionAnsweringModule,
    Seq2SeqModule,
    SequenceClassificationModule,
    TaskModule,
    load_task,
)

EXPORTED = (
    CausalLMModule,
    MaskedLMModule,
    SequenceClassificationModule,
    QuestionAnsweringModule,
    Seq2SeqModule,
)


def head_of(task: TaskModule) -> TaskHead | None:
    if isinstance(task, SequenceClassificationModule):
        return TaskHead("classification", task.head[1], task.label_names)
    if isinstance(task, QuestionAnsweringModule):
        return TaskHead("question_answering", task.head)
    return None


def generation_of(task: TaskModule) -> dict[str, Any]:
    """The task's beam search, in the fields of HF's generate that mean the same."""
    if not isinstance(task, Seq2SeqModule):
        return {}
    decoding = task.decoding
    settings: dict[str, Any] = {
        "num_beams": decoding.beam_size,
        "early_stopping": decoding.early_stopping,
        "no_repeat_ngram_size": decoding.no_repeat_ngram_size,
    }
    if decoding.penalty == "exponent":  # HF has no GNMT form: that one stays with the suite
        settings["length_penalty"] = decoding.length_penalty
    if decoding.min_length:  # HF counts the decoder's start token
        settings["min_length"] = decoding.min_length + 1
    return settings


def model_card(task: TaskModule, checkpoint: Path, hf_class: str) -> str:
    """The run's experiment, its resolved config, data source, best and final metrics."""
    run = run_dir_of_checkpoint(checkpoint)
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    if run is not None and (run / "summary.json").is_file():
        summary = json.loads((run / "summary.json").read_text())
    if run is not None:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    source = (config.get("data") or {}).get("init_args", {}).get("source")
    version = importlib.metadata.version("transformer-suite")
    lines = [
        f"# {summary.get('experiment', checkpoint.stem)}",
        "",
        f"A {hf_class} exported by transformer-suite {version} from `{checkpoint}` "
        f"({type(task).__name__}, {task.describe()}).",
        "",
        "```python",
        "import transformers",
        'model = transformers.AutoModel.from_pretrained("THIS_FOLDER")',
        "```",
    ]
    if source:
        lines += ["", f"Data: `{json.dumps(source)}`"]
    if summary.get("final"):
        lines += ["", "| metric | best | final |", "|---|---|---|"]
        for name, final in summary["final"].items():
            best = summary.get("best", {}).get(name, final)
            lines.append(f"| {name} | {best:.4f} | {final:.4f} |")
        lines += ["", f"{summary.get('steps')} steps, {summary.get('wall_seconds')} s."]
    arch = {"model": type(task.model).__name__, **asdict(task.model.cfg)}
    lines += ["", "Model config:", "", "```yaml", yaml.safe_dump(arch, sort_keys=False).strip()]
    if config:
        lines += ["```", "", "Resolved run config:", "", "```yaml", yaml.safe_dump(config).strip()]
    return "\n".join([*lines, "```", ""])


def export(checkpoint: Path, out: Path) -> Path:
    names = ", ".join(t.__name__ for t in EXPORTED)
    task = load_task(checkpoint, "cpu", EXPORTED, f"tsuite export maps {names} to transformers")
    codec = task.require_codec()
    specials = SpecialTokens(codec.pad_id, codec.bos_id, codec.eos_id, codec.mask_id, codec.unk_id)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not empty; give a new folder")
    hf = to_hf(task.model, specials, head_of(task))
    card = model_card(task, checkpoint, type(hf).__name__)
    return save_hf_folder(hf, codec.tokenizer, out, specials, card, generation_of(task) or None)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="tsuite export", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("checkpoint", type=checkpoint_file)
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    args = p.parse_args(argv)
    folder = export(args.checkpoint, args.out)
    print(f"written: {folder} (load it with transformers' from_pretrained)")
