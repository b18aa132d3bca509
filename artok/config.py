"""Configuration dataclasses with strict YAML/JSON load and dump.

Every buildable object has one dataclass. YAML keys equal field names; an unknown key raises a
``ConfigError`` that names it and suggests the nearest valid key. Polymorphic sections (encoders) carry a
``kind`` field that selects the dataclass, so new encoders register a config class instead of adding flags.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


def suggest(name: str, options) -> str:
    """' (did you mean 'x'?)' for the closest option, or ''."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------------------------------------
# Base machinery
# ---------------------------------------------------------------------------------------------------------

def _resolve_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert plain YAML/JSON data into the type a field declares (tuples, nested configs, optionals)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (ConfigError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: cannot interpret {value!r} ({'; '.join(errors)})")
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(hint, type) and isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return hint.from_dict(value, where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads "1e-4" as a string
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class Config:
    """Base of all config dataclasses: strict ``from_dict``, ``to_dict``, YAML and JSON round trips."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; subclasses raise ``ConfigError`` naming the bad field."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"{where}: unknown key '{k}'{suggest(k, names)}; valid keys: {', '.join(names)}")
        hints = _resolve_hints(cls)
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def override(self, dotted: dict[str, Any]):
        """Apply ``{"quantizer.codebook_size": 512}``-style overrides; returns a new config."""
        data = self.to_dict()
        for key, value in dotted.items():
            node = data
            parts = key.split(".")
            for i, part in enumerate(parts[:-1]):
                if not isinstance(node, dict) or part not in node:
                    options = node.keys() if isinstance(node, dict) else []
                    raise ConfigError(f"override '{key}': no section '{part}'{suggest(part, options)}")
                node = node[part]
            if not isinstance(node, dict) or parts[-1] not in node:
                options = node.keys() if isinstance(node, dict) else []
                raise ConfigError(f"override '{key}': unknown key '{parts[-1]}'{suggest(parts[-1], options)}")
            node[parts[-1]] = value
        return type(self).from_dict(data)

    # -- files ------------------------------------------------------------------------------------------
    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path):
        p = Path(path_or_text) if not (isinstance(path_or_text, str) and "\n" in path_or_text) else None
        text = p.read_text() if p is not None else path_or_text
        data = yaml.safe_load(text) or {}
        return cls.from_dict(data, where=str(p) if p is not None else cls.__name__)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


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
    """The VQGAN/VAR convolutional body (section 4.1 of the fixture README).

    ``attn_levels`` lists the resolution levels whose residual blocks are followed by self-attention;
    None means the lowest-resolution level only, as VQGAN and VAR do. The decoder built from the same
    config uses ``num_res_blocks + 1`` blocks per level.
    """

    kind: str = "conv"
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_levels: tuple[int, ...] | None = None
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

QUANTIZER_KINDS = ("vq", "msrq", "hybrid")


@dataclass
class QuantizerConfig(Config):
    """Codebook quantizer: single-scale VQ (``vq``), VAR's multi-scale residual VQ (``msrq``), or HART's
    hybrid (``hybrid``: msrq plus a continuous residual).

    ``scales`` are the side lengths of the token maps, smallest first; the last equals the latent side.
    ``quant_resi`` is VAR's φ mixing ratio r (φ(h) = (1-r)h + r·conv(h)); ``share_quant_resi`` is the number
    of φ convolutions shared across scales (0: one per scale, 1: one for all).
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

    def unused_phi_convs(self) -> list[int]:
        """φ convolutions that no scale uses (e.g. 4 shared convs over 3 scales). Harmless for inference, but
        unused parameters waste memory and break DDP, so training refuses them."""
        if self.kind == "vq" or abs(self.quant_resi) <= 1e-6:
            return []
        from artok.quantizers.msrq import phi_index_per_scale

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
# Generator (block-causal next-scale transformer)
# ---------------------------------------------------------------------------------------------------------

BLOCK_UNITS = ("scale", "token")


@dataclass
class GeneratorConfig(Config):
    """Class-conditional block-causal transformer over token ids (VAR, arXiv 2404.02905; fixture README 4.3).

    The sequence is the concatenation of the token maps of ``scales`` (smallest first). ``block_unit``
    decides what one autoregressive step predicts: ``scale`` (VAR's next-scale prediction, blocks of pn²
    tokens) or ``token`` (raster order, LlamaGen-style, blocks of one token; the natural choice for a
    single-scale VQ tokenizer). A token attends to its own block and every earlier one.

    ``codebook_size``, ``latent_channels`` and ``scales`` must equal the tokenizer's. ``shared_adaln``
    is VAR's ``shared_aln`` (one AdaLN projection for all blocks plus a per-block bias, as in d36);
    ``attention_l2_norm`` is VAR's ``attn_l2_norm`` (cosine attention with a learnable per-head scale).
    ``class_dropout`` is the probability of replacing a label by the null class in training (for
    classifier-free guidance); ``drop_path`` is the stochastic-depth rate of the last block (linear ramp
    from 0 over the depth, as VAR does).
    """

    num_classes: int = 1000
    codebook_size: int = 4096
    latent_channels: int = 32
    scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    block_unit: str = "scale"
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    shared_adaln: bool = False
    attention_l2_norm: bool = True
    norm_eps: float = 1e-6
    class_dropout: float = 0.1
    dropout: float = 0.0
    drop_path: float = 0.0

    def validate(self) -> None:
        if self.block_unit not in BLOCK_UNITS:
            raise ConfigError(f"generator.block_unit: unknown '{self.block_unit}'{suggest(self.block_unit, BLOCK_UNITS)}; "
                              f"choose one of {', '.join(BLOCK_UNITS)}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"generator.scales must be positive, got {self.scales}")
        if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
            raise ConfigError(f"generator.scales must be strictly increasing, got {self.scales}")
        for name in ("num_classes", "codebook_size", "latent_channels", "depth", "embed_dim", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generator.{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"generator.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"generator.mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.norm_eps <= 0:
            raise ConfigError(f"generator.norm_eps must be positive, got {self.norm_eps}")
        for name in ("class_dropout", "dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"generator.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_tokens(self) -> int:
        """L: tokens per image over all scales."""
        return sum(s * s for s in self.scales)

    @property
    def block_sizes(self) -> list[int]:
        """Tokens per autoregressive step: pn² per scale, or 1 per token in raster order."""
        if self.block_unit == "token":
            return [1] * self.num_tokens
        return [s * s for s in self.scales]
