"""A checkpoint write that dies halfway leaves the previous checkpoint whole."""

from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from experiments.saving import AtomicCheckpointIO


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def dies_halfway(self, checkpoint, target, storage_options=None):
        Path(target).write_bytes(b"PK\x03\x04 partial")  # a truncated zip, as a kill would leave
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_runs_write_checkpoints_through_it(tmp_path: Path, monkeypatch):
    """Also: last.ckpt follows every validation and the end of training, while the best stays
    put (lr 0: no improvement). Lightning's own save_last rewrites last.ckpt only together
    with a new best, which would leave it at step 3 here."""
    from tests.cli_helpers import fit_once
    from tests.test_training import lm_config

    written = []
    original = AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, storage_options=None):
        written.append((Path(path).name, checkpoint["global_step"]))
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", spy)
    run = fit_once(tmp_path, lm_config(tmp_path), "--model.init_args.optim.lr=0.0")
    assert ("last.ckpt", 3) in written and ("last.ckpt", 6) in written
    assert [name for name, _ in written if name.startswith("best")] == ["best-3.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert not list((run / "checkpoints").glob(".*tmp*"))
