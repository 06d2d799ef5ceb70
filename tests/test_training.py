"""Training through `tsuite`: DDP equivalence, resume, mixed precision, accumulation, W&B
records, and the exact token normalisation of losses."""

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from modules.tasks import TranslationModule
from tests.cli_helpers import metric_by_step, read_metrics, run_cli, run_cli_process

TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife. "
) * 60


def lm_config(tmp_path: Path, **trainer) -> Path:
    """A tiny character-level GPT on a local text file, dropout off (deterministic on CPU)."""
    (tmp_path / "book.txt").write_text(TEXT)
    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 6,
            "val_check_interval": 3,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            **trainer,
        },
        "model": {
            "class_path": "modules.tasks.CausalLMModule",
            "init_args": {"preset": "tiny", "arch": {"dropout": 0.0, "max_length": 64}},
        },
        "data": {
            "class_path": "datamodules.CausalLMDataModule",
            "init_args": {
                "source": {
                    "kind": "local",
                    "name": str(tmp_path / "book.txt"),
                    "sample_by": "document",
                    "validation_fraction": 0.2,
                },
                "tokenizer": {"kind": "char"},
                "max_length": 32,
                "batch_size": 8,
            },
        },
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def numbers_config(tmp_path: Path) -> Path:
    """The default translation recipe, shrunk: dropout on, so resume must restore RNG state."""
    config = yaml.safe_load(
        (Path(__file__).parents[1] / "experiments/configs/default.yaml").read_text()
    )
    config["trainer"].update(
        max_steps=8,
        val_check_interval=4,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    config["model"]["init_args"]["arch"].update(d_model=32, n_heads=2, n_layers=1, d_ff=64)
    config["data"]["init_args"]["source"]["options"] = {"max_number": 2000, "count": 600}
    config["data"]["init_args"]["max_tokens"] = 256
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def only_run(runs: Path) -> Path:
    folders = [p.parent for p in runs.rglob("config.yaml") if p.parent.name.startswith("version_")]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_process_ddp_matches_one_process(tmp_path: Path):
    config = lm_config(tmp_path)
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    single = run_cli_process(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'one'}"], env)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli_process(
        [
            "fit",
            "-c",
            str(config),
            f"--runs_dir={tmp_path / 'two'}",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
        ],
        env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = only_run(tmp_path / "one"), only_run(tmp_path / "two")
    assert metric_by_step(one, "val/loss").keys() == metric_by_step(two, "val/loss").keys()
    for step, loss in metric_by_step(one, "val/loss").items():
        assert abs(loss - metric_by_step(two, "val/loss")[step]) <= 1e-4
    a = torch.load(one / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(two / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    config = numbers_config(tmp_path)
    # three runs in one process: each gets its own folder (the run-folder variable that rank 0
    # sets for the ranks it spawns does not outlive its run)
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'full'}"])
    assert "TSUITE_RUN_DIR" not in os.environ
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'cut'}", "--trainer.max_steps=4"])
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'cut'}", "--ckpt_path=last"])
    full, cut = only_run(tmp_path / "full"), only_run(tmp_path / "cut")
    expected, resumed = metric_by_step(full, "train/loss"), metric_by_step(cut, "train/loss")
    assert sorted(resumed) == sorted(expected) == list(range(8))
    for step in range(8):
        assert abs(expected[step] - resumed[step]) < 1e-5, step
    assert metric_by_step(full, "val/loss") == pytest.approx(
        metric_by_step(cut, "val/loss"), abs=1e-5
    )
    ids = {torch.load(cut / "checkpoints/last.ckpt", weights_only=True)["wandb_run_id"]}
    assert len(ids) == 1 and all(ids)


def test_bf16_accumulation_and_clipping_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    config = lm_config(
        tmp_path, precision="bf16-mixed", accumulate_grad_batches=2, gradient_clip_val=0.5
    )
    run_cli(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"])
    run = only_run(tmp_path / "runs")
    losses = metric_by_step(run, "train/loss")
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(list(losses.values()))))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and "val/loss" in summary["best"]


