"""Visual Transformer (VT; Wu et al., 2020, arXiv 2006.03677) as a tokenizer encoder.

A VT layer compresses the grid X (B, N, D) into L ≪ N *visual tokens*, runs a transformer on them and
writes them back:

1. tokenizer. Filter-based (the first layer, or every layer without ``recurrent``): token weights
   A = softmax over the N pixels of (X W_A), W_A (D, L) learned, and tokens T = Aᵀ X, each a
   spatial-attention-weighted average of the pixels (paper eq. 1). Recurrent (later layers): the filters
   come from the previous layer's tokens, W_R = T_in W_{T→R}, A = softmax_N(X W_Rᵀ), so the groups adapt
   to the image (eq. 2);
2. transformer: one pre-norm block (attention + MLP) over the L tokens;
3. projector: X_out = X_in + softmax over L of ((X_in W_Q)(T W_K)ᵀ / √D) (T W_V) (eq. 5).

Departures from the paper, both for a tokenizer's encoder: the projector's logits are scaled by 1/√D and
its values pass through W_V (the paper adds T itself), which keeps the branch at the scale of a ViT
attention branch at initialisation; and each layer ends with a per-pixel MLP (the ViT block's), because
the grid, not the tokens, feeds the quantizer and the patch embedding alone is one linear map, where the
paper's VT sits on a ResNet's convolutional features.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from artok.encoders.vit import Block, Mlp, ViTEncoder, init_vit_weights


# ---------------------------------------------------------------------------------------------------------
# Functional core
# ---------------------------------------------------------------------------------------------------------

def token_weights(pixels: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """A = softmax over pixels of (X Wᵀ): pixels (B, N, D), filters (L, D) or (B, L, D) → (B, N, L).

    Every column (one token's weights over the N pixels) sums to 1.
    """
    logits = torch.einsum("bnd,bld->bnl", pixels, filters.expand(pixels.shape[0], -1, -1))
    return logits.softmax(dim=1)


def pool_tokens(weights: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """T = Aᵀ X: weights (B, N, L), pixels (B, N, D) → tokens (B, L, D)."""
    return torch.einsum("bnl,bnd->bld", weights, pixels)


def project_tokens(pixels: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor,
                   values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projector: X_in + softmax_L(Q Kᵀ / √D) V.

    pixels (B, N, D); queries (B, N, D) from the pixels; keys, values (B, L, D) from the tokens. Returns
    X_out (B, N, D) and the attention of every pixel over the tokens (B, N, L), rows summing to 1.
    """
    attention = (queries @ keys.transpose(1, 2) / math.sqrt(queries.shape[-1])).softmax(dim=-1)  # (B, N, L)
    return pixels + attention @ values, attention


# ---------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------

class FilterTokenizer(nn.Module):
    """Static filters W_A: pixels (B, N, D) → (tokens (B, L, D), weights (B, N, L))."""

    def __init__(self, width: int, num_tokens: int) -> None:
        super().__init__()
        self.filters = nn.Linear(width, num_tokens, bias=False)  # weight (L, D) = W_Aᵀ

    def forward(self, pixels: torch.Tensor, previous: torch.Tensor | None = None):
        weights = token_weights(pixels, self.filters.weight)
        return pool_tokens(weights, pixels), weights


class RecurrentTokenizer(nn.Module):
    """Filters from the previous layer's tokens, W_R = T_in W_{T→R}: pixels (B, N, D) and tokens
    (B, L, D) → (tokens (B, L, D), weights (B, N, L))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.token_to_filter = nn.Linear(width, width, bias=False)

    def forward(self, pixels: torch.Tensor, previous: torch.Tensor):
        weights = token_weights(pixels, self.token_to_filter(previous))
        return pool_tokens(weights, pixels), weights


class Projector(nn.Module):
    """Visual tokens back to the grid: X_out = X_in + softmax_L((X_in W_Q)(T W_K)ᵀ / √D)(T W_V)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor, *, queries_from: torch.Tensor | None = None):
        """pixels (B, N, D), tokens (B, L, D) → (B, N, D). Queries come from ``queries_from`` (the
        normalised pixels) when given, else from ``pixels``."""
        queries = self.query(pixels if queries_from is None else queries_from)
        out, self.last_attention = project_tokens(pixels, queries, self.key(tokens), self.value(tokens))
        return out


class VisualTransformerLayer(nn.Module):
    """Tokenizer → transformer block on the L tokens → projector → per-pixel MLP."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, num_tokens: int, recurrent: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.tokenizer = RecurrentTokenizer(width) if recurrent else FilterTokenizer(width, num_tokens)
        self.transformer = Block(width, num_heads, mlp_ratio)
        self.projector = Projector(width)
        self.norm_mlp = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None):
        """x (B, N, D), previous tokens (B, L, D) for a recurrent tokenizer → (x (B, N, D), tokens
        (B, L, D), token weights (B, N, L))."""
        normed = self.norm(x)
        tokens, weights = self.tokenizer(normed, previous)
        tokens = self.transformer(tokens)  # (B, L, D)
        x = self.projector(x, tokens, queries_from=normed)
        return x + self.mlp(self.norm_mlp(x)), tokens, weights


class VisualTransformerEncoder(ViTEncoder):
    """ViT patch embedding, then ``depth`` VT layers over ``num_tokens`` visual tokens:
    images (B, 3, H, W) → (B, C, H/p, W/p).

    The first layer's tokenizer is filter-based; with ``recurrent`` the later ones take their filters from
    the previous layer's tokens.
    """

    def __init__(self, *, num_tokens: int = 16, recurrent: bool = True, depth: int = 8, num_heads: int = 8,
                 mlp_ratio: float = 4.0, **vit_kwargs) -> None:
        # the VT layers take the place of the plain ViT blocks
        super().__init__(depth=0, num_heads=num_heads, mlp_ratio=mlp_ratio, **vit_kwargs)
        n = self.grid_size ** 2
        if not 1 <= num_tokens <= n:
            raise ValueError(f"num_tokens L={num_tokens} must be between 1 and the {n} cells of the "
                             f"{self.grid_size}x{self.grid_size} token grid")
        self.num_tokens, self.recurrent = num_tokens, recurrent
        self.layers = nn.ModuleList(
            VisualTransformerLayer(self.width, num_heads, mlp_ratio, num_tokens, recurrent=recurrent and i > 0)
            for i in range(depth))
        init_vit_weights(self.layers)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        x = self.embed(images)  # (B, N, D)
        tokens = None
        for layer in self.layers:
            x, tokens, weights = layer(x, tokens)
        self.record([self.num_tokens] * self.depth)
        self.last_assignment = weights.argmax(-1).detach()  # (B, N) the token each pixel weighs most in
        return self.to_grid(self.head(x))
