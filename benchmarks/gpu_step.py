"""GPU training-step benchmark: GPT-2 124M (batch 12, context 1024, bf16 autocast, fused
AdamW), our decoder eager and compiled beside HF `GPT2LMHeadModel` with the same weights,
in one process; step time, tokens/s, MFU against the device's dense peak, and peak memory.
Also each SDPA backend on the causal attention of that model, and the one our core picks.

    python -m benchmarks.gpu_step                 # on a GPU
    python -m benchmarks.gpu_step --quick         # small sizes, also runs on CPU (a smoke test)

Reference (issue #7, one H200): a plain PyTorch nanoGPT model 35.9 ms/step eager, 28.7 ms
compiled; HF GPT-2 83.4 ms eager; SDPA fwd+bwd (12 x 12 heads x 1024 x 64): cuDNN 0.40 ms,
flash 0.53 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.timing import median_seconds
from experiments.flops import dense_peak, flops_per_token, matmul_weights
from modules.attention import CUDA_BACKENDS, MultiHeadAttention
from modules.interop import from_hf


def gpt2(quick: bool) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    size = dict(n_layer=2, n_head=4, n_embd=128, n_positions=128) if quick else {}
    config = GPT2Config(**size, attn_implementation="sdpa")
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    torch.manual_seed(0)
    return GPT2LMHeadModel(config)


def train_step(
    forward: Callable[[Tensor], Tensor], params: list[nn.Parameter], device: torch.device
) -> Callable[[Tensor, Tensor], Tensor]:
    optimizer = torch.optim.AdamW(params, lr=6e-4, fused=device.type == "cuda")
    dtype = torch.bfloat16

    def step(x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=dtype):
            logits = forward(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(
    step: Callable[[Tensor, Tensor], Tensor], batches: list[tuple[Tensor, Tensor]], warmup: int
) -> tuple[float, float, float]:
    """(median seconds per step, first loss, seconds of the warm-up incl. compilation)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    start = time.perf_counter()
    first = step(*batches[0]).item()
    for x, y in batches[1:warmup]:
        step(x, y)
    sync()
    warm = time.perf_counter() - start
    times = []
    for x, y in batches[warmup:]:
        sync()
        t = time.perf_counter()
        step(x, y)
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), first, warm


def attention_backends(device: torch.device, quick: bool) -> list[dict]:
    """fwd+bwd of causal SDPA at GPT-2's shape for each backend, and through our core."""
    b, h, t, d = (2, 4, 128, 32) if quick else (12, 12, 1024, 64)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (
        torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in "qkv"
    )
    grad = torch.randn_like(q)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    rows = []
    candidates: dict[str, list[SDPBackend]] = {
        name: [backend]
        for name, backend in {
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
        }.items()
    }
    core = MultiHeadAttention(h * d, h).to(device)  # only `_attend` is used: no projections

    def ours() -> None:
        core._attend(q, k, v, None, True).backward(grad)

    for name, backends in candidates.items():

        def run(backends: list[SDPBackend] = backends) -> None:
            with sdpa_kernel(backends):
                F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

        try:
            with sdpa_kernel(backends), torch.no_grad():
                error = (F.scaled_dot_product_attention(q, k, v, is_causal=True) - reference).abs()
            ms = 1e3 * median_seconds(run, repeats=50, warmup=5)
            rows.append({"backend": name, "ms": ms, "max_err": float(error.max())})
        except RuntimeError as failure:  # not available for this device or shape
            rows.append({"backend": name, "ms": float("nan"), "error": str(failure)[:80]})
    rows.append(
        {"backend": "ours (_attend)", "ms": 1e3 * median_seconds(ours, repeats=50, warmup=5)}
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test, CPU ok)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")
    batch, context = (2, 128) if args.quick else (12, 1024)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = dense_peak(device, "bf16-mixed")

    hf = gpt2(args.quick).to(device)
    ours = from_hf(hf).to(device)
    per_token = flops_per_token(ours, context, matmul_weights(ours))
    generator = torch.Generator().manual_seed(0)
    vocab = hf.config.vocab_size
    n = args.steps + 10
    batches = [
        (
            torch.randint(vocab, (batch, context), generator=generator).to(device),
            torch.randint(vocab, (batch, context), generator=generator).to(device),
        )
        for _ in range(n)
    ]
    with torch.no_grad():
        x = batches[0][0][:, :64]
        parity = float((ours(x) - hf(x).logits).abs().max())

    pytorch_order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    # (label, module, forward, warm-up steps, SDPA order for our core)
    variants: list[tuple[str, nn.Module, Callable[[Tensor], Tensor], int, list[SDPBackend]]] = [
        ("HF GPT2LMHeadModel eager", hf, lambda x: hf(x).logits, 5, CUDA_BACKENDS),
        ("ours eager", ours, ours, 5, CUDA_BACKENDS),
        ("ours eager, flash first", ours, ours, 5, pytorch_order),
    ]
    if not args.no_compile:
        variants.append(("ours torch.compile", ours, torch.compile(ours), 10, CUDA_BACKENDS))
    rows = []
    initial = {k: v.detach().clone() for k, v in ours.state_dict().items()}
    default_order = list(CUDA_BACKENDS)
    for label, module, forward, warmup, order in variants:
        if module is ours:
            ours.load_state_dict(initial)  # every variant starts from the same weights
        CUDA_BACKENDS[:] = order
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        step = train_step(forward, list(module.parameters()), device)
        seconds, first_loss, warm = time_steps(step, batches, warmup)
        mfu = per_token * batch * context / seconds / peak if peak else float("nan")
        # activations, gradients and optimizer state above the weights already resident
        memory = (torch.cuda.max_memory_allocated() - resident) / 2**30 if resident else 0.0
        rows.append(
            {
                "variant": label,
                "ms_per_step": 1e3 * seconds,
                "tokens_per_s": batch * context / seconds,
                "mfu": mfu,
                "extra_gib": memory,
                "first_loss": first_loss,
                "warmup_s": warm,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    CUDA_BACKENDS[:] = default_order
    attention = attention_backends(device, args.quick)

    print(f"\nGPT-2 124M training step, batch {batch} x {context}, bf16 autocast, fused AdamW")
    print(f"device: {name}, torch {torch.__version__}, dense bf16 peak {peak or 0:.4g} FLOP/s")
    print(f"logits max |ours - HF| (fp32, eval): {parity:.2e}")
    print(f"{'variant':<28} {'ms/step':>8} {'tokens/s':>10} {'MFU':>6} {'+GiB':>6} {'loss0':>7}")
    for r in rows:
        print(
            f"{r['variant']:<28} {r['ms_per_step']:>8.2f} {r['tokens_per_s']:>10,.0f} "
            f"{r['mfu']:>6.1%} {r['extra_gib']:>6.2f} {r['first_loss']:>7.3f}"
        )
    hf_ms = rows[0]["ms_per_step"]
    for r in rows[1:]:
        print(f"ratio HF / {r['variant']}: {hf_ms / r['ms_per_step']:.2f}")
    print("\ncausal SDPA fwd+bwd, GPT-2 attention shape")
    for r in attention:
        extra = f"  max err {r['max_err']:.1e}" if "max_err" in r else f"  {r.get('error', '')}"
        print(f"  {r['backend']:<16} {r['ms']:>7.3f} ms{extra}")
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-step-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"device": name, "steps": rows, "attention": attention}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
