"""Each private attribute of Lightning, PyTorch and W&B the suite touches
(`modules.lightning_compat`) still does what the suite relies on with the installed versions."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from modules.lightning_compat import (
    batches_done_this_epoch,
    drop_wandb_anonymous,
    forget_sigterm,
    logs_this_step,
    skip_step_on_device,
)
from modules.tasks import CausalLMModule
from tests.test_training import FixedBatches


def test_fused_adamw_skips_a_step_flagged_on_the_device():
    weight = torch.nn.Parameter(torch.ones(3))
    fused = torch.optim.AdamW([weight], lr=0.1, fused=True)
    weight.grad = torch.ones(3)
    assert skip_step_on_device(fused, torch.tensor(True))
    fused.step()
    assert torch.equal(weight.detach(), torch.ones(3))  # skipped
    assert skip_step_on_device(fused, torch.tensor(False))
    fused.step()
    assert not torch.equal(weight.detach(), torch.ones(3))  # applied
    unfused = torch.optim.AdamW([weight], lr=0.1, fused=False)
    assert not skip_step_on_device(unfused, torch.tensor(True))  # the caller must skip


class Probe(Callback):
    def __init__(self) -> None:
        self.done: list[int] = []
        self.sigterm_forgotten = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.done.append(batches_done_this_epoch(trainer))
        trainer._signal_connector.received_sigterm = True
        forget_sigterm(trainer)
        self.sigterm_forgotten = not trainer.received_sigterm


def test_trainer_counters_and_the_sigterm_flag():
    ids = torch.randint(0, 30, (3, 2, 9))
    batches = [{"input_ids": x[:, :-1], "labels": x[:, 1:]} for x in ids]
    task = CausalLMModule(preset="tiny", arch={"vocab_size": 30, "max_length": 16}, sample_tokens=0)
    probe = Probe()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(task, datamodule=FixedBatches(batches))
    # batches of the current epoch completed before this one (counted from 0 each epoch)
    assert probe.done == [0, 1, 2, 0, 1, 2]
    assert probe.sigterm_forgotten


def test_wandb_logger_no_longer_passes_anonymous(tmp_path):
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert "anonymous" in logger._wandb_init
    drop_wandb_anonymous(logger)
    assert "anonymous" not in logger._wandb_init


class LoggedStepProbe(CausalLMModule):
    """Records, for every micro-batch, its optimizer step, its loss, whether `logs_this_step`
    says Lightning writes it, and whether the task logged its loss."""

    def __init__(self, **args):
        super().__init__(**args)
        self.seen: list[tuple[int, float, bool]] = []
        self.loss_logs = 0

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        count = (batch["labels"] != -100).sum()
        self.seen.append(
            (self.trainer.global_step, float(loss.detach() / count), logs_this_step(self))
        )
        return loss

    def log(self, name, *args, **kwargs):
        self.loss_logs += name == "train/loss"
        super().log(name, *args, **kwargs)


def test_train_loss_is_logged_on_the_steps_lightning_writes_only(tmp_path):
    """With 2 micro-batches a step and a log every 3 steps, Lightning writes steps 3, 6, 9;
    `logs_this_step` is true for exactly their micro-batches, the task logs the loss there
    only, and metrics.csv holds the last micro-batch's loss of each (what it held when every
    step logged)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 30, (20, 2, 9))
    batches = [{"input_ids": x[:, :-1], "labels": x[:, 1:]} for x in ids]
    task = LoggedStepProbe(
        preset="tiny", arch={"vocab_size": 30, "max_length": 16}, sample_tokens=0
    )
    trainer = L.Trainer(
        max_steps=10,
        accumulate_grad_batches=2,
        log_every_n_steps=3,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="run", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=FixedBatches(batches))
    logged = [(step, loss) for step, loss, logs in task.seen if logs]
    assert [step for step, _ in logged] == [2, 2, 5, 5, 8, 8]  # global_step before the update
    assert task.loss_logs == 6
    rows = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    written = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    losses = {int(r["step"]): float(r["train/loss"]) for r in written if r["train/loss"]}
    assert losses == pytest.approx({step: loss for step, loss in logged[1::2]})
