"""FLOPs per token and device peaks for MFU."""

import torch

from experiments.flops import dense_peak, flops_per_token, matmul_weights
from modules.config import DecoderConfig
from modules.models import DecoderTransformer


def test_gpt2_small_flops_match_nanogpt_estimate():
    """nanoGPT's estimate_mfu: 6 N + 12 L d T per token, N without the position embedding
    (the tied token embedding counted once, as the output projection)."""
    model = DecoderTransformer(DecoderConfig.from_preset("gpt2-small"))
    params = sum(p.numel() for p in model.parameters())
    n = params - model.embed.positions.weight.numel()
    assert matmul_weights(model) == n == 123_653_376
    assert flops_per_token(model, 1024) == 6 * n + 12 * 12 * 768 * 1024


def test_no_peak_without_a_known_gpu():
    assert dense_peak(torch.device("cpu"), "bf16-mixed") is None
