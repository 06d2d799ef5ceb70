"""The CLI keeps the memory a training step frees for the next step (experiments/allocator.py):
after warm-up a CPU training step faults almost no fresh pages in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments import allocator

STEPS = """
import resource, sys, torch
from experiments.allocator import keep_freed_memory
assert keep_freed_memory()
from modules.tasks import CausalLMModule
torch.manual_seed(0)
arch = {"vocab_size": 65, "max_length": 64, "n_layers": 4, "d_model": 128, "n_heads": 4, "d_ff": 512}
task = CausalLMModule(preset="tiny", arch=arch, sample_tokens=0)
optimizer = torch.optim.AdamW(task.parameters(), fused=True)
x = torch.randint(0, 65, (12, 65))
def step():
    task.step({"input_ids": x[:, :-1], "labels": x[:, 1:]}).loss_sum.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.timeout(120)
def test_a_training_step_reuses_the_pages_of_the_last():
    """The Tiny Shakespeare model's step (4 x 128, batch 12 x 64): glibc's defaults fault
    300-800 pages in per step here; kept, fewer than 50."""
    done = subprocess.run(
        [sys.executable, "-c", STEPS], capture_output=True, text=True, check=True, timeout=110
    )
    assert float(done.stdout) < 50


def test_glibc_settings_of_the_user_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert not allocator.keep_freed_memory()
