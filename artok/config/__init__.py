"""Configuration dataclasses with strict YAML/JSON load and dump.

Every buildable object has one dataclass. YAML keys equal field names; an unknown key raises a
``ConfigError`` that names it and suggests the nearest valid key. Polymorphic sections (encoders) carry a
``kind`` field that selects the dataclass, so new encoders register a config class instead of adding flags.

The package splits the configs by topic (``base``: the machinery; ``encoders``; ``tokenizer``; ``generator``;
``training``; ``presets``: the named configs); every config name is importable from ``artok.config``.
"""
from __future__ import annotations

from artok.config.base import (  # noqa: F401
    Config, ConfigError, _choice, suggest,
)
from artok.config.encoders import (  # noqa: F401
    ConvEncoderConfig, ENCODER_CONFIGS, EncoderConfig, MixedScaleEncoderConfig, QuadtreeEncoderConfig,
    SuperTokenEncoderConfig, TokenMergeEncoderConfig, ViTEncoderConfig, register_encoder_config,
)
from artok.config.tokenizer import QUANTIZER_KINDS, STRAIGHT_THROUGH, QuantizerConfig, TokenizerConfig  # noqa: F401
from artok.config.generator import (  # noqa: F401
    BLOCK_UNITS, DiffusionHeadConfig, GeneratorConfig, HART_ADALN, HART_POOLING, HART_SCALES_1024, HartConfig,
    TransformerShape,
)
from artok.config.text import TextEncoderConfig, hart_text_encoder  # noqa: F401
from artok.config.training import (  # noqa: F401
    BUILTIN_SOURCES, CROP_MODES, DATA_SOURCES, DISCRIMINATOR_NORMS, DataConfig, GAN_LOSSES, GeneratorDataConfig,
    GeneratorRecipeConfig, GeneratorTrainConfig, LR_SCHEDULES, LossConfig, MIXED_PRECISION, PERCEPTUAL_NETWORKS,
    RECONSTRUCTION_LOSSES, TokenizerTrainConfig, TrainConfig, VIEW_MODES,
)

__all__ = [
    'BLOCK_UNITS', 'BUILTIN_SOURCES', 'CROP_MODES', 'Config', 'ConfigError', 'ConvEncoderConfig', 'DATA_SOURCES',
    'DISCRIMINATOR_NORMS', 'DataConfig', 'DiffusionHeadConfig', 'ENCODER_CONFIGS', 'EncoderConfig',
    'GAN_LOSSES', 'GeneratorConfig', 'GeneratorDataConfig', 'GeneratorRecipeConfig', 'GeneratorTrainConfig',
    'HART_ADALN', 'HART_POOLING', 'HART_SCALES_1024', 'HartConfig', 'LR_SCHEDULES', 'LossConfig',
    'MIXED_PRECISION', 'MixedScaleEncoderConfig', 'PERCEPTUAL_NETWORKS', 'QUANTIZER_KINDS',
    'QuadtreeEncoderConfig', 'QuantizerConfig', 'RECONSTRUCTION_LOSSES', 'STRAIGHT_THROUGH', 'SuperTokenEncoderConfig',
    'TextEncoderConfig', 'TokenMergeEncoderConfig', 'TokenizerConfig', 'TokenizerTrainConfig', 'TrainConfig', 'TransformerShape', 'VIEW_MODES',
    'ViTEncoderConfig', 'hart_text_encoder', 'register_encoder_config', 'suggest',
]