def test_wandb_offline_run_records_metrics_and_config(tmp_path: Path):
    config = lm_config(tmp_path)
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = run_cli_process(["fit", "-c", str(config), f"--runs_dir={tmp_path / 'runs'}"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = only_run(tmp_path / "runs")
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    records = b"".join(p.read_bytes() for p in offline[0].glob("*.wandb"))
    assert b"val/loss" in records and b"train/loss" in records
    assert b"CausalLMModule" in records  # the resolved config went with the run
    assert (run / "config.yaml").is_file() and read_metrics(run)
    assert "W&B was offline; upload with: wandb sync" in done.stdout


class RecordingTranslation(TranslationModule):
    """Keeps the gradients of each optimizer step, as the optimizer sees them."""

    def on_before_optimizer_step(self, optimizer):
        super().on_before_optimizer_step(optimizer)
        self.grads = {n: p.grad.clone() for n, p in self.named_parameters() if p.grad is not None}


class FixedBatches(L.LightningDataModule):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None)


def test_loss_is_normalised_by_target_tokens_across_accumulation():
    """Two micro-batches with 1 and 6 target tokens accumulate to the exact gradient of the
    joint batch (summed token loss / 7), not the mean of the two batch means."""
    torch.manual_seed(0)

    def batch(n_src, tgt):
        return {
            "input_ids": torch.randint(4, 50, (1, n_src)),
            "attention_mask": torch.ones(1, n_src, dtype=torch.long),
            "decoder_input_ids": torch.tensor([[1, *tgt[:-1]]]),
            "labels": torch.tensor([tgt]),
        }

    short, long = batch(5, [7]), batch(5, [9, 10, 11, 12, 13, 14])
    joint = {
        "input_ids": torch.cat([short["input_ids"], long["input_ids"]]),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "decoder_input_ids": torch.tensor([[1, 0, 0, 0, 0, 0], [1, 9, 10, 11, 12, 13]]),
        "labels": torch.tensor([[7, -100, -100, -100, -100, -100], [9, 10, 11, 12, 13, 14]]),
    }
    grads = []
    for batches, accumulate in (([short, long], 2), ([joint], 1)):
        torch.manual_seed(1)
        model = RecordingTranslation(
            preset="tiny", arch={"dropout": 0.0, "vocab_size": 50, "pad_token_id": 0}
        )
        trainer = L.Trainer(
            max_steps=1,
            accumulate_grad_batches=accumulate,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        trainer.fit(model, datamodule=FixedBatches(batches))
        grads.append(model.grads)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


@pytest.mark.parametrize("limit", [1e-3, 1e3])
def test_clipping_by_norm_matches_torch(limit: float):
    """The suite folds norm clipping into its token-count rescale (Lightning's own clipping
    refuses fused AdamW under mixed precision): the gradients equal torch's clip_grad_norm_
    applied to the unclipped ones."""
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(4, 50, (2, 6)),
        "attention_mask": torch.ones(2, 6, dtype=torch.long),
        "decoder_input_ids": torch.randint(4, 50, (2, 5)),
        "labels": torch.randint(4, 50, (2, 5)),
    }
    grads = []
    for clip in (None, limit):
        torch.manual_seed(1)
        model = RecordingTranslation(preset="tiny", arch={"vocab_size": 50, "pad_token_id": 0})
        model.model.eval()  # no dropout: both runs see the same function
        trainer = L.Trainer(
            max_steps=1,
            gradient_clip_val=clip,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        trainer.fit(model, datamodule=FixedBatches([batch]))
        grads.append(model.grads)
    unclipped, clipped = grads
    reference = {name: torch.nn.Parameter(torch.empty_like(g)) for name, g in unclipped.items()}
    for name, param in reference.items():
        param.grad = unclipped[name].clone()
    torch.nn.utils.clip_grad_norm_(reference.values(), limit)
    assert clipped.keys() == reference.keys()
    for name, grad in clipped.items():
        assert torch.allclose(grad, reference[name].grad, rtol=1e-5, atol=1e-9), name
