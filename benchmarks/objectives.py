"""Masked LM, causal LM and permutation LM side by side (BERT, GPT, XLNet): one encoder (the
same architecture, size, corpus, token budget and steps) pretrained three ways, then each
fine-tuned on SST-2 with the same recipe, beside a no-pretraining row (random init) as the
floor. Prints one table: each objective's own pretraining validation loss (losses of
different objectives do not compare), SST-2 accuracy on test.tsv, and wall times.

What is the same in every row:
- the model: BERT's encoder (embedding norm, tied output head) with pre-LN and rotary
  positions (`--arch`, see below), `--preset` (default bert-tiny: 2 layers, d_model 128),
  64 positions, one WordPiece
  vocabulary (8,000, lowercase) trained on the corpus;
- the corpus: the sentences of SST-2's train.tsv, without labels, packed into rows of up to
  64 tokens ([CLS] sentence [SEP] sentence [SEP] ...), dev.tsv's as the validation split.
  Pretraining on the unlabelled text of the task is task-adaptive pretraining (Gururangan et
  al. 2020): of the text at hand, the most likely to help SST-2 at a size that pretrains
  within the hour on a CPU. test.tsv is never seen before the evaluation;
- the pretraining: the same batches of the same rows (batch 64), `--pretrain_steps` steps,
  AdamW lr `--pretrain_lr` (1e-3), weight decay 0.01, 10% warm-up, linear decay, clipping 1.0;
- the fine-tuning: `SequenceClassificationModule` from the pretrained checkpoint through
  `init_from`, batch 32, AdamW lr `--finetune_lr` (3e-4, from the grid of the compact
  BERTs, Turc et al. 2019), weight decay 0.01, 10% warm-up, linear decay, clipping 1.0, the
  same classifier initialisation and batch order, in two settings:
  (a) every row of train.tsv, one epoch (1,894 steps), seed `--seed`. GLUE's SST-2 labels
  every phrase of every parsed sentence, so its 60,614 rows teach a classifier most of the
  words' polarities, and a small encoder trained on them from scratch is already near what
  the compact BERTs reach after pretraining on books and Wikipedia (BERT-Tiny, 2 x 128:
  83.2 on GLUE's test set, the BERT miniatures' model card, Turc et al. 2019);
  (b) the rows no other row contains (7,073: the whole sentences, the sentence-level
  training set of Socher et al. 2013), `--sentence_epochs` (3) epochs, the mean and spread
  over `--sentence_seeds` (0 1 2): with ten times fewer labels, what pretraining gives
  shows.

The objectives: masked LM masks 15% of the pieces (80/10/10); permutation LM predicts one
piece in 6 (spans of 1-5) from the real tokens in a random factorisation order (two-stream
attention); causal LM predicts every next piece. A causal LM's weights are those of a
decoder, which the encoder classifier cannot take as they are; here the causal objective
trains the same encoder with a left-to-right mask, and it is fine-tuned the way causal
models are (GPT, Radford et al. 2018; the left-to-right ablation of BERT, section 5.1; the
language-model row of BART, Table 1): the mask kept and the last real token's state pooled.
The other rows pool [CLS] bidirectionally, as BERT does.

    python -m benchmarks.objectives          # the table: 3 x 1,500 pretraining steps, 4 x (a) and (b)
    python -m benchmarks.objectives --pretrain_steps 5 --finetune_steps 5 --preset tiny  # a check

The default takes about 40 minutes on 2 CPU cores (measured 41: masked LM 262 s, causal LM
760 s, permutation LM 329 s of pretraining; 95-195 s for (a) and 125-165 s for the three
runs of (b) per row).

Why rotary positions and pre-LN: with BERT's post-LN and learned absolute positions the
permutation LM did not learn at this size (validation loss 6.93 after 600 steps and 6.91
after 3,000, about the unigram entropy of the corpus; SST-2 53.4% after fine-tuning). Its query stream
knows a target only by its position, and with absolute positions it must learn attention to
neighbours for every pair of positions; rotary positions make that relative. After 600 steps:
learned 6.93, pre-LN 6.93, rotary 6.22, both 6.11. `--arch '{"pre_norm": false, "positions":
"learned"}'` gives BERT's encoder back.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from benchmarks.experiment import lightning_notes_off  # noqa: E402
from datamodules import (  # noqa: E402
    ClassificationDataModule,
    MaskedLMDataModule,
    PermutationLMDataModule,
    Source,
    TokenizerSpec,
)
from modules.batch import ClassificationBatch, MaskedLMBatch  # noqa: E402
from modules.codec import IGNORE  # noqa: E402
from modules.tasks import (  # noqa: E402
    MaskedLMModule,
    OptimizerConfig,
    PermutationLMModule,
    SequenceClassificationModule,
    StepOutput,
    TaskModule,
)
from modules.tasks.language_modeling import token_loss  # noqa: E402

MAX_LENGTH = 64
ROTARY_PRE_LN = {"pre_norm": True, "positions": "rotary"}  # why: see the docstring
PRETRAIN_BATCH, FINETUNE_BATCH = 64, 32
VOCABULARY = TokenizerSpec(kind="wordpiece", vocab_size=8000, lowercase=True)


class EncoderCausalLM(MaskedLMModule):
    """The causal objective on the encoder: attention masked left to right, every next piece a
    target, predicted by the same tied head as the masked LM's."""

    def __init__(self, **args: Any) -> None:
        super().__init__(**args)
        self.model.stack.causal = True

    def step(self, batch: MaskedLMBatch) -> StepOutput:  # type: ignore[override]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = self.model(ids, mask)[:, :-1]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
        chosen = labels != IGNORE
        logits, labels = self.model.mlm_logits(hidden, chosen), labels[chosen]
        return StepOutput(*token_loss(logits, labels), {"logits": logits, "labels": labels})


