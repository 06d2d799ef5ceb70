"""Attention core forward+backward against a direct scaled_dot_product_attention call on the
same projected inputs (ratio > 1: ours is faster), with the naive math path for reference."""

from __future__ import annotations

import statistics
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.timing import interleaved_times, median_seconds, paired_ratio
from modules.attention import MultiHeadAttention, attention_math
from modules.masks import make_mask

SHAPES = [(8, 128, 256, 8), (4, 512, 256, 8), (2, 1024, 512, 8)]  # batch, seq, d_model, heads


def measure(
    batch: int, seq: int, d_model: int, heads: int, case: str, device: str, repeats: int = 15
) -> dict[str, Any]:
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model, heads).to(device)
    x = torch.randn(batch, seq, d_model, device=device, requires_grad=True)
    attention_mask = None
    if case == "padded":
        attention_mask = torch.ones(batch, seq, dtype=torch.long, device=device)
        attention_mask[:, seq * 3 // 4 :] = 0
    mask, is_causal = make_mask(attention_mask, seq, seq, causal=case == "causal", device=device)

    def ours() -> None:
        attn(x, mask=mask, is_causal=is_causal).sum().backward()

    def direct(kernel: Any = F.scaled_dot_product_attention) -> None:
        # the same projections and head layout, then the kernel without our wrapper
        q, k, v = attn.qkv(x).split(d_model, dim=-1)
        q, k, v = (t.view(batch, seq, heads, d_model // heads).transpose(1, 2) for t in (q, k, v))
        y = kernel(q, k, v, attn_mask=mask, is_causal=is_causal)
        y = y[0] if isinstance(y, tuple) else y
        attn.out(y.transpose(1, 2).reshape(batch, seq, d_model)).sum().backward()

    def naive() -> None:
        direct(lambda q, k, v, attn_mask, is_causal: attention_math(q, k, v, attn_mask, is_causal))

    times = interleaved_times({"ours": ours, "direct": direct}, repeats=repeats)
    t_ours, t_ref = statistics.median(times["ours"]), statistics.median(times["direct"])
    ratio = paired_ratio(times["direct"], times["ours"])
    t_naive = median_seconds(naive, repeats=3, warmup=1)  # shown for reference only
    return {
        "row": "attention fwd+bwd",
        "case": f"{case} b{batch} L{seq} d{d_model} h{heads}",
        "ours_ms": t_ours * 1e3,
        "reference_ms": t_ref * 1e3,
        "naive_ms": t_naive * 1e3,
        "ratio": ratio,
        "ours": t_ours * 1e3,
        "reference": t_ref * 1e3,
        "unit": "ms",
        "reference_name": f"direct SDPA call (naive math {t_naive * 1e3:.2f} ms)",
        "target": "overhead <= 5%",
        "passed": 1 / ratio - 1 <= 0.05,
    }


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    shapes, repeats = ([(2, 16, 32, 4)], 3) if quick else (SHAPES, 12)
    return [
        measure(*shape, case, device, repeats) for shape in shapes for case in ("causal", "padded")
    ]
