"""Vision Transformer encoder and decoder (Dosovitskiy et al., 2021, arXiv 2010.11929).

The plain ViT is the base of artok's token-reduction encoders (token merging, mixed-scale gating, quadtree
mixed resolution, super tokens): they share its patch embedding, position embedding and transformer blocks
and differ only in which tokens enter attention. Every encoder returns the full latent grid
(B, C, H/p, W/p) that the quantizers expect.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

POSITION_KINDS = ("sincos", "learned")


# ---------------------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------------------

def grid_centres(height: int, width: int, *, device=None) -> torch.Tensor:
    """(height·width, 2) float (row, column) coordinates of the cells of a grid, raster order."""
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)  # (h*w, 2)


def sincos_position_embedding(centres: torch.Tensor, width: int) -> torch.Tensor:
    """2D sin-cos embedding (MAE, He et al., 2022) at real-valued (row, column) positions.

    centres: (..., 2) → (..., width). Half the channels encode the row, half the column; each half is the
    1D transformer embedding with frequencies 1 / 10000^(2i / (width/2)). Real-valued positions let
    mixed-resolution tokens sit at their patch centre on the finest grid.
    """
    if width % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=centres.device, dtype=torch.float32) / quarter)
    angles = centres.float()[..., None] * omega  # (..., 2, width/4)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (..., 2, width/2)
    return emb.flatten(-2)  # (..., width): row half, then column half


class PositionEmbedding(nn.Module):
    """Position embedding of a grid_size × grid_size token grid: fixed 2D sin-cos or a learned table.

    ``table()`` gives the grid's embeddings in raster order; ``at(centres)`` evaluates the embedding at
    real-valued positions on that grid (sin-cos exactly, learned by bilinear interpolation of the table).
    """

    def __init__(self, *, grid_size: int, width: int, kind: str = "sincos") -> None:
        super().__init__()
        if kind not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got '{kind}'")
        self.kind, self.grid_size, self.width = kind, grid_size, width
        if kind == "sincos":
            self.register_buffer("weight", sincos_position_embedding(grid_centres(grid_size, grid_size), width),
                                 persistent=False)
        else:
            self.weight = nn.Parameter(torch.empty(grid_size * grid_size, width))
            nn.init.trunc_normal_(self.weight, std=0.02)

    def table(self) -> torch.Tensor:
        """(grid_size², width), raster order."""
        return self.weight

    def at(self, centres: torch.Tensor) -> torch.Tensor:
        """centres (..., 2) as (row, column) on the grid, cell centres at integers → (..., width)."""
        if self.kind == "sincos":
            return sincos_position_embedding(centres, self.width).to(self.weight.dtype)
        g = self.grid_size
        if g == 1:
            return self.weight[0].expand(*centres.shape[:-1], self.width)
        # grid_sample takes (x, y) in [-1, 1]; align_corners=True puts cell centres on the integers
        xy = centres.flip(-1).reshape(1, 1, -1, 2).to(self.weight.dtype) * (2.0 / (g - 1)) - 1
        image = rearrange(self.weight, "(h w) d -> 1 d h w", h=g)
        out = F.grid_sample(image, xy, mode="bilinear", align_corners=True)  # (1, D, 1, N)
        return rearrange(out, "1 d 1 n -> n d").reshape(*centres.shape[:-1], self.width)


# ---------------------------------------------------------------------------------------------------------
# Patch embedding
# ---------------------------------------------------------------------------------------------------------

class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map (as ConvNeXt), so a token's
    embedding never depends on the rest of the image (GroupNorm would mix statistics across it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _stem_channels(patch_size: int, width: int) -> list[int]:
    """Channels of the stride-2 stages of a conv stem: doubling up to the model width."""
    stages = int(math.log2(patch_size))
    return [max(width >> (stages - 1 - i), 16) for i in range(stages)]


class PatchEmbed(nn.Module):
    """images (B, 3, H, W) → patch features (B, D, H/p, W/p).

    The linear embedding is one stride-p convolution (ViT). The conv stem (Xiao et al., 2021, arXiv
    2106.14881) replaces it with log2(p) stride-2 3×3 convolutions and a 1×1 projection, which trains
    faster and more stably. ``factor`` > 1 embeds coarse patches of p·factor pixels with the same weights:
    ``resize="pixels"`` area-resizes each coarse patch to p × p first (Quadformer); ``resize="weights"``
    resizes the linear kernel to p·factor instead (FlexiViT-style, used by MSViT).
    """

    def __init__(self, *, patch_size: int, width: int, conv_stem: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size, self.conv_stem = patch_size, conv_stem
        if conv_stem:
            if patch_size < 2 or patch_size & (patch_size - 1):
                raise ValueError(f"a conv stem needs a power-of-two patch size, got {patch_size}")
            layers, c_in = [], in_channels
            for c_out in _stem_channels(patch_size, width):
                layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), ChannelNorm(c_out, eps=1e-6), nn.SiLU()]
                c_in = c_out
            self.stem = nn.Sequential(*layers)
            self.proj = nn.Conv2d(c_in, width, 1)
        else:
            self.proj = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor, *, factor: int = 1, resize: str = "pixels") -> torch.Tensor:
        """images (B, 3, H, W) → (B, D, H/(p·factor), W/(p·factor))."""
        if factor == 1:
            return self.proj(self.stem(images)) if self.conv_stem else self.proj(images)
        if resize == "pixels":
            return self.forward(F.avg_pool2d(images, factor))
        if resize != "weights":
            raise ValueError(f"resize must be 'pixels' or 'weights', got '{resize}'")
        if self.conv_stem:
            raise ValueError("resize='weights' needs the linear patch embedding; a conv stem resizes pixels")
        size = self.patch_size * factor
        # bilinear kernel resize, divided by the area ratio so a constant patch keeps its embedding
        weight = F.interpolate(self.proj.weight, size=(size, size), mode="bilinear", align_corners=False)
        return F.conv2d(images, weight / factor ** 2, self.proj.bias, stride=size)


# ---------------------------------------------------------------------------------------------------------
# Transformer blocks
# ---------------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention with an optional additive logit bias.

    The bias carries ToMe's proportional attention (log token sizes) and key padding (−inf).
    """

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, *, bias: torch.Tensor | None = None, return_keys: bool = False):
        """x: (B, N, D); bias broadcastable to (B, heads, N, N). Returns (B, N, D), plus the keys averaged
        over heads (B, N, D/heads) when ``return_keys`` (ToMe's similarity metric)."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, N, d)
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))
        return (out, k.mean(1)) if return_keys else out


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Token-reduction encoders call the parts (``norm1``, ``attn``, ``norm2``, ``mlp``) directly to act
    between them (ToMe merges after attention, STViT attends over super tokens).
    """

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, *, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias=bias)
        return x + self.mlp(self.norm2(x))


