"""Multi-head self-attention and its KV cache, shared by the VAR blocks (``blocks.AdaLNBlock``) and the HART
blocks (``blocks.HartBlock``).

VAR (arXiv 2404.02905, ``models/basic_var.py``) and HART (arXiv 2410.10812, ``LlamaAttention``) project
q, k, v the same way: one bias-free ``qkv`` matrix plus learnable q and v biases (k has none). Either
l2-normalises q and k and scales the cosine logits by a learnable per-head exp(min(log_scale, ln 100)), or
uses the softmax scale 0.25/√hd (docs/reference-behaviour.md Q5). HART then rotates q and k with RoPE (after the l2 norm, as HART
does). Every path ends in one ``attend`` call, which also appends to the cache. Notation: B batch, l new
tokens, D width, N heads, hd head size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.models.llama import apply_rope

# VAR clamps the learnable log attention scale at ln(100) (models/basic_var.py, SelfAttention); HART copies it
MAX_LOG_ATTENTION_SCALE = math.log(100.0)
# VAR initialises the l2-normalised attention's scale to 4 (log 4)
INITIAL_ATTENTION_SCALE = 4.0

# ---------------------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------------------


class LayerCache:
    """Keys and values of the tokens one attention layer has seen: (B, N, l_total, hd) each, or None.

    With ``capacity`` (the sequence length L) the buffers are allocated once, at the first append, and later
    blocks are written into them in place: no re-allocation and no copy of the old entries per block (the
    views handed to attention grow). Without it each append concatenates (any length, e.g. HART's context
    prefix of unknown size).
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self._length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' k, v (B, N, l, hd); returns every cached key and value, new ones last."""
        start, end = self._length, self._length + k.shape[2]
        if self.capacity is None:
            self.keys = k if self.keys is None else torch.cat((self.keys, k), dim=2)  # (B, N, l_total, hd)
            self.values = v if self.values is None else torch.cat((self.values, v), dim=2)
            self._length = end
            return self.keys, self.values
        if end > self.capacity:
            raise ValueError(f"the cache holds {start} of {self.capacity} tokens; {k.shape[2]} more do not fit")
        if self.keys is None or self.keys.shape[0] != k.shape[0] or self.keys.dtype != k.dtype:
            if start:
                raise ValueError("a block's keys changed batch size or dtype in the middle of a sequence")
            B, N, _, hd = k.shape
            self.keys = k.new_empty(B, N, self.capacity, hd)
            self.values = v.new_empty(B, N, self.capacity, v.shape[-1])
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self._length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    @property
    def length(self) -> int:
        return self._length


class KVCache:
    """The KV cache of a whole transformer, one ``LayerCache`` per block, for incremental (block by block)
    decoding; the models' ``new_cache()`` makes one. ``capacity``: the most tokens it will hold (pre-allocated
    buffers), or None to grow by concatenation."""

    def __init__(self, depth: int, capacity: int | None = None) -> None:
        self.layers = [LayerCache(capacity) for _ in range(depth)]

    @property
    def length(self) -> int:
        """Tokens decoded so far."""
        return self.layers[0].length

    def keep_rows(self, n: int) -> None:
        """Keep only the first n sequences of the batch from here on (the sampler drops the unconditional
        half when it stops guiding); the pre-allocated buffers are narrowed, not copied."""
        for layer in self.layers:
            if layer.keys is not None:
                layer.keys, layer.values = layer.keys[:n], layer.values[:n]


# ---------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
           attn_mask: torch.Tensor | None = None, is_causal: bool = False, cache: LayerCache | None = None,
           dropout_p: float = 0.0) -> torch.Tensor:
    """Scaled dot-product attention of q, k, v (B, N, l, hd) → (B, N, l, hd).

    attn_mask: (l, l) bool, True where attention is allowed; ``is_causal`` instead for a token-causal mask.
    With ``cache``, k and v are appended to it and the new tokens attend to every cached token and to each
    other without a mask: they form one block of the block-causal sequence.
    """
    if cache is not None:
        k, v = cache.append(k, v)  # (B, N, l_total, hd)
        attn_mask, is_causal = None, False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                          dropout_p=dropout_p)


class SelfAttention(nn.Module):
    """Multi-head self-attention with VAR's qkv bias (q and v only), optional l2-normalised q, k and optional
    rotary positions.

    With ``l2_norm`` the logits are cos(q, k)·exp(min(log_scale, ln 100)) with a learnable per-head
    ``log_scale``; otherwise the softmax scale is 0.25/√hd (VAR's choice, docs/reference-behaviour.md Q5). Parameter names
    (``qkv``, ``q_bias``, ``v_bias``, ``log_scale``, ``proj``) are those of both official checkpoints.
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

    def forward(self, x: torch.Tensor, *, angles: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False, cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, l, D) → (B, l, D). angles: (B, l, hd) RoPE angles of the tokens (``llama.rope_angles_*``),
        or None for no rotary positions. attn_mask, is_causal, cache: as ``attend``."""
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b l (three n d) -> three b n l d", three=3, n=self.num_heads).unbind(0)
        if self.l2_norm:
            scale = self.log_scale.clamp_max(MAX_LOG_ATTENTION_SCALE).exp()  # (1, N, 1, 1)
            q = F.normalize(q, dim=-1).mul(scale)
            k = F.normalize(k, dim=-1)
        if angles is not None:  # after the l2 norm, as HART does
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        out = attend(q, k, v, scale=self.scale, attn_mask=attn_mask, is_causal=is_causal, cache=cache,
                     dropout_p=self.dropout if self.training else 0.0)
        out = rearrange(out, "b n l d -> b l (n d)")  # (B, l, D)
        return self.proj_drop(self.proj(out))
