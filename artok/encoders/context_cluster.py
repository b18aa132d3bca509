"""Context Clusters (CoC; Ma et al., 2023, "Image as Set of Points", arXiv 2303.01494) as a tokenizer encoder.

The image is a set of points: every pixel's colour with its normalised coordinates [j/W − 0.5, i/H − 0.5],
reduced to one point per patch by the patch embedding (5 input channels). Each block replaces attention
with context clustering, inside local regions of ``region_size``² points (which keeps the cost linear in
the number of points) and per head:

1. centres: ``centres_per_side``² evenly placed centres per region, the average of the projected point
   features f (and of the values v) around them;
2. clustering: s_i = cos(f_i, f_c), each point to its most similar centre c(i), so every point belongs to
   exactly one cluster;
3. aggregation: g_c = (v_c + Σ_{i∈c} σ(α s_i + β) v_i) / (1 + Σ_{i∈c} σ(α s_i + β)), α and β learned
   (initialised 1 and 0);
4. dispatch: p_i' = p_i + FC(σ(α s_i + β) g_{c(i)}).

A block is clustering then an MLP, each pre-norm with a residual, as a ViT block. The encoder adds no
position embedding (the coordinates place the points); ``positions`` in its config sets the ViT decoder's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.encoders.vit import Mlp, PatchEmbed, ViTEncoder, init_vit_weights

POINT_CHANNELS = 5  # RGB and the two coordinates


# ---------------------------------------------------------------------------------------------------------
# Functional core (leading dimensions: one per region and head)
# ---------------------------------------------------------------------------------------------------------

def point_coordinates(images: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) → points (B, 5, H, W): colour, then [j/W − 0.5, i/H − 0.5] of pixel (i, j)."""
    B, _, H, W = images.shape
    cols = torch.arange(W, device=images.device, dtype=images.dtype) / W - 0.5
    rows = torch.arange(H, device=images.device, dtype=images.dtype) / H - 0.5
    coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij")[::-1])  # (2, H, W): x, then y
    return torch.cat([images, coords.expand(B, -1, -1, -1)], dim=1)


