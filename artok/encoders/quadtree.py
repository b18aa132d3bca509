"""Quadtree mixed-resolution tokens (Quadformer; Ronen et al., 2023, arXiv 2304.00287) as a tokenizer encoder.

The image starts as a grid of the largest patches (p·2^levels pixels). A saliency scorer rates every
possible patch; the highest-scoring patch that can still be split is split into its four quadrants, again
and again, until one more split would exceed the token budget. Every leaf patch, whatever its size, is
area-resized to p × p pixels and embedded with the shared patch embedding, and gets the position embedding
of its centre on the finest grid. After the transformer, each leaf token is scattered back to every fine
cell it covers, giving the usual (B, C, H/p, W/p) latent grid.

Scorers: ``pixel_variance`` (variance of the patch's pixels, the baseline), ``pixel_blur`` (the squared
error of representing the patch at p × p: what resizing it would lose), and ``feature`` (the variance of
the encoder's own learned fine patch embeddings inside the patch, so the scorer improves as the encoder
trains, at no extra parameters). Selection is discrete and runs without gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.encoders.vit import ViTEncoder

SCORERS = ("pixel_variance", "pixel_blur", "feature")


# ---------------------------------------------------------------------------------------------------------
# Quadtree bookkeeping
# ---------------------------------------------------------------------------------------------------------

class QuadtreeLayout(nn.Module):
    """Index tables of every candidate patch of a quadtree over a side × side grid of fine cells.

    Candidates are numbered level by level (level 0 = fine cells, level l = 2^l × 2^l cells), raster order
    within a level; T is their total. Buffers: ``level`` (T,), ``boxes`` (T, 3) as (row, column, side) in
    fine cells, ``centres`` (T, 2) on the fine grid, ``child_index`` (T, 4) (−1 on level 0) and ``ancestors``
    (side², levels + 1), the candidate of each level that contains each fine cell.
    """

    def __init__(self, side: int, levels: int) -> None:
        super().__init__()
        if side % (1 << levels):
            raise ValueError(f"a grid of {side}x{side} fine cells cannot hold patches of {1 << levels}x{1 << levels} "
                             f"cells (levels={levels})")
        self.side, self.levels = side, levels
        sides = [side >> l for l in range(levels + 1)]
        offsets = [sum(s * s for s in sides[:l]) for l in range(levels + 1)]
        level, boxes, children = [], [], []
        for l, g in enumerate(sides):
            rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
            rows, cols = rows.reshape(-1), cols.reshape(-1)
            level.append(torch.full((g * g,), l))
            boxes.append(torch.stack([rows << l, cols << l, torch.full_like(rows, 1 << l)], dim=1))
            if l == 0:
                children.append(torch.full((g * g, 4), -1))
            else:
                child_rows = (2 * rows)[:, None] + torch.tensor([0, 0, 1, 1])
                child_cols = (2 * cols)[:, None] + torch.tensor([0, 1, 0, 1])
                children.append(offsets[l - 1] + child_rows * sides[l - 1] + child_cols)
        boxes = torch.cat(boxes)
        fine_rows, fine_cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        fine_rows, fine_cols = fine_rows.reshape(-1), fine_cols.reshape(-1)
        ancestors = torch.stack([offsets[l] + (fine_rows >> l) * sides[l] + (fine_cols >> l)
                                 for l in range(levels + 1)], dim=1)
        self.register_buffer("level", torch.cat(level), persistent=False)
        self.register_buffer("boxes", boxes, persistent=False)
        self.register_buffer("centres", boxes[:, :2].float() + (boxes[:, 2:].float() - 1) / 2, persistent=False)
        self.register_buffer("child_index", torch.cat(children), persistent=False)
        self.register_buffer("ancestors", ancestors, persistent=False)
        self.num_roots = sides[-1] ** 2
        self.num_splittable = sum(s * s for s in sides[1:])

    @property
    def num_candidates(self) -> int:
        return self.level.numel()

    def tokens_for_budget(self, budget: int) -> int:
        """Leaves after greedy splitting: roots + 3 per split, splitting while the budget allows."""
        splits = min(max(budget - self.num_roots, 0) // 3, self.num_splittable)
        return self.num_roots + 3 * splits

    @torch.no_grad()
    def split(self, scores: torch.Tensor, budget: int) -> torch.Tensor:
        """Greedy quadtree: scores (B, T) of every candidate → leaf mask (B, T), tokens_for_budget True each.

        Repeatedly splits the highest-scoring leaf of level ≥ 1 into its four children.
        """
        B = scores.shape[0]
        splittable_score = scores.float().masked_fill(self.level == 0, -torch.inf)
        leaf = torch.zeros(B, self.num_candidates, dtype=torch.bool, device=scores.device)
        leaf[:, self.level == self.levels] = True
        batch = torch.arange(B, device=scores.device)
        for _ in range((self.tokens_for_budget(budget) - self.num_roots) // 3):
            best = splittable_score.masked_fill(~leaf, -torch.inf).argmax(dim=1)  # (B,)
            leaf[batch, best] = False
            leaf[batch[:, None], self.child_index[best]] = True
        return leaf


# ---------------------------------------------------------------------------------------------------------
# Saliency
# ---------------------------------------------------------------------------------------------------------

def _pooled_variance(x: torch.Tensor, k: int) -> torch.Tensor:
    """x (B, C, H, W) → (B, H/k, W/k): variance inside each k × k block, averaged over channels."""
    if k == 1:
        return x.new_zeros(x.shape[0], *x.shape[-2:])
    return (F.avg_pool2d(x * x, k) - F.avg_pool2d(x, k) ** 2).clamp_min(0).mean(1)


def saliency_scores(scorer: str, images: torch.Tensor, features: torch.Tensor, patch_size: int,
                    levels: int) -> torch.Tensor:
    """(B, T) score of every quadtree candidate, level by level (level 0, never split, is ignored).

    images (B, 3, H, W); features (B, D, H/p, W/p), the fine patch embeddings (``feature`` scorer).
    """
    per_level = []
    for l in range(levels + 1):
        k = 1 << l
        if scorer == "pixel_variance":
            score = _pooled_variance(images, patch_size * k)
        elif scorer == "pixel_blur":
            # per p×p output pixel, the variance of the k×k input pixels it averages; mean over the patch
            score = F.avg_pool2d(_pooled_variance(images, k)[:, None], patch_size)[:, 0]
        elif scorer == "feature":
            score = _pooled_variance(features, k)
        else:
            raise ValueError(f"scorer must be one of {SCORERS}, got '{scorer}'")
        per_level.append(score.flatten(1))
    return torch.cat(per_level, dim=1)  # (B, T)


# ---------------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------------

class QuadtreeViTEncoder(ViTEncoder):
    """ViT encoder over quadtree mixed-resolution tokens: images (B, 3, H, W) → (B, C, H/p, W/p).

    Patch sides run from p to p·2^levels; at most ``token_budget`` tokens enter attention.
    """

    def __init__(self, *, levels: int = 2, token_budget: int = 64, scorer: str = "pixel_variance",
                 **vit_kwargs) -> None:
        super().__init__(**vit_kwargs)
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got '{scorer}'")
        self.layout = QuadtreeLayout(self.grid_size, levels)
        if token_budget < self.layout.num_roots:
            raise ValueError(f"token_budget {token_budget} is below the {self.layout.num_roots} largest patches "
                             f"({self.patch_size << levels} px) that tile a {self.image_size} px image")
        self.levels, self.token_budget, self.scorer = levels, token_budget, scorer

    @property
    def num_tokens(self) -> int:
        """Tokens entering attention (the same for every image)."""
        return self.layout.tokens_for_budget(self.token_budget)

    def candidates(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of every candidate patch (B, T, D), positions added, and their scores (B, T)."""
        self.check_images(images)
        levels = [self.patch_embed(images, factor=1 << l, resize="pixels") for l in range(self.levels + 1)]
        scores = saliency_scores(self.scorer, images, levels[0].detach(), self.patch_size, self.levels)
        tokens = torch.cat([rearrange(e, "b d h w -> b (h w) d") for e in levels], dim=1)  # (B, T, D)
        return tokens + self.pos_embed.at(self.layout.centres), scores

    def leaves(self, images: torch.Tensor) -> torch.Tensor:
        """Leaf mask (B, T) of the quadtree chosen for each image."""
        return self.layout.split(self.candidates(images)[1], self.token_budget)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """The chosen patches (B, n, 3) as (row, column, side) in pixels; they tile each image exactly."""
        leaf = self.leaves(images)
        boxes = self.layout.boxes.expand(leaf.shape[0], -1, -1)[leaf].reshape(leaf.shape[0], -1, 3)
        return boxes * self.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        tokens, scores = self.candidates(images)
        leaf = self.layout.split(scores, self.token_budget)  # (B, T)
        B, T, D = tokens.shape
        n = self.num_tokens
        order = torch.argsort((~leaf).to(torch.int8), dim=1, stable=True)  # leaves first
        x = tokens.gather(1, order[:, :n, None].expand(-1, -1, D))  # (B, n, D)
        for block in self.blocks:
            x = block(x)
        x = self.head(x)  # (B, n, C)
        # each fine cell reads the one leaf among its ancestors
        owner = (self.layout.ancestors * leaf[:, self.layout.ancestors]).sum(-1)  # (B, N) candidate index
        position = torch.empty_like(order).scatter_(1, order, torch.arange(T, device=x.device).expand(B, -1))
        source = position.gather(1, owner)  # (B, N) index into x
        self.record([n] * self.depth)
        return self.to_grid(x.gather(1, source[..., None].expand(-1, -1, x.shape[-1])))
