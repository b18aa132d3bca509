"""Presets by name: ``build_tokenizer("var-vqvae-f16")``. Every preset has a tiny twin for CPU tests.

The YAML files under ``configs/`` are dumps of these presets (a test keeps them equal).
"""
from __future__ import annotations

from typing import Any, Callable

from artok.config import ConfigError, ConvEncoderConfig, QuantizerConfig, TokenizerConfig, suggest

TOKENIZER_PRESETS: dict[str, Callable[[], TokenizerConfig]] = {}


def tokenizer_preset(name: str):
    def wrap(fn):
        TOKENIZER_PRESETS[name] = fn
        return fn

    return wrap


VAR_SCALES_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_SCALES_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


@tokenizer_preset("var-vqvae-f16")
def _var_vqvae_f16() -> TokenizerConfig:
    """The released VAR tokenizer (vae_ch160v4096z32): 256 px, 10 scales, V=4096, C=32."""
    return TokenizerConfig(
        image_size=256, latent_channels=32,
        encoder=ConvEncoderConfig(ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2),
        quantizer=QuantizerConfig(kind="msrq", codebook_size=4096, scales=VAR_SCALES_256),
    )


@tokenizer_preset("var-vqvae-f16-512")
def _var_vqvae_f16_512() -> TokenizerConfig:
    """The VAR tokenizer on VAR's 512 px schedule (used by the d36 model)."""
    cfg = _var_vqvae_f16()
    return cfg.replace(image_size=512, quantizer=cfg.quantizer.replace(scales=VAR_SCALES_512))


@tokenizer_preset("tiny-var-vqvae")
def _tiny_var_vqvae() -> TokenizerConfig:
    """Tiny twin of var-vqvae-f16 for CPU tests: 32 px, scales (1, 2, 4), V=64."""
    return TokenizerConfig(
        image_size=32, latent_channels=8,
        encoder=ConvEncoderConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
        quantizer=QuantizerConfig(kind="msrq", codebook_size=64, scales=(1, 2, 4), share_quant_resi=3),
    )


@tokenizer_preset("vq-f16")
def _vq_f16() -> TokenizerConfig:
    """Single-scale VQ tokenizer in the LlamaGen style: 256 px → 16×16 tokens, V=16384, C=8, cosine codes."""
    return TokenizerConfig(
        image_size=256, latent_channels=8,
        encoder=ConvEncoderConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2),
        quantizer=QuantizerConfig(kind="vq", codebook_size=16384, scales=(16,), l2_norm=True),
    )


@tokenizer_preset("tiny-vq")
def _tiny_vq() -> TokenizerConfig:
    """Tiny twin of vq-f16: 32 px → 4×4 tokens, V=64."""
    return TokenizerConfig(
        image_size=32, latent_channels=8,
        encoder=ConvEncoderConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
        quantizer=QuantizerConfig(kind="vq", codebook_size=64, scales=(4,), l2_norm=True),
    )


def tokenizer_config(name: str, **overrides: Any) -> TokenizerConfig:
    """The preset ``name`` with dotted overrides applied (``{"quantizer.codebook_size": 512}``)."""
    if name not in TOKENIZER_PRESETS:
        raise ConfigError(f"unknown tokenizer preset '{name}'{suggest(name, TOKENIZER_PRESETS)}; "
                          f"known: {', '.join(sorted(TOKENIZER_PRESETS))}")
    cfg = TOKENIZER_PRESETS[name]()
    return cfg.override(overrides) if overrides else cfg


def build_tokenizer(name_or_config: str | TokenizerConfig, **overrides: Any):
    """Build a tokenizer from a preset name or a config, e.g. ``build_tokenizer("tiny-var-vqvae")``."""
    from artok.tokenizers import Tokenizer

    if isinstance(name_or_config, TokenizerConfig):
        cfg = name_or_config.override(overrides) if overrides else name_or_config
    else:
        cfg = tokenizer_config(name_or_config, **overrides)
    return Tokenizer(cfg)


def dump_tokenizer_presets(configs_dir) -> list:
    """Write every tokenizer preset as YAML: ``configs/tokenizer/<name>.yaml``, tiny twins under
    ``configs/tiny/``. Returns the paths written."""
    from pathlib import Path

    written = []
    for name, make in TOKENIZER_PRESETS.items():
        path = Path(configs_dir) / ("tiny" if name.startswith("tiny-") else "tokenizer") / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# tokenizer preset '{name}': {make.__doc__.splitlines()[0]}\n" + make().to_yaml())
        written.append(path)
    return written
