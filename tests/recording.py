"""A causal-LM data module that records the start of every training window it serves, for
tests that compare the data of runs (DDP ranks, kills and resumes, device counts).

Each trained batch appends one line to $TSUITE_RECORD_DIR/rank<global rank>.txt: the global
step, then the batch's window starts. It is written as the batch reaches the step (after
Lightning's prefetch), so a run killed mid-step has recorded that step."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules import CausalLMDataModule

RECORD_DIR = "TSUITE_RECORD_DIR"


class StartedWindows(Dataset):
    def __init__(self, windows: Any) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, start: int) -> dict[str, torch.Tensor]:
        return {**self.windows[start], "window_start": torch.tensor(start)}


class RecordingCausalLM(CausalLMDataModule):
    def loader(self, dataset: Any, batches: Any, train: bool, collate_fn: Any = None) -> Any:
        return super().loader(StartedWindows(dataset) if train else dataset, batches, train)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        starts = batch.pop("window_start", None)
        if starts is not None and self.trainer is not None:
            folder = Path(os.environ[RECORD_DIR])
            folder.mkdir(parents=True, exist_ok=True)
            line = " ".join(str(s) for s in [self.trainer.global_step, *starts.tolist()])
            with open(folder / f"rank{self.trainer.global_rank}.txt", "a") as file:
                file.write(line + "\n")
        return super().on_before_batch_transfer(batch, dataloader_idx)


def read_records(folder: Path, rank: int = 0) -> dict[int, list[int]]:
    """{global step: window starts} of one rank (a later record of a step replaces one
    before it, as a resumed run trains that step again)."""
    records: dict[int, list[int]] = {}
    path = folder / f"rank{rank}.txt"
    for line in path.read_text().splitlines():
        step, *starts = (int(x) for x in line.split())
        records[step] = starts
    return records
