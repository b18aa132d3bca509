"""Transformer blocks of VAR (Tian et al., 2024, arXiv 2404.02905): AdaLN-modulated self-attention + MLP.

Leaf modules with keyword-only arguments; ``artok.models.transformer`` assembles them. Notation follows
the fixture README, section 4.3: B batch, L tokens, D width, N heads, hd head size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# VAR clamps the learnable log attention scale at ln(100) (models/basic_var.py, SelfAttention)
MAX_LOG_ATTENTION_SCALE = math.log(100.0)
# VAR initialises the l2-normalised attention's scale to 4 (log 4)
INITIAL_ATTENTION_SCALE = 4.0


class LayerCache:
    """Keys and values of the tokens one attention layer has seen: (B, N, l_total, hd) each, or None."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = torch.cat((self.keys, k), dim=2)  # (B, N, l_total, hd)
            self.values = torch.cat((self.values, v), dim=2)
        return self.keys, self.values

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]


class KVCache:
    """One ``LayerCache`` per transformer block, for incremental (block by block) decoding."""

    def __init__(self, depth: int) -> None:
        self.layers = [LayerCache() for _ in range(depth)]

    @property
    def length(self) -> int:
        """Tokens decoded so far."""
        return self.layers[0].length


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


class SelfAttention(nn.Module):
    """Multi-head self-attention with VAR's qkv bias (q and v only) and optional l2-normalised q, k.

    With ``l2_norm`` the logits are cos(q, k)·exp(min(log_scale, ln 100)) with a learnable per-head
    ``log_scale``; otherwise the softmax scale is 0.25/√hd (VAR's choice, README quirk Q5).
    """

    def __init__(self, *, embed_dim: int, num_heads: int, l2_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.l2_norm, self.dropout = num_heads, embed_dim // num_heads, l2_norm, dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim), persistent=False)
        if l2_norm:
            self.log_scale = nn.Parameter(torch.full((1, num_heads, 1, 1), INITIAL_ATTENTION_SCALE).log())
            self.scale = 1.0
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, l, D). attn_mask: (l, l) bool, True where attention is allowed. With ``cache``, the new
        tokens attend to every cached token and to each other without a mask (they form one block)."""
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b l (three n d) -> three b n l d", three=3, n=self.num_heads).unbind(0)
        if self.l2_norm:
            scale = self.log_scale.clamp_max(MAX_LOG_ATTENTION_SCALE).exp()  # (1, N, 1, 1)
            q = F.normalize(q, dim=-1).mul(scale)
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.append(k, v)
            attn_mask, is_causal = None, False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0,
        )
        out = rearrange(out, "b n l d -> b l (n d)")  # (B, l, D)
        return self.proj_drop(self.proj(out))


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
