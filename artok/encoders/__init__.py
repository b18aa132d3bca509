"""Pixel ↔ latent-grid networks, built by ``kind`` from an encoder config.

Every encoder maps images (B, 3, H, W) to a latent grid (B, C, H/f, W/f) that any quantizer accepts, so
tokenizers combine any encoder with any quantizer through their config. New encoders call
``register_encoder`` with builders for the encoder and its matching decoder.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from artok.config import ConfigError, EncoderConfig, suggest
from artok.encoders.conv import ConvDecoder, ConvEncoder

_BUILDERS: dict[str, tuple[Callable, Callable]] = {}


def register_encoder(kind: str, build_encoder: Callable, build_decoder: Callable) -> None:
    """``build_*(config, latent_channels, image_size) -> nn.Module``."""
    _BUILDERS[kind] = (build_encoder, build_decoder)


def _conv_kwargs(cfg) -> dict:
    return dict(ch=cfg.ch, ch_mult=tuple(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks,
                attn_levels=cfg.attn_levels, mid_attn=cfg.mid_attn, dropout=cfg.dropout,
                norm_groups=cfg.norm_groups)


register_encoder(
    "conv",
    lambda cfg, c, image_size: ConvEncoder(latent_channels=c, **_conv_kwargs(cfg)),
    lambda cfg, c, image_size: ConvDecoder(latent_channels=c, **_conv_kwargs(cfg)),
)


def _builders(config: EncoderConfig) -> tuple[Callable, Callable]:
    if config.kind not in _BUILDERS:
        raise ConfigError(f"unknown encoder kind '{config.kind}'{suggest(config.kind, _BUILDERS)}")
    return _BUILDERS[config.kind]


def build_encoder(config: EncoderConfig, latent_channels: int, image_size: int) -> nn.Module:
    return _builders(config)[0](config, latent_channels, image_size)


def build_decoder(config: EncoderConfig, latent_channels: int, image_size: int) -> nn.Module:
    return _builders(config)[1](config, latent_channels, image_size)


__all__ = ["ConvDecoder", "ConvEncoder", "build_decoder", "build_encoder", "register_encoder"]
