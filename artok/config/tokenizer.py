"""Tokenizer configs: quantizer and tokenizer (the encoder configs are ``artok.config.encoders``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from artok.config.base import Config, ConfigError, suggest
from artok.config.encoders import ConvEncoderConfig, EncoderConfig

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