def init_vit_weights(module: nn.Module) -> None:
    """Xavier-uniform linear and patch-projection weights, zero biases (MAE/timm)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed) and not m.conv_stem:
            nn.init.xavier_uniform_(m.proj.weight.view(m.proj.weight.shape[0], -1))
            nn.init.zeros_(m.proj.bias)


# ---------------------------------------------------------------------------------------------------------
# Encoder and decoder
# ---------------------------------------------------------------------------------------------------------

class ViTEncoder(nn.Module):
    """images (B, 3, H, W) in [-1, 1] → latent grid (B, latent_channels, H/p, W/p).

    Patch embedding (+ positions) → ``depth`` transformer blocks over all H/p · W/p tokens → LayerNorm →
    linear projection of every token to the latent channels. Subclasses change which tokens enter
    attention; ``last_stats`` / ``last_losses`` hold what the latest forward measured (the tokenizer adds
    them to its outputs).
    """

    def __init__(
        self,
        *,
        latent_channels: int,
        image_size: int,
        patch_size: int = 16,
        width: int = 512,
        depth: int = 8,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        positions: str = "sincos",
        conv_stem: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.grid_size = image_size // patch_size
        self.downsample_factor = patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, width=width, conv_stem=conv_stem)
        self.pos_embed = PositionEmbedding(grid_size=self.grid_size, width=width, kind=positions)
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj_out = nn.Linear(width, latent_channels)
        self.last_stats: dict[str, torch.Tensor] = {}
        self.last_losses: dict[str, torch.Tensor] = {}
        init_vit_weights(self)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"{type(self).__name__} was built for (B, 3, {self.image_size}, {self.image_size}) "
                             f"images, got {tuple(images.shape)}")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) → fine tokens with positions (B, N, D), raster order."""
        self.check_images(images)
        x = rearrange(self.patch_embed(images), "b d h w -> b (h w) d")
        return x + self.pos_embed.table()

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) → (B, N, C): final norm and latent projection."""
        return self.proj_out(self.norm(x))

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h·w, C) raster tokens → (B, C, h, w)."""
        return rearrange(x, "b (h w) c -> b c h w", h=self.grid_size)

    def record(self, attention_tokens: list[int] | list[torch.Tensor], **extra: torch.Tensor) -> None:
        """Keep the mean tokens per image entering attention (over layers) and any extra statistics."""
        counts = torch.stack([torch.as_tensor(c, dtype=torch.float32) for c in attention_tokens])
        self.last_stats = {"encoder_attention_tokens": counts.mean().detach(), **extra}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        x = self.embed(images)  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        self.record([x.shape[1]] * self.depth)
        return self.to_grid(self.head(x))