def assign_to_centres(points: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """points (R, M, d), centres (R, K, d) → (cosine similarity of every point to its centre (R, M),
    one-hot assignment (R, K, M): each point to its most similar centre)."""
    similarity = F.normalize(centres, dim=-1) @ F.normalize(points, dim=-1).transpose(1, 2)  # (R, K, M)
    best, index = similarity.max(dim=1)  # (R, M)
    assignment = F.one_hot(index, centres.shape[1]).transpose(1, 2).to(points.dtype)  # (R, K, M)
    return best, assignment


def aggregate(values: torch.Tensor, centre_values: torch.Tensor, gates: torch.Tensor,
              assignment: torch.Tensor) -> torch.Tensor:
    """g_c = (v_c + Σ_{i∈c} σ_i v_i) / (1 + Σ_{i∈c} σ_i).

    values (R, M, d), centre_values (R, K, d), gates σ(α s + β) (R, M), assignment (R, K, M) → (R, K, d).
    """
    weights = assignment * gates[:, None]  # (R, K, M): σ_i where i ∈ c, else 0
    return (centre_values + weights @ values) / (1 + weights.sum(-1, keepdim=True))


def dispatch(clusters: torch.Tensor, gates: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """σ_i g_{c(i)}: clusters (R, K, d), gates (R, M), assignment (R, K, M) → (R, M, d)."""
    return gates[..., None] * (assignment.transpose(1, 2) @ clusters)


# ---------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------

class ContextCluster(nn.Module):
    """Context clustering of points on a grid: x (B, N, D) → the update FC(σ g) (B, N, D)."""

    def __init__(self, width: int, num_heads: int, *, grid_size: int, region_size: int,
                 centres_per_side: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        if region_size < 1 or grid_size % region_size:
            raise ValueError(f"the {grid_size}x{grid_size} point grid is not divisible into regions of "
                             f"region_size {region_size}")
        if centres_per_side < 1 or region_size % centres_per_side:
            raise ValueError(f"centres_per_side {centres_per_side} does not divide region_size {region_size}")
        self.num_heads, self.grid_size = num_heads, grid_size
        self.region_size, self.centres_per_side = region_size, centres_per_side
        self.features = nn.Linear(width, width)  # f: what the clustering compares
        self.values = nn.Linear(width, width)  # v: what the clusters carry
        self.proj = nn.Linear(width, width)  # the dispatch's FC
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def _regions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) → (B·heads·regions, d, r, r)."""
        r = self.region_size
        return rearrange(x, "b (y i x j) (n d) -> (b n y x) d i j", y=self.grid_size // r, i=r, j=r,
                         n=self.num_heads)

    def _centres(self, regions: torch.Tensor) -> torch.Tensor:
        """(R, d, r, r) → centres evenly placed in each region, averaged around them (R, K, d)."""
        return rearrange(F.avg_pool2d(regions, self.region_size // self.centres_per_side), "r d y x -> r (y x) d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) normalised points → (B, N, D)."""
        f, v = self._regions(self.features(x)), self._regions(self.values(x))  # (R, d, r, r)
        similarity, assignment = assign_to_centres(rearrange(f, "r d i j -> r (i j) d"), self._centres(f))
        gates = torch.sigmoid(self.alpha * similarity + self.beta)  # (R, M)
        values = rearrange(v, "r d i j -> r (i j) d")  # (R, M, d)
        clusters = aggregate(values, self._centres(v), gates, assignment)  # (R, K, d)
        out = dispatch(clusters, gates, assignment)  # (R, M, d)
        self.last_assignment = assignment.argmax(1).detach()  # (R, M) cluster of every point
        g, r = self.grid_size // self.region_size, self.region_size
        out = rearrange(out, "(b n y x) (i j) d -> b (y i x j) (n d)", n=self.num_heads, y=g, x=g, i=r, j=r)
        return self.proj(out)  # (B, N, D)


class ContextClusterBlock(nn.Module):
    """x + cluster(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, **cluster_kwargs) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.cluster = ContextCluster(width, num_heads, **cluster_kwargs)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cluster(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ContextClusterEncoder(ViTEncoder):
    """Points (colour + coordinates) embedded per patch, then ``depth`` context-cluster blocks:
    images (B, 3, H, W) → (B, C, H/p, W/p)."""

    def __init__(self, *, region_size: int = 4, centres_per_side: int = 2, depth: int = 8, num_heads: int = 8,
                 mlp_ratio: float = 4.0, **vit_kwargs) -> None:
        super().__init__(depth=0, num_heads=num_heads, mlp_ratio=mlp_ratio, **vit_kwargs)
        self.patch_embed = PatchEmbed(patch_size=self.patch_size, width=self.width,
                                      conv_stem=self.patch_embed.conv_stem, in_channels=POINT_CHANNELS)
        self.pos_embed = None  # the coordinates place the points
        self.layers = nn.ModuleList(
            ContextClusterBlock(self.width, num_heads, mlp_ratio, grid_size=self.grid_size, region_size=region_size,
                                centres_per_side=centres_per_side) for _ in range(depth))
        init_vit_weights(self)
        regions = (self.grid_size // region_size) ** 2
        self.num_centres = regions * centres_per_side ** 2

    @property
    def depth(self) -> int:
        return len(self.layers)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) → points (B, N, D), raster order."""
        self.check_images(images)
        return rearrange(self.patch_embed(point_coordinates(images)), "b d h w -> b (h w) d")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        x = self.embed(images)  # (B, N, D)
        for layer in self.layers:
            x = layer(x)
        # no attention: the centres are what each point exchanges information through
        self.record([self.num_centres] * self.depth)
        self.last_assignment = self.cluster_of_points()
        return self.to_grid(self.head(x))

    def cluster_of_points(self) -> torch.Tensor:
        """(B, N): a global cluster index per point from the last block's assignment."""
        cluster = self.layers[-1].cluster
        r, g, k = cluster.region_size, self.grid_size // cluster.region_size, cluster.centres_per_side ** 2
        local = rearrange(cluster.last_assignment, "(b n y x) (i j) -> b n (y x) (i j)", n=cluster.num_heads,
                          y=g, x=g, i=r, j=r)[:, 0]  # first head
        local = local + torch.arange(g * g, device=local.device)[:, None] * k  # region offset
        return rearrange(local, "b (y x) (i j) -> b (y i x j)", y=g, i=r)
