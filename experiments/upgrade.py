"""`tsuite upgrade OLD.ckpt --out NEW.ckpt`: rewrite a checkpoint of an older transformer-suite
in the current format (the model config resolved and the codec stored inside), so that
`tsuite fit --ckpt_path` can resume it. The tools read old checkpoints without this."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from modules.tasks.checkpoints import read_checkpoint, upgraded


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite upgrade", description=__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    checkpoint = upgraded(read_checkpoint(args.checkpoint), args.checkpoint)
    if args.out.exists():
        raise ValueError(f"--out {args.out} exists; choose a new file")
    temporary = args.out.with_name(f".{args.out.name}.tmp")
    torch.save(checkpoint, temporary)
    temporary.replace(args.out)
    print(f"written: {args.out} (checkpoint format {checkpoint['format_version']})")
