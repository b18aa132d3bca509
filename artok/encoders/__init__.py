"""Pixel ↔ latent-grid networks, built by ``kind`` from an encoder config.

Every encoder maps images (B, 3, H, W) to a latent grid (B, C, H/f, W/f) that any quantizer accepts, so
tokenizers combine any encoder with any quantizer through their config. A new encoder registers its config
class (``artok.config.register_encoder_config``, which reads the kind from the class's ``kind`` field) and
calls ``register_encoder`` with that class and builders for the encoder and its matching decoder: the kind
is spelled once.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from artok.config import (ENCODER_CONFIGS, ConfigError, ConvEncoderConfig, EncoderConfig, MixedScaleEncoderConfig,
                          QuadtreeEncoderConfig, SuperTokenEncoderConfig, TokenMergeEncoderConfig, ViTEncoderConfig,
                          suggest)
from artok.config.encoders import (ContextClusterEncoderConfig, TokenLearnerEncoderConfig,
                                   VisualTransformerEncoderConfig, encoder_kind)
from artok.encoders.context_cluster import ContextClusterEncoder
from artok.encoders.conv import ConvDecoder, ConvEncoder
from artok.encoders.mixed_scale import MixedScaleViTEncoder
from artok.encoders.quadtree import QuadtreeViTEncoder
from artok.encoders.super_token import SuperTokenViTEncoder
from artok.encoders.token_learner import TokenLearnerEncoder
from artok.encoders.token_merge import TokenMergeViTEncoder
from artok.encoders.visual_transformer import VisualTransformerEncoder
from artok.encoders.vit import ViTDecoder, ViTEncoder, vit_kwargs

_BUILDERS: dict[str, tuple[Callable, Callable]] = {}


def register_encoder(config_class: type, build_encoder: Callable, build_decoder: Callable) -> None:
    """Builders for the encoder kind of ``config_class``: ``build_*(config, latent_channels, image_size) ->
    nn.Module``."""
    kind = encoder_kind(config_class)
    if ENCODER_CONFIGS.get(kind) is not config_class:
        raise ValueError(f"{config_class.__name__} is not a registered encoder config (register_encoder_config)")
    _BUILDERS[kind] = (build_encoder, build_decoder)


def _conv_kwargs(cfg) -> dict:
    return dict(ch=cfg.ch, ch_mult=tuple(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks,
                level_blocks=cfg.level_blocks,
                attn_levels=cfg.attn_levels, mid=cfg.mid, mid_attn=cfg.mid_attn, dropout=cfg.dropout,
                norm_groups=cfg.norm_groups)


register_encoder(
    ConvEncoderConfig,
    lambda cfg, c, image_size: ConvEncoder(latent_channels=c, **_conv_kwargs(cfg)),
    lambda cfg, c, image_size: ConvDecoder(latent_channels=c, **_conv_kwargs(cfg)),
)


# ViT family: every kind builds a ViT decoder of the same shape; construction errors that depend on the
# image size (grid divisibility, token budget) surface as ConfigError naming the encoder kind.

def _vit_family(module_class: Callable, extra: Callable[[EncoderConfig], dict]) -> Callable:
    def build(cfg, c, image_size):
        try:
            return module_class(latent_channels=c, image_size=image_size, **vit_kwargs(cfg), **extra(cfg))
        except ValueError as e:
            raise ConfigError(f"encoder ({cfg.kind}) with image_size {image_size}: {e}") from None

    return build


def _vit_decoder(cfg, c, image_size):
    return _vit_family(ViTDecoder, lambda _: {})(cfg, c, image_size)


register_encoder(ViTEncoderConfig, _vit_family(ViTEncoder, lambda cfg: {}), _vit_decoder)
register_encoder(TokenMergeEncoderConfig, _vit_family(TokenMergeViTEncoder, lambda cfg: dict(
    merge_per_layer=cfg.merge_per_layer, schedule=cfg.merge_schedule,
    proportional_attention=cfg.proportional_attention)), _vit_decoder)
register_encoder(MixedScaleEncoderConfig, _vit_family(MixedScaleViTEncoder, lambda cfg: dict(
    coarse_factor=cfg.coarse_factor, gate_hidden=cfg.gate_hidden, target_fine_fraction=cfg.target_fine_fraction,
    gate_temperature=cfg.gate_temperature, gate_loss_weight=cfg.gate_loss_weight,
    coarse_embedding=cfg.coarse_embedding)), _vit_decoder)
register_encoder(QuadtreeEncoderConfig, _vit_family(QuadtreeViTEncoder, lambda cfg: dict(
    levels=cfg.levels, token_budget=cfg.token_budget, scorer=cfg.scorer)), _vit_decoder)
register_encoder(SuperTokenEncoderConfig, _vit_family(SuperTokenViTEncoder, lambda cfg: dict(
    super_token_size=cfg.super_token_size, sampling_iterations=cfg.sampling_iterations)), _vit_decoder)
# semantic-token encoders (VT, TokenLearner, Context Clusters): ViT decoders too
register_encoder(VisualTransformerEncoderConfig, _vit_family(VisualTransformerEncoder, lambda cfg: dict(
    num_tokens=cfg.num_tokens, recurrent=cfg.recurrent)), _vit_decoder)
register_encoder(TokenLearnerEncoderConfig, _vit_family(TokenLearnerEncoder, lambda cfg: dict(
    num_tokens=cfg.num_tokens, learner_position=cfg.learner_position)), _vit_decoder)
register_encoder(ContextClusterEncoderConfig, _vit_family(ContextClusterEncoder, lambda cfg: dict(
    region_size=cfg.region_size, centres_per_side=cfg.centres_per_side)), _vit_decoder)


def _builders(config: EncoderConfig) -> tuple[Callable, Callable]:
    if config.kind not in _BUILDERS:
        raise ConfigError(f"unknown encoder kind '{config.kind}'{suggest(config.kind, _BUILDERS)}")
    return _BUILDERS[config.kind]


def build_encoder(config: EncoderConfig, latent_channels: int, image_size: int) -> nn.Module:
    return _builders(config)[0](config, latent_channels, image_size)


def build_decoder(config: EncoderConfig, latent_channels: int, image_size: int) -> nn.Module:
    return _builders(config)[1](config, latent_channels, image_size)


__all__ = ["ContextClusterEncoder", "ConvDecoder", "ConvEncoder", "MixedScaleViTEncoder", "QuadtreeViTEncoder",
           "SuperTokenViTEncoder", "TokenLearnerEncoder", "TokenMergeViTEncoder", "ViTDecoder", "ViTEncoder",
           "VisualTransformerEncoder", "build_decoder", "build_encoder", "register_encoder"]
