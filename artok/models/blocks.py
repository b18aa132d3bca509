"""Transformer blocks over the shared attention (``artok.models.attention``): VAR's AdaLN block (Tian et al.,
2024, arXiv 2404.02905) and HART's Llama block (Tang et al., 2024, arXiv 2410.10812).

Leaf modules with keyword-only arguments; ``artok.models.transformer`` and ``artok.models.hart`` assemble
them. Notation follows docs/reference-behaviour.md, section 4.3: B batch, L tokens, D width, N heads, hd head size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from artok.models.attention import LayerCache, SelfAttention
from artok.models.llama import RMSNorm, SwiGLU

# ---------------------------------------------------------------------------------------------------------
# VAR
# ---------------------------------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop a whole residual branch per sample in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FeedForward(nn.Module):
    """fc1 → GELU (tanh approximation, as VAR) → fc2."""

    def __init__(self, *, embed_dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class AdaLNBlock(nn.Module):
    """Pre-norm block modulated by the condition (VAR's ``AdaLNSelfAttn``):

        x = x + γ1·Attn(LN(x)·(1 + s1) + b1)
        x = x + γ2·FFN(LN(x)·(1 + s2) + b2)

    (γ1, γ2, s1, s2, b1, b2) come from ``adaln(SiLU(c))`` per block, or with ``shared_adaln`` from the
    model's shared projection plus this block's learnable ``adaln_bias`` (VAR's ``ada_gss``).
    """

    def __init__(self, *, embed_dim: int, num_heads: int, mlp_ratio: float = 4.0, shared_adaln: bool = False,
                 l2_norm: bool = True, norm_eps: float = 1e-6, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.embed_dim, self.shared_adaln = embed_dim, shared_adaln
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.attn = SelfAttention(embed_dim=embed_dim, num_heads=num_heads, l2_norm=l2_norm, dropout=dropout)
        self.ffn = FeedForward(embed_dim=embed_dim, hidden_dim=round(embed_dim * mlp_ratio), dropout=dropout)
        self.drop_path = DropPath(drop_path)
        if shared_adaln:
            self.adaln_bias = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        else:
            self.adaln = nn.Linear(embed_dim, 6 * embed_dim)

    def modulation(self, condition: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """condition: (B, D) class embedding, or (B, 1, 6, D) shared modulation → six (B, 1, D) tensors."""
        if self.shared_adaln:
            return (self.adaln_bias + condition).unbind(2)
        return self.adaln(F.silu(condition)).view(-1, 1, 6, self.embed_dim).unbind(2)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, *, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False, cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, l, D) → (B, l, D)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(condition)
        h = self.attn(self.norm(x) * (scale1 + 1) + shift1, attn_mask=attn_mask, is_causal=is_causal, cache=cache)
        x = x + self.drop_path(h * gamma1)
        h = self.ffn(self.norm(x) * (scale2 + 1) + shift2)
        return x + self.drop_path(h * gamma2)


# ---------------------------------------------------------------------------------------------------------
# HART
# ---------------------------------------------------------------------------------------------------------


class HartBlock(nn.Module):
    """Pre-norm Llama block with HART's AdaLN variants (one RMSNorm weight shared by both norms, docs/reference-behaviour.md Q8):
    x += Attn(norm(x)·(1+s1) + b1)·γ1; x += FFN(norm(x)·(1+s2) + b2)·γ2, or no modulation (``none``).

    ``adaln``: ``pooled`` (a per-block projection of the pooled condition), ``shared_table`` (a learnable
    per-block table added to the pooled condition) or ``none``.
    """

    def __init__(self, *, embed_dim: int, num_heads: int, mlp_hidden: int, adaln: str = "shared_table",
                 l2_norm: bool = False, norm_eps: float = 1e-6) -> None:
        super().__init__()
        D = embed_dim
        self.mode = adaln
        self.norm = RMSNorm(D, norm_eps)
        self.attn = SelfAttention(embed_dim=D, num_heads=num_heads, l2_norm=l2_norm)
        self.ffn = SwiGLU(D, mlp_hidden)
        if self.mode == "pooled":
            self.adaln = nn.Linear(D, 6 * D)
        elif self.mode == "shared_table":
            self.adaln_table = nn.Parameter(torch.randn(6, D) / D ** 0.5)

    def modulation(self, pooled: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """(γ1, γ2, s1, s2, b1, b2), each (B, 1, D), from the pooled condition (B, D)."""
        if self.mode == "pooled":
            return self.adaln(F.silu(pooled)).view(-1, 1, 6, pooled.shape[-1]).unbind(2)
        if self.mode == "shared_table":
            return (self.adaln_table[None] + pooled[:, None]).unsqueeze(1).unbind(2)  # (B, 1, 6, D) → 6 × (B, 1, D)
        return None

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, angles: torch.Tensor, *,
                attn_mask: torch.Tensor | None, cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, l, D); pooled: (B, D); angles: (B, l, hd) RoPE angles → (B, l, D)."""
        mod = self.modulation(pooled)
        if mod is None:
            x = x + self.attn(self.norm(x), angles=angles, attn_mask=attn_mask, cache=cache)
            return x + self.ffn(self.norm(x))
        g1, g2, s1, s2, b1, b2 = mod
        h = self.attn(self.norm(x).mul(1 + s1).add(b1), angles=angles, attn_mask=attn_mask, cache=cache)
        x = x + h.mul(g1)
        return x + self.ffn(self.norm(x).mul(1 + s2).add(b2)).mul(g2)