class ViTDecoder(nn.Module):
    """latent grid (B, latent_channels, h, w) → images (B, 3, h·p, w·p), unclamped.

    Linear projection → positions → ``depth`` blocks → LayerNorm → pixels. Without a conv stem the pixels
    come from a 1×1 convolution to 3·p² channels and a pixel shuffle (the ViT-VQGAN head); with one, the
    stem is mirrored: nearest ×2 upsampling stages with 3×3 convolutions and a 3×3 output convolution.
    ``conv_out`` is the last layer either way (the adaptive GAN weight reads it).
    """

    def __init__(
        self,
        *,
        latent_channels: int,
        image_size: int,
        patch_size: int = 16,
        width: int = 512,
        depth: int = 8,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        positions: str = "sincos",
        conv_stem: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size, self.grid_size, self.latent_channels = patch_size, image_size // patch_size, latent_channels
        self.proj_in = nn.Linear(latent_channels, width)
        self.pos_embed = PositionEmbedding(grid_size=self.grid_size, width=width, kind=positions)
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.conv_stem = conv_stem
        if conv_stem:
            layers, c_in = [], width
            for c_out in reversed(_stem_channels(patch_size, width)):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1),
                           ChannelNorm(c_out, eps=1e-6), nn.SiLU()]
                c_in = c_out
            self.upsample = nn.Sequential(*layers)
            self.conv_out = nn.Conv2d(c_in, 3, 3, 1, 1)
        else:
            self.conv_out = nn.Conv2d(width, 3 * patch_size ** 2, 1)
        init_vit_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, h, w) → images (B, 3, h·p, w·p)."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels or z.shape[-2:] != (self.grid_size, self.grid_size):
            raise ValueError(f"ViTDecoder expects (B, {self.latent_channels}, {self.grid_size}, {self.grid_size}) "
                             f"latents, got {tuple(z.shape)}")
        x = self.proj_in(rearrange(z, "b c h w -> b (h w) c")) + self.pos_embed.table()  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        x = rearrange(self.norm(x), "b (h w) d -> b d h w", h=self.grid_size)
        if self.conv_stem:
            return self.conv_out(self.upsample(x))
        return F.pixel_shuffle(self.conv_out(x), self.patch_size)  # (B, 3, H, W)


def vit_kwargs(config) -> dict:
    """The plain-ViT keyword arguments shared by every ViT-family encoder config."""
    return dict(patch_size=config.patch_size, width=config.width, depth=config.depth, num_heads=config.num_heads,
                mlp_ratio=config.mlp_ratio, positions=config.positions, conv_stem=config.conv_stem)
