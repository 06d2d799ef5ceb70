"""Non-finite numbers: a step whose loss or gradient norm is NaN or inf is skipped (no update)
and counted; too many in a row stop the run with a message naming the step; a diverged model
is never kept as the best checkpoint."""

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from modules.tasks import CausalLMModule, NonFiniteError, OptimizerConfig
from tests.cli_helpers import metric_by_step, run_cli
from tests.test_training import FixedBatches, lm_config


class BadLossAt(CausalLMModule):
    """Its training loss becomes `bad` (NaN or +inf) at the optimizer steps in `steps`."""

    steps: frozenset[int] = frozenset()
    bad = math.nan

    def step(self, batch):
        out = super().step(batch)
        if self.training and self.trainer.global_step in self.steps:
            out.loss_sum = out.loss_sum + self.bad  # NaN spreads into the gradients; +inf does not
        return out


def adamw(fused: bool) -> type[torch.optim.AdamW]:
    """AdamW fused (as the suite makes it on CPUs and GPUs: skipping through `found_inf`) or
    not (as on other devices: skipping by dropping the gradients)."""

    class AdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "fused": fused})

    return AdamW


class Weights(Callback):
    """The parameters after every training step."""

    def __init__(self) -> None:
        self.after: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append([p.detach().clone() for p in pl_module.parameters()])


def train(steps: set[int], bad: float, max_steps: int, **optim) -> tuple[BadLossAt, Weights]:
    torch.manual_seed(0)
    model = BadLossAt(
        preset="tiny",
        arch={"dropout": 0.0, "max_length": 32, "vocab_size": 30},
        sample_tokens=0,
        optim=OptimizerConfig(warmup_steps=0, **optim),
    )
    model.steps, model.bad = frozenset(steps), bad
    ids = torch.randint(0, 30, (max_steps, 2, 17))
    batches = [{"input_ids": x[:, :-1], "labels": x[:, 1:]} for x in ids]
    weights = Weights()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[weights],
    )
    trainer.fit(model, datamodule=FixedBatches(batches))
    return model, weights


@pytest.mark.parametrize("fused", [False, True], ids=["unfused-adamw", "fused-adamw"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_bad_step_is_skipped_and_counted(bad: float, fused: bool, monkeypatch):
    monkeypatch.setattr(torch.optim, "AdamW", adamw(fused))
    model, weights = train({2}, bad, max_steps=4)
    before, during, after = weights.after[1], weights.after[2], weights.after[3]
    assert all(torch.equal(a, b) for a, b in zip(before, during, strict=True))  # no update
    assert not all(torch.equal(a, b) for a, b in zip(during, after, strict=True))  # training on
    assert (int(model.numerics.skipped), int(model.numerics.in_row)) == (1, 0)
    optimizer = model.trainer.optimizers[0]
    assert optimizer.state[next(model.parameters())]["step"] == 3  # AdamW saw 3 of 4 steps
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_steps_in_a_row_stop_the_run():
    with pytest.raises(NonFiniteError, match=r"stopped at step 3: .* the last 3 optimizer steps"):
        train({1, 2, 3}, math.nan, max_steps=6, max_nonfinite_steps=3)


def test_max_nonfinite_steps_must_be_positive():
    with pytest.raises(ValueError, match="optim.max_nonfinite_steps=0"):
        OptimizerConfig(max_nonfinite_steps=0)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("lr", "nan_validation"),
    [(1e4, False), (1e8, True)],  # 1e4: finite loss, inf gradients; 1e8: NaN everywhere
)
def test_divergent_learning_rate(tmp_path: Path, monkeypatch, capsys, lr: float, nan_validation):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    config = lm_config(tmp_path, max_steps=12, val_check_interval=2)
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            [
                "fit",
                "-c",
                str(config),
                f"--runs_dir={tmp_path / 'runs'}",
                f"--model.init_args.optim.lr={lr}",
                "--model.init_args.optim.warmup_steps=0",
            ]
        )
    assert stopped.value.code == 1
    error = capsys.readouterr().err
    assert "training stopped at step 5" in error and "optim.max_nonfinite_steps=5" in error
    assert "Traceback" not in error
    [run] = [p.parent for p in (tmp_path / "runs").rglob("config.yaml")]  # the folder stays
    assert metric_by_step(run, "train/skipped_steps") == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in last["state_dict"].values())  # none applied
    validation = metric_by_step(run, "val/loss")
    assert any(math.isnan(v) for v in validation.values()) == nan_validation
    for best in run.glob("checkpoints/best-*.ckpt"):  # never a non-finite score as the best
        assert math.isfinite(validation[int(best.stem.removeprefix("best-")) - 1])
    assert any(run.glob("checkpoints/best-*.ckpt")) != nan_validation
