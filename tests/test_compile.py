"""torch.compile in training: the training step compiles once; validation, sampling and
decoding run eagerly, so their changing shapes never trigger compilation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch._dynamo

from tests.cli_helpers import CONFIGS, fit_once, tiny_args


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compiled_training_compiles_only_the_training_step(tmp_path: Path) -> None:
    config = CONFIGS / "gpt" / "pydocs-tiny.yaml"
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run_dir = fit_once(
        tmp_path,
        config,
        *tiny_args(config, tmp_path),
        "--model.init_args.compile=true",
        "--model.init_args.sample_tokens=12",  # sampling with the KV cache after validation
        "--trainer.max_steps=6",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=3",
        "--trainer.check_val_every_n_epoch=null",
    )
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["ok"] >= 1  # the training step did compile
    assert frames["total"] == frames["ok"] <= 2  # forward (and nothing for evaluation)
    assert "continuation" in (run_dir / "samples.jsonl").read_text()
    torch._dynamo.reset()