class LastTokenClassifier(SequenceClassificationModule):
    """A classifier for the causal encoder: the left-to-right mask kept, the last real
    token's hidden state through the pooler."""

    def __init__(self, **args: Any) -> None:
        super().__init__(**args)
        self.model.stack.causal = True

    def forward(self, batch: ClassificationBatch) -> Tensor:
        hidden = self.model(batch["input_ids"], batch["attention_mask"])
        last = batch["attention_mask"].sum(1) - 1
        pooled = self.model.pool(hidden[torch.arange(hidden.size(0)), last][:, None])
        return self.head(pooled)


@dataclass
class Objective:
    name: str
    pretraining: type[TaskModule] | None  # None: no pretraining (random init)
    classifier: type[SequenceClassificationModule] = SequenceClassificationModule


OBJECTIVES = [
    Objective("random init (no pretraining)", None),
    Objective("masked LM (BERT)", MaskedLMModule),
    Objective("causal LM (GPT)", EncoderCausalLM, LastTokenClassifier),
    Objective("permutation LM (XLNet)", PermutationLMModule),
]


def schedule(lr: float, steps: int) -> OptimizerConfig:
    return OptimizerConfig(
        lr=lr,
        weight_decay=0.01,
        schedule="linear",
        warmup_steps=max(1, steps // 10),
        min_lr_ratio=0.0,
    )


def whole_sentences(texts: list[str]) -> list[int]:
    """Indices of the rows that no other row contains, word for word (the first of rows
    that read the same): of SST-2's phrases (every constituent of a parsed review sentence),
    the sentences themselves. A row is inside another when it starts one of that row's
    word-aligned suffixes; all suffixes are sorted once, so each row is one binary search."""
    first: dict[str, int] = {}
    for row, text in enumerate(texts):
        first.setdefault(" ".join(text.split()), row)
    suffixes = sorted(
        (" ".join(words[i:]), row)
        for text, row in first.items()
        for words in [text.split()]
        for i in range(len(words))
    )
    keys = [suffix for suffix, _ in suffixes]
    kept = []
    for text, row in first.items():
        at = bisect.bisect_left(keys, text)
        while at < len(keys) and keys[at].startswith(text):
            whole_words = len(keys[at]) == len(text) or keys[at][len(text)] == " "
            if whole_words and suffixes[at][1] != row:
                break
            at += 1
        else:
            if text:
                kept.append(row)
    return sorted(kept)


@dataclass
class FineTuning:
    """One SST-2 fine-tuning setting: which train.tsv rows, for how long, over which seeds."""

    rows: str  # "phrases": all of train.tsv; "sentences": its whole sentences
    data: Path  # the folder whose train.tsv it reads
    epochs: int
    seeds: list[int]


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


def validate(task: TaskModule, dm: L.LightningDataModule) -> dict[str, float]:
    """The task's validation metrics over the whole validation split."""
    evaluation = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    [metrics] = evaluation.validate(task, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in metrics.items()}


def corpus(folder: Path) -> Source:
    splits = {"train": "train.tsv", "validation": "dev.tsv"}
    return Source(kind="local", name=str(folder), format="tsv", splits=splits)


def pretraining_data(objective: Objective, folder: Path, seed: int) -> MaskedLMDataModule:
    rows = dict(max_length=MAX_LENGTH, batch_size=PRETRAIN_BATCH, pack=True, seed=seed)
    rows.update(text_column="sentence")
    if objective.pretraining is PermutationLMModule:
        return PermutationLMDataModule(corpus(folder), VOCABULARY, **rows)
    # the causal LM reads the same rows unmasked
    masking = 0.0 if objective.pretraining is EncoderCausalLM else 0.15
    return MaskedLMDataModule(corpus(folder), VOCABULARY, mask_probability=masking, **rows)


def pretrain(
    objective: Objective, args: argparse.Namespace, out: Path
) -> tuple[Path, float, float]:
    """(checkpoint, validation loss, seconds) of one pretraining run."""
    assert objective.pretraining is not None
    L.seed_everything(args.seed, verbose=False)
    dm = pretraining_data(objective, args.data, args.seed)
    dm.prepare_data()  # tokenise before the clock starts
    dm.setup()
    task = objective.pretraining(
        codec=dm.codec,
        preset=args.preset,
        arch={"max_length": MAX_LENGTH, **args.arch},
        optim=schedule(args.pretrain_lr, args.pretrain_steps),
    )
    fit = trainer(args.pretrain_steps)
    start = time.perf_counter()
    fit.fit(task, datamodule=dm)
    seconds = time.perf_counter() - start
    path = out / f"{objective.pretraining.__name__}.ckpt"
    fit.save_checkpoint(path)
    return path, validate(task, dm)["val/loss"], seconds


def sentences_folder(data: Path, out: Path) -> Path:
    """A folder with train.tsv's whole sentences as its train.tsv and test.tsv as it is."""
    with (data / "train.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    kept = [rows[i] for i in whole_sentences([r["sentence"] for r in rows])]
    folder = out / "sentences"
    folder.mkdir(exist_ok=True)
    lines = ["sentence\tlabel", *(f"{r['sentence']}\t{r['label']}" for r in kept)]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    (folder / "test.tsv").write_text((data / "test.tsv").read_text())
    return folder


def finetune(
    objective: Objective,
    checkpoint: Path | None,
    args: argparse.Namespace,
    tokenizer: Path,
    data: Path,
    epochs: int,
    seed: int,
) -> tuple[float, float, int, int]:
    """(SST-2 test accuracy in %, seconds, steps, train rows) of one fine-tuning run on
    data/train.tsv."""
    L.seed_everything(seed, verbose=False)
    splits = {"train": "train.tsv", "validation": "test.tsv"}
    dm = ClassificationDataModule(
        Source(kind="local", name=str(data), format="tsv", splits=splits),
        TokenizerSpec(path=str(tokenizer)),
        num_classes=2,
        text_column="sentence",
        max_length=MAX_LENGTH,
        batch_size=FINETUNE_BATCH,
        seed=seed,
    )
    dm.prepare_data()
    dm.setup()
    steps = args.finetune_steps or epochs * len(dm.raw["train"]) // FINETUNE_BATCH
    model: dict[str, Any] = {"init_from": str(checkpoint)}
    if checkpoint is None:
        model = {"preset": args.preset, "arch": {"max_length": MAX_LENGTH, **args.arch}}
    task = objective.classifier(
        codec=dm.codec, num_classes=2, optim=schedule(args.finetune_lr, steps), **model
    )
    torch.manual_seed(seed)  # the same classifier in every row
    nn.init.normal_(task.head[1].weight, std=0.02)
    fit = trainer(steps)
    start = time.perf_counter()
    fit.fit(task, datamodule=dm)
    seconds = time.perf_counter() - start
    return 100 * validate(task, dm)["val/accuracy"], seconds, steps, len(dm.raw["train"])


def settings(args: argparse.Namespace, sentences: Path) -> list[FineTuning]:
    return [
        FineTuning("phrases", args.data, 1, [args.seed]),
        FineTuning("sentences", sentences, args.sentence_epochs, args.sentence_seeds),
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        vocabulary = pretraining_data(OBJECTIVES[1], args.data, args.seed)
        vocabulary.prepare_data()
        tokenizer = out / "tokenizer.json"
        vocabulary.codec.tokenizer.save(str(tokenizer))
        sentences = sentences_folder(args.data, out)
        for objective in OBJECTIVES:
            row: dict[str, Any] = {"objective": objective.name}
            checkpoint = None
            if objective.pretraining is not None:
                checkpoint, row["pretrain_loss"], row["pretrain_seconds"] = pretrain(
                    objective, args, out
                )
            for setting in settings(args, sentences):
                runs = [
                    finetune(
                        objective,
                        checkpoint,
                        args,
                        tokenizer,
                        setting.data,
                        setting.epochs,
                        seed,
                    )
                    for seed in setting.seeds
                ]
                row[setting.rows] = {
                    "accuracy": [run[0] for run in runs],
                    "seconds": sum(run[1] for run in runs),
                    "steps": runs[0][2],
                    "rows": runs[0][3],
                }
            print(f"[objectives] {row}", flush=True)
            results.append(row)
    return results


def accuracy(figures: list[float]) -> str:
    if len(figures) == 1:
        return f"{figures[0]:.2f}"
    return f"{statistics.mean(figures):.2f} +- {statistics.stdev(figures):.2f}"


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    tokens = args.pretrain_steps * PRETRAIN_BATCH * MAX_LENGTH
    phrases, sentences = results[0]["phrases"], results[0]["sentences"]
    lines = [
        f"Pretraining objectives, encoder {args.preset}{f' {args.arch}' if args.arch else ''}, "
        f"{args.pretrain_steps} steps of "
        f"{PRETRAIN_BATCH} x {MAX_LENGTH} tokens (up to {tokens:,} tokens) on SST-2's "
        f"sentences; cpu x{torch.get_num_threads()}, fp32; SST-2 test accuracy % after "
        f"fine-tuning (batch {FINETUNE_BATCH}) on (a) all train.tsv rows, "
        f"{phrases['steps']} steps{'' if args.finetune_steps else ' (1 epoch)'}, seed "
        f"{args.seed}; (b) its {sentences['rows']:,} whole sentences, {sentences['steps']} "
        f"steps{'' if args.finetune_steps else f' ({args.sentence_epochs} epochs)'}, "
        f"mean +- sd over seeds "
        f"{' '.join(map(str, args.sentence_seeds))}",
        f"{'objective':<30} {'pretrain val loss':>17} {'(a) all rows':>12} "
        f"{'(b) sentences':>15} {'pretrain s':>10} {'fine-tune s':>11}",
    ]
    for r in results:
        loss = f"{r['pretrain_loss']:.3f}" if "pretrain_loss" in r else "-"
        pretrain_s = f"{r['pretrain_seconds']:.0f}" if "pretrain_seconds" in r else "-"
        finetune_s = r["phrases"]["seconds"] + r["sentences"]["seconds"]
        lines.append(
            f"{r['objective']:<30} {loss:>17} {accuracy(r['phrases']['accuracy']):>12} "
            f"{accuracy(r['sentences']['accuracy']):>15} {pretrain_s:>10} {finetune_s:>11.0f}"
        )
    lines.append(
        "(each loss is its own objective's: masked pieces, next pieces, permutation targets)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data/sst2"))
    p.add_argument("--preset", default="bert-tiny", help="encoder size (EncoderConfig preset)")
    p.add_argument(
        "--arch",
        type=json.loads,
        default=ROTARY_PRE_LN,
        help="encoder fields over the preset in every row (JSON; default: %(default)s)",
    )
    p.add_argument("--pretrain_steps", type=int, default=1500)
    p.add_argument("--pretrain_lr", type=float, default=1e-3)
    p.add_argument("--finetune_steps", type=int, help="every fine-tuning run (default: its epochs)")
    p.add_argument("--sentence_epochs", type=int, default=3)
    p.add_argument("--sentence_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--finetune_lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    files = [args.data / name for name in ("train.tsv", "dev.tsv", "test.tsv")]
    if not all(f.is_file() for f in files):
        raise SystemExit(
            f"SST-2 not found in {args.data} (train.tsv, dev.tsv, test.tsv with sentence, label)"
        )
    with lightning_notes_off():
        results = run(args)
    print(table(results, args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"objectives-{time.strftime('%Y%m%d-%H%M%S')}.json"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path.write_text(json.dumps({"settings": settings, "rows": results}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
