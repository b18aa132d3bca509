"""Tokenizer configs: encoders (conv and the ViT family, selected by ``kind``), quantizer, tokenizer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from artok.config.base import Config, ConfigError, suggest

# ---------------------------------------------------------------------------------------------------------
# Polymorphic encoder/decoder configs, selected by ``kind``
# ---------------------------------------------------------------------------------------------------------

ENCODER_CONFIGS: dict[str, type["EncoderConfig"]] = {}


def register_encoder_config(kind: str):
    """Class decorator: make ``kind`` selectable in the ``encoder``/``decoder`` section of a tokenizer."""

    def wrap(cls):
        ENCODER_CONFIGS[kind] = cls
        return cls

    return wrap


@dataclass
class EncoderConfig(Config):
    """Base of encoder/decoder configs; ``kind`` picks the subclass when loading."""

    kind: str = "conv"
    # how many pixels one latent cell covers along each side; subclasses define it
    KIND: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        where = where or "encoder"
        if cls is EncoderConfig:
            if not isinstance(data, dict):
                raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
            kind = data.get("kind", "conv")
            if kind not in ENCODER_CONFIGS:
                raise ConfigError(
                    f"{where}.kind: unknown encoder '{kind}'{suggest(kind, ENCODER_CONFIGS)}; "
                    f"known: {', '.join(sorted(ENCODER_CONFIGS))}"
                )
            return ENCODER_CONFIGS[kind].from_dict(data, where=where)
        return super().from_dict(data, where=where)

    @property
    def downsample_factor(self) -> int:
        raise NotImplementedError


@register_encoder_config("conv")
@dataclass
class ConvEncoderConfig(EncoderConfig):
    """The VQGAN/VAR convolutional body (section 4.1 of docs/reference-behaviour.md).

    ``attn_levels`` lists the resolution levels whose residual blocks are followed by self-attention;
    None means the lowest-resolution level only, as VQGAN and VAR do. The decoder built from the same
    config uses ``num_res_blocks + 1`` blocks per level. ``level_blocks``, when set, gives the residual
    blocks of each level (finest first) for the encoder and the decoder alike, so a small-image tokenizer
    can skip the costly full-resolution blocks, e.g. ``ch_mult: [1, 2, 4], level_blocks: [0, 1, 1]``; the
    resampling convolutions then change the width (so the decoder's high-resolution convolutions run at the
    narrow width). ``mid: false`` drops the two middle blocks (and their attention).
    """

    kind: str = "conv"
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    level_blocks: tuple[int, ...] | None = None
    attn_levels: tuple[int, ...] | None = None
    mid: bool = True
    mid_attn: bool = True
    dropout: float = 0.0
    norm_groups: int = 32

    def validate(self) -> None:
        if self.kind != "conv":
            raise ConfigError(f"conv encoder config has kind '{self.kind}'")
        if self.ch <= 0 or not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ConfigError(f"encoder: ch and ch_mult must be positive, got ch={self.ch}, ch_mult={self.ch_mult}")
        for m in self.ch_mult:
            if (self.ch * m) % self.norm_groups:
                raise ConfigError(
                    f"encoder: width ch*ch_mult = {self.ch * m} is not divisible by norm_groups={self.norm_groups}"
                )
        if self.num_res_blocks < 1:
            raise ConfigError(f"encoder.num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.level_blocks is not None and (len(self.level_blocks) != len(self.ch_mult)
                                              or any(b < 0 for b in self.level_blocks)):
            raise ConfigError(f"encoder.level_blocks must give a count >= 0 for each of the {len(self.ch_mult)} "
                              f"levels of ch_mult, got {list(self.level_blocks)}")
        for lvl in self.attention_levels:
            if not 0 <= lvl < len(self.ch_mult):
                raise ConfigError(f"encoder.attn_levels: level {lvl} outside 0..{len(self.ch_mult) - 1}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"encoder.dropout must be in [0, 1), got {self.dropout}")

    @property
    def attention_levels(self) -> tuple[int, ...]:
        return (len(self.ch_mult) - 1,) if self.attn_levels is None else tuple(self.attn_levels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


# ---------------------------------------------------------------------------------------------------------
# Quantizer
# ---------------------------------------------------------------------------------------------------------

# which of the shared φ convolutions each scale uses: part of what a quantizer config means, so here (the
# quantizer imports it)
def phi_ticks(count: int) -> np.ndarray:
    """Positions in [0, 1] of ``count`` shared φ convolutions (VAR: thirds for 4, halves otherwise)."""
    if count == 4:
        return np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
    return np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)


def phi_index_per_scale(count: int, num_scales: int) -> list[int]:
    """Which φ each scale uses: the nearest tick to si/(SN−1), in float64 as VAR computes it, so exact
    real-number ties resolve the same way (docs/reference-behaviour.md 4.2.2, quirk Q6)."""
    ticks = phi_ticks(count)
    out = []
    for si in range(num_scales):
        at = si / (num_scales - 1) if num_scales > 1 else 0.0
        out.append(int(np.argmin(np.abs(ticks - at))))
    return out


QUANTIZER_KINDS = ("vq", "msrq", "hybrid")
STRAIGHT_THROUGH = ("global", "per_scale")  # see MultiScaleResidualQuantizer


@dataclass
class QuantizerConfig(Config):
    """Codebook quantizer: single-scale VQ (``vq``), VAR's multi-scale residual VQ (``msrq``), or HART's
    hybrid (``hybrid``: msrq plus a continuous residual).

    ``scales`` are the side lengths of the token maps, smallest first; the last equals the latent side.
    ``quant_resi`` is VAR's φ mixing ratio r (φ(h) = (1-r)h + r·conv(h)); ``share_quant_resi`` is the number
    of φ convolutions shared across scales (0: one per scale, 1: one for all). ``scale_norm`` (each scale
    standardises its inputs with its running mean and std before the lookup), ``balance_scales`` (every
    scale moves the EMA codes equally) and ``prefix_dropout`` (decode a fraction of the training images from
    their first scales only) and ``straight_through`` (``global``: VAR's one estimator around the residual loop;
    ``per_scale``: each lookup on its own, so φ learns from the reconstruction) are multi-scale (``msrq``)
    options; see ``MultiScaleResidualQuantizer``.
    """

    kind: str = "msrq"
    codebook_size: int = 4096
    scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    beta: float = 0.25
    l2_norm: bool = False
    ema_decay: float | None = None
    dead_code_threshold: float = 0.0
    usage_decay: float = 0.99
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    skip_continuous_prob: float = 0.5
    scale_norm: bool = False
    balance_scales: bool = False
    prefix_dropout: float = 0.0
    straight_through: str = "global"

    def validate(self) -> None:
        if self.kind not in QUANTIZER_KINDS:
            raise ConfigError(f"quantizer.kind: unknown '{self.kind}'{suggest(self.kind, QUANTIZER_KINDS)}")
        if self.codebook_size < 2:
            raise ConfigError(f"quantizer.codebook_size must be >= 2, got {self.codebook_size}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"quantizer.scales must be positive, got {self.scales}")
        if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
            raise ConfigError(f"quantizer.scales must be strictly increasing, got {self.scales}")
        if self.kind == "vq" and len(self.scales) != 1:
            raise ConfigError(f"quantizer.kind 'vq' takes one scale, got {self.scales}")
        if self.kind == "hybrid" and len(self.scales) < 2:
            raise ConfigError("quantizer.kind 'hybrid' needs at least two scales")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"quantizer.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if not 0.0 < self.usage_decay < 1.0:
            raise ConfigError(f"quantizer.usage_decay must be in (0, 1), got {self.usage_decay}")
        if self.share_quant_resi < 0:
            raise ConfigError(f"quantizer.share_quant_resi must be >= 0, got {self.share_quant_resi}")
        if self.dead_code_threshold < 0:
            raise ConfigError(f"quantizer.dead_code_threshold must be >= 0, got {self.dead_code_threshold}")
        if not 0.0 <= self.skip_continuous_prob <= 1.0:
            raise ConfigError(f"quantizer.skip_continuous_prob must be in [0, 1], got {self.skip_continuous_prob}")
        if not 0.0 <= self.prefix_dropout < 1.0:
            raise ConfigError(f"quantizer.prefix_dropout must be in [0, 1), got {self.prefix_dropout}")
        if self.straight_through not in STRAIGHT_THROUGH:
            raise ConfigError(f"quantizer.straight_through: unknown '{self.straight_through}'"
                              f"{suggest(self.straight_through, STRAIGHT_THROUGH)}; choose one of {STRAIGHT_THROUGH}")
        if self.kind != "msrq" and (self.scale_norm or self.balance_scales or self.prefix_dropout > 0
                                    or self.straight_through != "global"):
            raise ConfigError(f"quantizer.scale_norm, balance_scales, prefix_dropout and straight_through are "
                              f"options of the multi-scale quantizer (kind 'msrq'), not of '{self.kind}'")
        if self.balance_scales and self.ema_decay is None:
            raise ConfigError("quantizer.balance_scales weights the EMA code updates: set quantizer.ema_decay too")

    def unused_phi_convs(self) -> list[int]:
        """φ convolutions that no scale uses (e.g. 4 shared convs over 3 scales). Harmless for inference, but
        unused parameters waste memory and break DDP, so training refuses them."""
        if self.kind == "vq" or abs(self.quant_resi) <= 1e-6:
            return []
        count = self.share_quant_resi or len(self.scales)
        return sorted(set(range(count)) - set(phi_index_per_scale(count, len(self.scales))))

    @property
    def num_tokens(self) -> int:
        """L: tokens per image over all scales."""
        return sum(s * s for s in self.scales)


# ---------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------

@dataclass
class TokenizerConfig(Config):
    """Encoder + quantizer + decoder. ``decoder`` None mirrors the encoder."""

    image_size: int = 256
    latent_channels: int = 32
    encoder: EncoderConfig = field(default_factory=ConvEncoderConfig)
    decoder: EncoderConfig | None = None
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    quant_conv_kernel_size: int = 3

    def validate(self) -> None:
        if self.latent_channels <= 0:
            raise ConfigError(f"tokenizer.latent_channels must be positive, got {self.latent_channels}")
        if self.quant_conv_kernel_size % 2 == 0:
            raise ConfigError(f"tokenizer.quant_conv_kernel_size must be odd, got {self.quant_conv_kernel_size}")
        f = self.encoder.downsample_factor
        if self.image_size % f:
            raise ConfigError(f"tokenizer.image_size {self.image_size} is not a multiple of the encoder's downsampling {f}")
        if self.image_size // f != self.quantizer.scales[-1]:
            raise ConfigError(
                f"tokenizer: image_size {self.image_size} / downsampling {f} = latent side {self.image_size // f}, "
                f"but the last quantizer scale is {self.quantizer.scales[-1]}; they must be equal"
            )

    @property
    def decoder_config(self) -> EncoderConfig:
        return self.decoder if self.decoder is not None else self.encoder

    @property
    def latent_size(self) -> int:
        return self.quantizer.scales[-1]




# ---------------------------------------------------------------------------------------------------------
# ViT-family encoders: plain ViT and the token-reduction encoders built on it (artok/encoders/vit.py, ...)
# ---------------------------------------------------------------------------------------------------------

@register_encoder_config("vit")
@dataclass
class ViTEncoderConfig(EncoderConfig):
    """Vision Transformer encoder/decoder: ``patch_size`` pixels per latent cell, ``depth`` blocks of
    ``width`` channels. ``positions`` is ``sincos`` (fixed 2D) or ``learned``; ``conv_stem`` replaces the
    linear patch embedding with stride-2 convolutions (and the decoder's pixel head with a mirrored stack).
    A decoder built from this config is a ViT decoder of the same shape."""

    kind: str = "vit"
    patch_size: int = 16
    width: int = 512
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    positions: str = "sincos"
    conv_stem: bool = False
    KIND: ClassVar[str] = "vit"

    def validate(self) -> None:
        where = f"encoder ({self.KIND})"
        if self.kind != self.KIND:
            raise ConfigError(f"{where}: config class {type(self).__name__} has kind '{self.kind}'")
        if self.patch_size < 1:
            raise ConfigError(f"{where}.patch_size must be >= 1, got {self.patch_size}")
        if self.conv_stem and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"{where}.patch_size must be a power of two >= 2 with conv_stem, got {self.patch_size}")
        if self.width < 1 or self.depth < 1 or self.num_heads < 1:
            raise ConfigError(f"{where}: width, depth and num_heads must be >= 1, got width={self.width}, "
                              f"depth={self.depth}, num_heads={self.num_heads}")
        if self.width % self.num_heads:
            raise ConfigError(f"{where}.width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.positions not in ("sincos", "learned"):
            raise ConfigError(f"{where}.positions must be 'sincos' or 'learned', got '{self.positions}'"
                              f"{suggest(self.positions, ('sincos', 'learned'))}")
        if self.positions == "sincos" and self.width % 4:
            raise ConfigError(f"{where}.width must be divisible by 4 for sincos positions, got {self.width}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"{where}.mlp_ratio must be positive, got {self.mlp_ratio}")

    @property
    def downsample_factor(self) -> int:
        return self.patch_size


@register_encoder_config("tome")
@dataclass
class TokenMergeEncoderConfig(ViTEncoderConfig):
    """ViT encoder with token merging (ToMe, arXiv 2210.09461): ``merge_per_layer`` tokens (r) merged in
    every block by bipartite soft matching, with a ``constant`` or ``decreasing`` (2r → 0) schedule and
    proportional attention; tokens are unmerged to the full grid before the quantizer."""

    kind: str = "tome"
    merge_per_layer: int = 8
    merge_schedule: str = "constant"
    proportional_attention: bool = True
    KIND: ClassVar[str] = "tome"

    def validate(self) -> None:
        super().validate()
        if self.merge_per_layer < 0:
            raise ConfigError(f"encoder (tome).merge_per_layer must be >= 0, got {self.merge_per_layer}")
        if self.merge_schedule not in ("constant", "decreasing"):
            raise ConfigError(f"encoder (tome).merge_schedule must be 'constant' or 'decreasing', got "
                              f"'{self.merge_schedule}'{suggest(self.merge_schedule, ('constant', 'decreasing'))}")


@register_encoder_config("msvit")
@dataclass
class MixedScaleEncoderConfig(ViTEncoderConfig):
    """ViT encoder over gated mixed-scale tokens (MSViT, arXiv 2307.02321): a gate MLP of ``gate_hidden``
    units picks, per region of ``coarse_factor``² fine patches, one coarse token or the fine ones; a
    compute-target loss (weight ``gate_loss_weight``) holds the fraction of fine regions at
    ``target_fine_fraction``. ``coarse_embedding``: ``weights`` resizes the patch-embedding kernel,
    ``pixels`` resizes the coarse patch (required with a conv stem)."""

    kind: str = "msvit"
    coarse_factor: int = 2
    gate_hidden: int = 64
    target_fine_fraction: float = 0.5
    gate_temperature: float = 1.0
    gate_loss_weight: float = 1.0
    coarse_embedding: str = "weights"
    KIND: ClassVar[str] = "msvit"

    def validate(self) -> None:
        super().validate()
        where = "encoder (msvit)"
        if self.coarse_factor < 2:
            raise ConfigError(f"{where}.coarse_factor must be >= 2, got {self.coarse_factor}")
        if self.gate_hidden < 1:
            raise ConfigError(f"{where}.gate_hidden must be >= 1, got {self.gate_hidden}")
        if not 0.0 <= self.target_fine_fraction <= 1.0:
            raise ConfigError(f"{where}.target_fine_fraction must be in [0, 1], got {self.target_fine_fraction}")
        if self.gate_temperature <= 0:
            raise ConfigError(f"{where}.gate_temperature must be positive, got {self.gate_temperature}")
        if self.gate_loss_weight < 0:
            raise ConfigError(f"{where}.gate_loss_weight must be >= 0, got {self.gate_loss_weight}")
        if self.coarse_embedding not in ("weights", "pixels"):
            raise ConfigError(f"{where}.coarse_embedding must be 'weights' or 'pixels', got '{self.coarse_embedding}'")
        if self.coarse_embedding == "weights" and self.conv_stem:
            raise ConfigError(f"{where}.coarse_embedding 'weights' needs the linear patch embedding; "
                              "use 'pixels' with conv_stem")


@register_encoder_config("quadtree")
@dataclass
class QuadtreeEncoderConfig(ViTEncoderConfig):
    """ViT encoder over quadtree mixed-resolution tokens (Quadformer, arXiv 2304.00287): patches of
    ``patch_size`` up to ``patch_size * 2**levels`` pixels, at most ``token_budget`` of them, split where
    the ``scorer`` (``pixel_variance``, ``pixel_blur`` or the learned-``feature`` variance) is highest."""

    kind: str = "quadtree"
    levels: int = 2
    token_budget: int = 128
    scorer: str = "pixel_variance"
    KIND: ClassVar[str] = "quadtree"

    def validate(self) -> None:
        super().validate()
        scorers = ("pixel_variance", "pixel_blur", "feature")
        if self.levels < 1:
            raise ConfigError(f"encoder (quadtree).levels must be >= 1, got {self.levels}")
        if self.token_budget < 1:
            raise ConfigError(f"encoder (quadtree).token_budget must be >= 1, got {self.token_budget}")
        if self.scorer not in scorers:
            raise ConfigError(f"encoder (quadtree).scorer must be one of {scorers}, got '{self.scorer}'"
                              f"{suggest(self.scorer, scorers)}")


@register_encoder_config("stvit")
@dataclass
class SuperTokenEncoderConfig(ViTEncoderConfig):
    """ViT encoder with super-token attention (STViT, arXiv 2211.11167): one super token per
    ``super_token_size``² tokens, sampled by soft association with the 3×3 neighbouring super tokens
    (``sampling_iterations`` rounds), attended among themselves and upsampled back."""

    kind: str = "stvit"
    super_token_size: int = 2
    sampling_iterations: int = 1
    KIND: ClassVar[str] = "stvit"

    def validate(self) -> None:
        super().validate()
        if self.super_token_size < 1:
            raise ConfigError(f"encoder (stvit).super_token_size must be >= 1, got {self.super_token_size}")
        if self.sampling_iterations < 1:
            raise ConfigError(f"encoder (stvit).sampling_iterations must be >= 1, got {self.sampling_iterations}")
