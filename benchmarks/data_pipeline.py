"""Row 5: the data pipeline. Tokenisation throughput of the data modules (their `tokenize`,
to Arrow) against the Hugging Face recipe (`Dataset.map` over a `PreTrainedTokenizerFast`
of the same tokenizer, as run_clm.py does); causal-LM packing plus one epoch of batches
against run_clm.py's `group_texts` with `default_data_collator`; and the share of
training-step time the default experiment spends waiting for its next batch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import datasets
from lightning.pytorch.profilers import Profiler
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from benchmarks.experiment import DEFAULT, QUICK_DEFAULT, build
from benchmarks.timing import interleaved_times, paired_ratio

CAUSAL = "experiments/configs/gpt/pydocs-tiny.yaml"
MASKED = "experiments/configs/bert/pydocs-mlm.yaml"
# the causal-LM data module on a small slice of the built-in numbers (quick mode)
QUICK_CAUSAL = [
    "--data.init_args.source={kind: builtin, name: numbers, "
    "options: {max_number: 3000, count: 400, held_out: 0.1}}",
    "--data.init_args.text_column=en",
    "--data.init_args.tokenizer.vocab_size=300",
    "--data.init_args.max_length=32",
    "--data.init_args.batch_size=8",
    '--model.init_args.arch={"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 64}',
]
WAIT_TARGET = 0.05  # share of step time spent waiting for data


@contextmanager
def fresh_maps() -> Iterator[None]:
    """`datasets` caches `map` results by fingerprint; time the work, not the cache."""
    enabled = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_caching()


def hf_tokenizer(data: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    copy = Tokenizer.from_str(data.codec.tokenizer.to_str())
    return PreTrainedTokenizerFast(tokenizer_object=copy)


def hf_tokenize(raw: datasets.Dataset, fast: Any, columns: list[str]) -> datasets.Dataset:
    """run_clm.py's tokenize_function: the fast tokenizer over each text column."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        out = {}
        for column in columns:
            encoded = fast(batch[column])
            out[f"{column}_input_ids"] = encoded["input_ids"]
            out[f"{column}_attention_mask"] = encoded["attention_mask"]
        return out

    return raw.map(tokenize, batched=True, remove_columns=raw.column_names)


def group_texts(block: int) -> Callable[[dict[str, list]], dict[str, list]]:
    """run_clm.py's group_texts: concatenate and cut into `block`-token rows."""

    def group(examples: dict[str, list]) -> dict[str, list]:
        joined = {k: list(chain(*examples[k])) for k in examples}
        total = len(joined["input_ids"]) // block * block
        rows = {k: [t[i : i + block] for i in range(0, total, block)] for k, t in joined.items()}
        rows["labels"] = rows["input_ids"].copy()
        return rows

    return group


def tokenize_case(name: str, config: str, overrides: list[str], repeats: int) -> dict[str, Any]:
    _, data, _ = build(config, overrides)
    raw = data.raw["train"]
    fast = hf_tokenizer(data)
    columns = data.text_columns()
    with fresh_maps():
        reference = hf_tokenize(raw, fast, columns)
        tokens = sum(len(ids) for c in columns for ids in reference[f"{c}_input_ids"])
        times = interleaved_times(
            {
                "ours": lambda: data.tokenize("train", raw),
                "reference": lambda: hf_tokenize(raw, fast, columns),
            },
            repeats=repeats,
            warmup=0,
        )
    return _throughput_row(
        f"tokenise {name} ({len(raw):,} texts)",
        "Dataset.map(PreTrainedTokenizerFast)",
        {"ours": tokens, "reference": tokens},
        times,
    )


