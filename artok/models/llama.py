"""Llama building blocks as HART uses them (Touvron et al., 2023, arXiv 2302.13971): RMSNorm, rotary position
embeddings (1D for condition tokens, HART's 2D variant for image tokens; docs/reference-behaviour.md 5.2, quirk Q7) and the
SwiGLU MLP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROPE_BASE = 10000.0


class RMSNorm(nn.Module):
    """x·rsqrt(mean(x²) + eps)·w, accumulated in fp32 (HART's fused kernel)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)), no biases (Shazeer, 2020, arXiv 2002.05202)."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(embed_dim, hidden, bias=False)
        self.up_proj = nn.Linear(embed_dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------------------------------------------
# Rotary position embeddings (Su et al., 2021, arXiv 2104.09864)
# ---------------------------------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rope_angles_1d(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Llama's 1D RoPE angles [p·inv, p·inv], inv = 10000^(−(0, 2, …)/hd): positions (B, n) → (B, n, hd)."""
    inv = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    f = positions.float()[..., None] * inv
    return torch.cat((f, f), dim=-1)  # (B, n, hd)


def rope_angles_2d(rows: torch.Tensor, cols: torch.Tensor, head_dim: int) -> torch.Tensor:
    """HART's 2D RoPE angles [fx, fx, fy, fy], f = p·10000^(−(0, 4, …)/hd): (B, n) float positions →
    (B, n, hd). Dimension d pairs with d + hd/2 under *different* angles (x versus y), as HART does."""
    inv = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 4, device=rows.device, dtype=torch.float32) / head_dim)
    fx, fy = rows.float()[..., None] * inv, cols.float()[..., None] * inv
    return torch.cat((fx, fx, fy, fy), dim=-1)  # (B, n, hd)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x: (B, N, n, hd); angles: (B, n, hd) → x rotated, (B, N, n, hd)."""
    cos, sin = angles.cos()[:, None].to(x.dtype), angles.sin()[:, None].to(x.dtype)
    return x * cos + rotate_half(x) * sin
