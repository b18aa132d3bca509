"""Convolutional encoder and decoder of the VQGAN/VAR family (Esser et al., 2021; docs/reference-behaviour.md 4.1).

Key names match the official VAR/HART checkpoints, so converted weights load without a key map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def inference_layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last when no gradient is being recorded, for the decoder: oneDNN's convolutions run 8–10 % faster
    in it on CPU (VAR's 256 px VQVAE, 1 thread: decoder 6.1–6.6 s against 6.6–7.3 s per image), and it is what
    tensor cores prefer. Training keeps the default layout (its GroupNorm backward is not measured in
    channels-last). The values are identical up to float rounding. The encoder stays in the default layout: in
    channels-last its rounding changed with the batch size, enough to flip near-tied code choices, and
    ``artok encode`` promises the same ids in any batch size."""
    return x if torch.is_grad_enabled() else x.contiguous(memory_format=torch.channels_last)


def group_norm(channels: int, groups: int = 32) -> nn.Module:
    """GroupNorm over ``groups`` groups; ``groups`` 0 means no normalisation (an identity)."""
    if groups == 0:
        return nn.Identity()
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def norm_silu(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SiLU(norm(x)), in place on a GroupNorm's output (its backward needs its input, not its output); out of
    place without a norm, where the input is still needed (the shortcut reads it)."""
    return F.silu(norm(x), inplace=not isinstance(norm, nn.Identity))


class ResnetBlock(nn.Module):
    """norm → SiLU → conv, twice, plus a (1×1 when widths differ) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float = 0.0, groups: int = 32) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        h = self.conv2(self.dropout(norm_silu(self.norm2, h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, with a fused 1×1 qkv conv."""

    def __init__(self, channels: int, *, groups: int = 32) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b 1 (h w) c", three=3)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C), scale C^-1/2
        return x + self.proj_out(rearrange(h, "b 1 (h w) c -> b c h w", h=H, w=W))


class Downsample(nn.Module):
    """Right/bottom zero pad, then a stride-2 3×3 conv (to ``out_channels`` when given)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 conv (to ``out_channels`` when given)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def level_block_counts(levels: int, num_res_blocks: int, level_blocks: tuple[int, ...] | None, *,
                       decoder: bool) -> tuple[int, ...]:
    """Residual blocks per resolution level, finest first. ``level_blocks`` gives them per level for the
    encoder and the decoder alike (0 at the full resolution keeps small images cheap); without it every
    level has ``num_res_blocks`` in the encoder and ``num_res_blocks + 1`` in the decoder (VQGAN, VAR)."""
    if level_blocks is None:
        return (num_res_blocks + (1 if decoder else 0),) * levels
    if len(level_blocks) != levels or any(b < 0 for b in level_blocks):
        raise ValueError(f"level_blocks {tuple(level_blocks)} must give a count >= 0 for each of the {levels} levels")
    return tuple(int(b) for b in level_blocks)


class _Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each, optional resampling."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, *, attn: bool, dropout: float, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout=dropout, groups=groups)
        self.attn_1 = AttnBlock(channels, groups=groups) if attn else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, dropout=dropout, groups=groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class ConvEncoder(nn.Module):
    """images (B, 3, H, W) → features (B, latent_channels, H/f, W/f) with f = 2^(len(ch_mult) − 1)."""

    def __init__(
        self,
        *,
        latent_channels: int,
        ch: int = 128,
        ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        level_blocks: tuple[int, ...] | None = None,
        attn_levels: tuple[int, ...] | None = None,
        mid: bool = True,
        mid_attn: bool = True,
        dropout: float = 0.0,
        norm_groups: int = 32,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        n = len(ch_mult)
        attn_levels = (n - 1,) if attn_levels is None else tuple(attn_levels)
        counts = level_block_counts(n, num_res_blocks, level_blocks, decoder=False)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        c_in = ch
        self.down = nn.ModuleList()
        for i in range(n):
            c_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(counts[i]):
                blocks.append(ResnetBlock(c_in, c_out, dropout=dropout, groups=norm_groups))
                c_in = c_out
                if i in attn_levels:
                    attns.append(AttnBlock(c_out, groups=norm_groups))
            level = _Level(blocks, attns)
            if i != n - 1:
                # with per-level counts the downsampling conv moves to the next level's width (a level may
                # have no blocks to do it); otherwise the blocks change widths, as VQGAN's do
                nxt = ch * ch_mult[i + 1] if level_blocks is not None else c_in
                level.downsample = Downsample(c_in, nxt if nxt != c_in else None)
                c_in = nxt
            self.down.append(level)
        self.mid = _Mid(c_in, attn=mid_attn, dropout=dropout, groups=norm_groups) if mid else nn.Identity()
        self.norm_out = group_norm(c_in, norm_groups)
        self.conv_out = nn.Conv2d(c_in, latent_channels, 3, 1, 1)
        self.downsample_factor = 2 ** (n - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # the default layout: channels-last made the ids depend on the batch size (near-ties)
        for level in self.down:
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(norm_silu(self.norm_out, h)).contiguous()


class ConvDecoder(nn.Module):
    """latent (B, latent_channels, h, w) → images (B, 3, h·f, w·f), unclamped."""

    def __init__(
        self,
        *,
        latent_channels: int,
        ch: int = 128,
        ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        level_blocks: tuple[int, ...] | None = None,
        attn_levels: tuple[int, ...] | None = None,
        mid: bool = True,
        mid_attn: bool = True,
        dropout: float = 0.0,
        norm_groups: int = 32,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        n = len(ch_mult)
        attn_levels = (n - 1,) if attn_levels is None else tuple(attn_levels)
        counts = level_block_counts(n, num_res_blocks, level_blocks, decoder=True)
        c_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(latent_channels, c_in, 3, 1, 1)
        self.mid = _Mid(c_in, attn=mid_attn, dropout=dropout, groups=norm_groups) if mid else nn.Identity()
        levels = []
        for i in reversed(range(n)):
            c_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(counts[i]):
                blocks.append(ResnetBlock(c_in, c_out, dropout=dropout, groups=norm_groups))
                c_in = c_out
                if i in attn_levels:
                    attns.append(AttnBlock(c_out, groups=norm_groups))
            level = _Level(blocks, attns)
            if i != 0:
                # with per-level counts the upsampling conv moves to the finer level's width, so the costly
                # high-resolution convs run at the narrow width; otherwise the blocks change widths
                nxt = ch * ch_mult[i - 1] if level_blocks is not None else c_in
                level.upsample = Upsample(c_in, nxt if nxt != c_in else None)
                c_in = nxt
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up[0] is the highest resolution, as in the official keys
        self.norm_out = group_norm(c_in, norm_groups)
        self.conv_out = nn.Conv2d(c_in, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(inference_layout(z)))
        for level in reversed(self.up):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(norm_silu(self.norm_out, h)).contiguous()
