"""Model FLOPs per token and the dense peak of the device, for MFU (model FLOPs utilisation).

MFU = (FLOPs the model needs per token x tokens per second) / the device's dense peak, as in
PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT's `estimate_mfu`.
"""

from __future__ import annotations

import torch
from torch import nn

# Dense (no sparsity) tensor-core peaks in FLOP/s from NVIDIA's datasheets, by the name
# torch.cuda.get_device_name() reports; the H200 is the H100's chip with more memory.
# (Lightning's table lists the H200's sparse figure, 2x too high.)
DENSE_PEAKS: dict[str, dict[str, float]] = {
    "h100 pcie": {"bf16": 756e12, "tf32": 378e12, "fp32": 51.2e12},
    "h100": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM
    "h200": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "a100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "l4": {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "v100": {"bf16": 0.0, "fp16": 125e12, "tf32": 0.0, "fp32": 15.7e12},
}


def dense_peak(device: torch.device, precision: str) -> float | None:
    """The device's peak for the trainer's precision ("bf16-mixed", "32-true", ...), or None
    when unknown (CPUs, GPUs missing from the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    peaks = next((p for chip, p in DENSE_PEAKS.items() if chip in name), None)
    if peaks is None:
        return None
    if precision.startswith("bf16"):
        kind = "bf16"
    elif precision.startswith("16"):
        kind = "fp16" if "fp16" in peaks else "bf16"  # equal on Ampere and later
    elif torch.get_float32_matmul_precision() != "highest":
        kind = "tf32"
    else:
        kind = "fp32"
    return peaks.get(kind) or None


def matmul_weights(model: nn.Module) -> int:
    """Weights that take part in matrix products: all but the embedding tables (lookups),
    counting a tied output projection, which is a real matmul, once more."""
    cfg = model.cfg  # type: ignore[attr-defined]
    params = sum(p.numel() for p in model.parameters())
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    tied = cfg.vocab_size * cfg.d_model if getattr(cfg, "tie_embeddings", False) else 0
    return params - embeddings + tied


def flops_per_token(model: nn.Module, context: int, weights: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token: 6 per matmul weight, plus the attention
    scores and weighted sum, 12 x layers x width x context (PaLM's estimate)."""
    cfg = model.cfg  # type: ignore[attr-defined]
    weights = matmul_weights(model) if weights is None else weights
    layers = cfg.n_layers + getattr(cfg, "decoder_layers", 0)
    return 6 * weights + 12 * layers * cfg.d_model * context