def packing_case(config: str, overrides: list[str], repeats: int) -> dict[str, Any]:
    """Stream + windows + one epoch of batches, against group_texts + DataLoader."""
    from transformers import default_data_collator

    _, data, _ = build(config, overrides)
    data.setup("fit")
    fast = hf_tokenizer(data)
    column = data.text_columns()[0]
    with fresh_maps():
        tokenized = data.raw["train"].map(
            lambda b: fast(b[column]), batched=True, remove_columns=data.raw["train"].column_names
        )
    counts: dict[str, int] = {}

    def ours() -> None:
        data.on_loaded()  # the token stream of every split, from the tokenised Arrow
        counts["ours"] = sum(b["input_ids"].numel() for b in data.train_dataloader())

    def reference() -> None:
        with fresh_maps():
            grouped = tokenized.map(group_texts(data.max_length), batched=True)
        loader = DataLoader(
            grouped, batch_size=data.batch_size, shuffle=True, collate_fn=default_data_collator
        )
        counts["reference"] = sum(b["input_ids"].numel() for b in loader)

    times = interleaved_times({"ours": ours, "reference": reference}, repeats, warmup=0)
    return _throughput_row(
        f"pack + 1 epoch of batches, causal LM (block {data.max_length})",
        "group_texts + default_data_collator",
        counts,
        times,
    )


def _throughput_row(
    case: str, reference_name: str, tokens: dict[str, int], times: dict[str, list[float]]
) -> dict[str, Any]:
    """Tokens per second of each side (median time); ratio: ours / the reference's."""
    seconds = {name: statistics.median(t) for name, t in times.items()}
    per_token = tokens["ours"] / tokens["reference"]
    return {
        "row": "data",
        "case": case,
        "reference_name": reference_name,
        "ours": tokens["ours"] / seconds["ours"],
        "reference": tokens["reference"] / seconds["reference"],
        "unit": "tok/s",
        "ratio": paired_ratio(times["reference"], times["ours"]) * per_token,
        "target": "",
        "passed": None,
    }


class FetchClock(Profiler):
    """Records when each training batch fetch starts and ends (Lightning profiles the fetch
    as `[_TrainingEpochLoop].train_dataloader_next`)."""

    FETCH = "[_TrainingEpochLoop].train_dataloader_next"

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []
        self.ends: list[float] = []

    def start(self, action_name: str) -> None:
        if action_name == self.FETCH:
            self.starts.append(time.perf_counter())

    def stop(self, action_name: str) -> None:
        if action_name == self.FETCH:
            self.ends.append(time.perf_counter())

    def summary(self) -> str:
        return ""

    def share(self, skip: int) -> tuple[float, float, int]:
        """(share of wall time spent fetching, mean seconds per step, steps), from the
        `skip`-th fetch to the last one."""
        starts, ends = self.starts[skip:], self.ends[skip:]
        steps = len(starts) - 1
        wall = starts[-1] - starts[0]
        waiting = sum(e - s for s, e in zip(starts[:-1], ends[:-1], strict=True))
        return waiting / wall, wall / steps, steps


def wait_case(overrides: list[str], steps: int, skip: int) -> dict[str, Any]:
    model, data, trainer = build(
        DEFAULT,
        [
            *overrides,
            f"--trainer.max_steps={steps}",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.profiler=benchmarks.data_pipeline.FetchClock",
        ],
    )
    interval = trainer.val_check_interval
    if isinstance(interval, int) and interval < steps:
        raise ValueError(f"{steps} steps would include a validation (every {interval} steps)")
    trainer.fit(model, data)
    clock = trainer.profiler
    assert isinstance(clock, FetchClock)
    share, step, counted = clock.share(skip)
    return {
        "row": "data",
        "case": f"waiting for data, default experiment ({counted} steps)",
        "reference_name": "",
        "ours": share * 100,
        "reference": None,
        "unit": "% of step",
        "ratio": None,
        "target": "< 5%",
        "passed": share < WAIT_TARGET,
        "step_ms": step * 1e3,
    }


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    datasets.disable_progress_bars()
    if quick:
        return [
            tokenize_case("translation (numbers)", DEFAULT, QUICK_DEFAULT, 1),
            packing_case(CAUSAL, QUICK_CAUSAL, 1),
            wait_case(QUICK_DEFAULT, steps=6, skip=1),
        ]
    return [
        tokenize_case("causal LM (pydocs, BPE)", CAUSAL, [], 3),
        tokenize_case("masked LM (pydocs, WordPiece)", MASKED, [], 3),
        tokenize_case("translation (numbers, BPE)", DEFAULT, [], 3),
        packing_case(CAUSAL, [], 3),
        wait_case([], steps=60, skip=5),
    ]
