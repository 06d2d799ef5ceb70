"""Position information: sinusoidal (paper), learned absolute (BERT, GPT-2), rotary (RoPE)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_length: int, dim: int) -> Tensor:
    """(max_length, dim) table with the sines in the first half and the cosines in the second.

    The paper interleaves them (sin at even, cos at odd features); the halves layout of
    tensor2tensor, fairseq and Marian is the same up to a fixed permutation of features and
    keeps pretrained Marian weights loadable.
    """
    position = torch.arange(max_length, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    angles = position * frequency
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


class SinusoidalPositions(nn.Module):
    def __init__(self, max_length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_length, dim), persistent=False)

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.table[position_ids]


class RotaryEmbedding(nn.Module):
    """Cosine and sine tables for rotary embeddings (rotate-half convention of GPT-NeoX/Llama)."""

    def __init__(self, head_dim: int, max_length: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_length, dtype=torch.float64)[:, None] * inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, seq) positions -> cos, sin of shape (batch, 1, seq, head_dim)."""
        return self.cos[position_ids][:, None], self.sin[position_ids][:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (batch, heads, seq, head_dim) queries or keys by their positions."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def position_ids_for(length: int, past: int, max_length: int, device: torch.device) -> Tensor:
    """Default (1, length) positions after `past` cached positions, checked against `max_length`."""
    if past + length > max_length:
        raise ValueError(
            f"sequence of {past + length} positions ({past} cached + {length} new) exceeds "
            f"max_length={max_length} of the position table; shorten the input or raise max_length"
        )
    return torch.arange(past, past + length, device=device)[None]
