"""Image tokenizer: encoder → quant_conv → quantizer → post_quant_conv → decoder.

One class serves every quantizer kind: a single-scale VQ tokenizer (VQGAN/LlamaGen) is the one-scale case
of VAR's multi-scale tokenizer. HART's hybrid tokenizer extends it (``artok.tokenizers.hybrid``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from artok.config import TokenizerConfig
from artok.encoders import build_decoder, build_encoder
from artok.checkpoint import PretrainedMixin, register_model_type
from artok.quantizers import build_quantizer

RANGE_TOLERANCE = 1e-3


@dataclass
class TokenizerOutput:
    """Training forward: reconstruction (B, 3, H, W) unclamped, ids per scale, named losses, stats, and
    the quantizer's per-scale input vectors (differentiable; see ``QuantizerOutput.inputs``)."""

    reconstruction: torch.Tensor
    quantized: torch.Tensor
    ids: list[torch.Tensor]
    losses: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    quantizer_inputs: list[torch.Tensor] = field(default_factory=list)


@register_model_type
class Tokenizer(PretrainedMixin, nn.Module):
    """Images (B, 3, H, W) in [-1, 1] ↔ token ids per scale."""

    model_type = "tokenizer"
    is_hybrid = False  # HybridTokenizer: True (ids plus a continuous residual)
    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        C, k = config.latent_channels, config.quant_conv_kernel_size
        self.encoder = build_encoder(config.encoder, C, config.image_size)
        self.quant_conv = nn.Conv2d(C, C, k, stride=1, padding=k // 2)
        self.quantizer = build_quantizer(config.quantizer, C)
        self.post_quant_conv = nn.Conv2d(C, C, k, stride=1, padding=k // 2)
        self.decoder = build_decoder(config.decoder_config, C, config.image_size)

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def scales(self) -> tuple[int, ...]:
        return self.quantizer.scales

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def downsample_factor(self) -> int:
        return self.config.encoder.downsample_factor

    @property
    def num_tokens(self) -> int:
        """L: tokens per image over all scales."""
        return self.quantizer.num_tokens

    @property
    def block_sizes(self) -> list[int]:
        """Tokens per autoregressive block: pn² per scale, or 1 per token for a single-scale raster VQ."""
        return self.quantizer.block_sizes

    # -- input checks -------------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        """Raise ValueError naming the problem if images are not (B, 3, H, W) in [-1, 1] of a size the
        scales tile."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (RGB), got {images.shape[1]} (shape {tuple(images.shape)})")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [-1, 1], got dtype {images.dtype}; "
                             "convert uint8 with x.float() / 127.5 - 1")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            hint = " (looks like [0, 255]: use x / 127.5 - 1)" if hi > 2 else ""
            raise ValueError(f"images must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}")
        H, W = images.shape[-2:]
        f, side = self.downsample_factor, self.scales[-1]
        if H != W or H % f or H // f != side:
            raise ValueError(
                f"images of {H}x{W} px do not fit this tokenizer: downsampling {f} with scales {self.scales} "
                f"needs {side * f}x{side * f} px images"
            )

    # -- continuous ---------------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → f (B, C, h, w), the latent that is quantized."""
        self.check_images(images)
        return self.quant_conv(self.encoder(images))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """latent (B, C, h, w) → images (B, 3, H, W) clamped to [-1, 1]."""
        if f.ndim != 4 or f.shape[1] != self.latent_channels:
            raise ValueError(f"latent must be (B, {self.latent_channels}, h, w), got {tuple(f.shape)}")
        return self.decoder(self.post_quant_conv(f)).clamp(-1, 1)

    # -- discrete -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images → ids per scale, (B, pn*pn) int64 each, smallest scale first, raster order."""
        return self.quantizer.quantize(self.encode(images))

    def ids_to_latent(self, ids: list[torch.Tensor], *, progressive: bool = False) -> torch.Tensor:
        """f̂ (B, C, h, w): the cumulative quantized latent of the given scales (all scales → decoder input)."""
        return self.quantizer.ids_to_latent(ids, progressive=progressive)

    @torch.no_grad()
    def detokenize(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """ids of every scale → images (B, 3, H, W) in [-1, 1]."""
        if len(ids) != len(self.scales):
            raise ValueError(f"detokenize needs ids for all {len(self.scales)} scales {self.scales}, got {len(ids)}")
        return self.decode(self.ids_to_latent(ids))

    def teacher_inputs(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of the generator: (B, L − block_sizes[0], C)."""
        return self.quantizer.teacher_inputs(ids)

    def autoregressive_step(self, si: int, f_hat: torch.Tensor | None, ids: torch.Tensor, *,
                            codes: torch.Tensor | None = None):
        """Add block si's ids to the running latent; returns (f̂, next block's input or None).
        ``codes`` (B, l, C), when given, replaces the code vectors of ``ids`` (soft codes)."""
        if codes is None:
            return self.quantizer.autoregressive_step(si, f_hat, ids)
        return self.quantizer.autoregressive_step(si, f_hat, ids, codes=codes)

    def indices_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors as the quantizer uses them: ids (...) → (..., C)."""
        return self.quantizer.embed(ids)

    def split_ids(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) concatenated ids → list per scale."""
        if ids.ndim != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(f"expected concatenated ids of shape (B, {self.num_tokens}), got {tuple(ids.shape)}")
        return list(ids.split([s * s for s in self.scales], dim=1))

    # -- training -----------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Training forward: quantize with the straight-through estimator and decode (unclamped)."""
        f = self.encode(images)
        q = self.quantizer(f)
        rec = self.decoder(self.post_quant_conv(q.quantized))
        losses, stats = self.encoder_extras(q.losses, q.stats)
        return TokenizerOutput(reconstruction=rec, quantized=q.quantized, ids=q.ids, losses=losses, stats=stats,
                               quantizer_inputs=q.inputs)

    def encoder_extras(self, losses: dict, stats: dict) -> tuple[dict, dict]:
        """Add what the encoder's latest forward reported (``last_losses``, e.g. MSViT's compute target;
        ``last_stats``, e.g. tokens entering attention) to the quantizer's losses and stats."""
        return ({**losses, **getattr(self.encoder, "last_losses", {})},
                {**stats, **getattr(self.encoder, "last_stats", {})})

    def last_decoder_layer(self) -> torch.Tensor:
        """Weight used for the adaptive GAN weight (VQGAN)."""
        return self.decoder.conv_out.weight
