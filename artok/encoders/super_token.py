"""Super tokens (STViT; Huang et al., 2023, arXiv 2211.11167) as a tokenizer encoder.

Super-token attention replaces each block's global attention with three steps over an s × s grid of
super tokens per region of tokens:

1. sampling: super tokens start as the mean of their region; each token is softly associated with the 3 × 3
   super tokens around its region, Q = softmax over those 9 of (x · S / √D); each super token is then the
   Q-weighted mean of the tokens associated with it (column-normalised Qᵀ X); repeat ``iterations`` times;
2. self-attention among the few super tokens (the shared ViT block's attention);
3. upsampling: every token becomes the association-weighted sum Q S of its 9 neighbouring super tokens.

Tokens entering attention drop by s², and the latent grid keeps its full (H/p, W/p) size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from artok.encoders.vit import ViTEncoder

NEIGHBOURS = 9  # the 3 × 3 super tokens around a region


def _regions(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """tokens (B, D, h, w) → (B, n, m, D): n = (h/s)(w/s) regions of m = s² tokens."""
    return rearrange(tokens, "b d (y i) (x j) -> b (y x) (i j) d", i=size, j=size)


def _neighbourhoods(super_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """super tokens (B, D, hs, ws) → the 3 × 3 neighbours of each region (B, n, 9, D) and which of them lie
    inside the grid (n, 9)."""
    B, D, hs, ws = super_tokens.shape
    neighbours = rearrange(F.unfold(super_tokens, 3, padding=1), "b (d k) n -> b n k d", k=NEIGHBOURS)
    inside = F.unfold(super_tokens.new_ones(1, 1, hs, ws), 3, padding=1)[0].T > 0  # (n, 9)
    return neighbours, inside


def super_token_association(tokens: torch.Tensor, super_tokens: torch.Tensor, size: int) -> torch.Tensor:
    """Soft association Q (B, n, m, 9) of every token with the 9 super tokens around its region.

    tokens (B, D, h, w); super_tokens (B, D, h/s, w/s). Each row (a token's associations) sums to 1;
    neighbours outside the grid get 0.
    """
    neighbours, inside = _neighbourhoods(super_tokens)
    affinity = torch.einsum("bnmd,bnkd->bnmk", _regions(tokens, size), neighbours) / math.sqrt(tokens.shape[1])
    return affinity.masked_fill(~inside[:, None], -torch.inf).softmax(dim=-1)


def update_super_tokens(tokens: torch.Tensor, association: torch.Tensor, size: int) -> torch.Tensor:
    """S_j = Σ_i Q_ij x_i / Σ_i Q_ij: each super token as the association-weighted mean of its tokens.

    tokens (B, D, h, w), association (B, n, m, 9) → super tokens (B, D, h/s, w/s).
    """
    B, D, h, w = tokens.shape
    grid = (h // size, w // size)
    weighted = torch.einsum("bnmk,bnmd->bndk", association, _regions(tokens, size))  # (B, n, D, 9)
    total = F.fold(rearrange(weighted, "b n d k -> b (d k) n"), grid, 3, padding=1)  # (B, D, hs, ws)
    mass = F.fold(rearrange(association.sum(2), "b n k -> b k n"), grid, 3, padding=1)  # (B, 1, hs, ws)
    return total / mass.clamp_min(1e-6)


def upsample_tokens(association: torch.Tensor, super_tokens: torch.Tensor, size: int) -> torch.Tensor:
    """Tokens X = Q S (B, D, h, w) from super tokens (B, D, h/s, w/s) and the association (B, n, m, 9)."""
    neighbours, _ = _neighbourhoods(super_tokens)
    tokens = torch.einsum("bnmk,bnkd->bnmd", association, neighbours)  # (B, n, m, D)
    hs, ws = super_tokens.shape[-2:]
    return rearrange(tokens, "b (y x) (i j) d -> b d (y i) (x j)", y=hs, x=ws, i=size, j=size)


def sample_super_tokens(tokens: torch.Tensor, size: int, iterations: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-token sampling: tokens (B, D, h, w) → (super tokens (B, D, h/s, w/s), association (B, n, m, 9)).

    Super tokens start as region means; each iteration re-associates and re-averages.
    """
    super_tokens = F.avg_pool2d(tokens, size)
    association = None
    for _ in range(iterations):
        association = super_token_association(tokens, super_tokens, size)
        super_tokens = update_super_tokens(tokens, association, size)
    return super_tokens, association


class SuperTokenViTEncoder(ViTEncoder):
    """ViT encoder with super-token attention in every block: images (B, 3, H, W) → (B, C, H/p, W/p)."""

    def __init__(self, *, super_token_size: int = 2, sampling_iterations: int = 1, **vit_kwargs) -> None:
        super().__init__(**vit_kwargs)
        if super_token_size < 1 or self.grid_size % super_token_size:
            raise ValueError(f"the token grid {self.grid_size}x{self.grid_size} is not divisible by "
                             f"super_token_size {super_token_size}")
        if sampling_iterations < 1:
            raise ValueError(f"sampling_iterations must be >= 1, got {sampling_iterations}")
        self.super_token_size, self.sampling_iterations = super_token_size, sampling_iterations

    def super_token_attention(self, block, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) normalised tokens → (B, N, D): sample super tokens, attend among them, upsample."""
        s, g = self.super_token_size, self.grid_size
        grid = rearrange(x, "b (h w) d -> b d h w", h=g)
        super_tokens, association = sample_super_tokens(grid, s, self.sampling_iterations)
        attended = block.attn(rearrange(super_tokens, "b d y x -> b (y x) d"))  # (B, N/s², D)
        attended = rearrange(attended, "b (y x) d -> b d y x", y=g // s)
        return rearrange(upsample_tokens(association, attended, s), "b d h w -> b (h w) d")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        x = self.embed(images)  # (B, N, D)
        for block in self.blocks:
            x = x + self.super_token_attention(block, block.norm1(x))
            x = x + block.mlp(block.norm2(x))
        self.record([(self.grid_size // self.super_token_size) ** 2] * self.depth)
        return self.to_grid(self.head(x))
