"""TokenLearner and TokenFuser (Ryoo et al., 2021, arXiv 2106.11297) as a tokenizer encoder.

After ``learner_position`` blocks over the full grid X (B, N, D):

1. TokenLearner: S spatial-attention branches, small convolutions on the normalised grid ending in one
   sigmoid map α_i (B, h, w) per branch; token i is the spatial mean of α_i ⊙ X,
   z_i = (1/N) Σ_p α_i(p) x_p. With 0 < α < 1 each token is a bounded combination of the pixels: its
   coefficients lie in (0, 1/N) and sum to at most 1, so z_i lies in the convex hull of 0 and the pixels
   (and equals their mean when α_i ≡ 1);
2. the remaining blocks run on the S tokens only;
3. TokenFuser: a linear map over the token axis mixes the tokens (Y ← (LN(Y)ᵀ W)ᵀ, W (S, S)), then every
   pixel takes a weighted sum of them with weights β = sigmoid(MLP(X)) (B, N, S) computed from the grid
   features X that entered the learner, added back to those features: X_out = X + β Y.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from artok.encoders.vit import ViTEncoder, init_vit_weights


# ---------------------------------------------------------------------------------------------------------
# Functional core
# ---------------------------------------------------------------------------------------------------------

def learn_tokens(maps: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """z_i = mean over pixels of α_i ⊙ x: maps (B, N, S) in (0, 1), pixels (B, N, D) → tokens (B, S, D)."""
    return torch.einsum("bns,bnd->bsd", maps, pixels) / pixels.shape[1]


def fuse_tokens(pixels: torch.Tensor, weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """X + β Y: pixels (B, N, D), weights β (B, N, S), mixed tokens Y (B, S, D) → (B, N, D)."""
    return pixels + weights @ tokens


# ---------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------

class TokenLearner(nn.Module):
    """grid (B, N, D) on an h × w grid → (tokens (B, S, D), maps α (B, N, S)).

    Each of the S branches is a channel of the same small conv stack (3×3 depthwise, GELU, 1×1 to S
    channels), so all branches cost one pass.
    """

    def __init__(self, width: int, num_tokens: int, grid_size: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.attention = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width), nn.GELU(), nn.Conv2d(width, num_tokens, 1))

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) → α (B, N, S) in (0, 1)."""
        grid = rearrange(self.norm(x), "b (h w) d -> b d h w", h=self.grid_size)
        return rearrange(self.attention(grid), "b s h w -> b (h w) s").sigmoid()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.maps(x)
        return learn_tokens(maps, x), maps


class TokenFuser(nn.Module):
    """tokens (B, S, D) and the grid that entered the learner (B, N, D) → grid (B, N, D)."""

    def __init__(self, width: int, num_tokens: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mix = nn.Linear(num_tokens, num_tokens)  # over the token axis
        self.norm_grid = nn.LayerNorm(width, eps=1e-6)
        self.weights = nn.Sequential(nn.Linear(width, int(width * mlp_ratio)), nn.GELU(),
                                     nn.Linear(int(width * mlp_ratio), num_tokens))

    def forward(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        mixed = rearrange(self.mix(rearrange(self.norm(tokens), "b s d -> b d s")), "b d s -> b s d")  # (B, S, D)
        self.last_weights = self.weights(self.norm_grid(grid)).sigmoid()  # (B, N, S)
        return fuse_tokens(grid, self.last_weights, mixed)


class TokenLearnerEncoder(ViTEncoder):
    """ViT encoder with a TokenLearner after ``learner_position`` blocks and a TokenFuser after the last:
    images (B, 3, H, W) → (B, C, H/p, W/p). Blocks before the learner see all N tokens, the rest S."""

    def __init__(self, *, num_tokens: int = 8, learner_position: int = 1, **vit_kwargs) -> None:
        super().__init__(**vit_kwargs)
        if num_tokens < 1:
            raise ValueError(f"num_tokens S must be >= 1, got {num_tokens}")
        if not 0 <= learner_position < self.depth:
            raise ValueError(f"learner_position {learner_position} must leave at least one of the {self.depth} "
                             f"blocks after the TokenLearner (0..{self.depth - 1})")
        self.num_tokens, self.learner_position = num_tokens, learner_position
        mlp_ratio = self.blocks[0].mlp[0].out_features / self.width
        self.learner = TokenLearner(self.width, num_tokens, self.grid_size)
        self.fuser = TokenFuser(self.width, num_tokens, mlp_ratio)
        init_vit_weights(self.fuser)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        x = self.embed(images)  # (B, N, D)
        for block in self.blocks[:self.learner_position]:
            x = block(x)
        tokens, maps = self.learner(x)  # (B, S, D), (B, N, S)
        for block in self.blocks[self.learner_position:]:
            tokens = block(tokens)
        x = self.fuser(tokens, x)  # (B, N, D)
        n, k = x.shape[1], self.learner_position
        self.record([n] * k + [self.num_tokens] * (self.depth - k))
        self.last_assignment = maps.argmax(-1).detach()  # (B, N) the branch that weighs each pixel most
        return self.to_grid(self.head(x))
