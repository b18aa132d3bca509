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


# ---------------------------------------------------------------------------------------------------------
# Training (runtime knobs only: none of these reach model code)
# ---------------------------------------------------------------------------------------------------------

DATA_SOURCES = ("folder", "hf", "webdataset", "fashion-mnist", "skimage", "procedural")
CROP_MODES = ("random", "center")
RECONSTRUCTION_LOSSES = ("l1", "l2")
PERCEPTUAL_NETWORKS = ("vgg", "alex", "squeeze")
GAN_LOSSES = ("hinge", "non-saturating")
DISCRIMINATOR_NORMS = ("batch", "group", "none")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")


def _choice(where: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{where}: unknown '{value}'{suggest(value, options)}; choose one of {', '.join(options)}")


@dataclass
class DataConfig(Config):
    """Where training images come from and how they are cropped.

    ``source``: ``folder`` (``path`` is a directory, searched recursively; first-level sub-folders are
    classes), ``hf`` (``path`` is a Hugging Face dataset name or a ``save_to_disk`` folder), ``webdataset``
    (``path`` is a tar shard, a glob or a brace pattern such as ``shards/{000..009}.tar``), or a built-in
    offline set: ``fashion-mnist``, ``skimage`` (random crops of scikit-image's photos), ``procedural``.
    ``resize`` is the shorter side before cropping (None: the image size, so crops keep the whole width).
    """

    source: str = "procedural"
    path: str | None = None
    split: str = "train"
    image_key: str = "image"
    label_key: str = "label"
    num_samples: int = 10000
    resize: int | None = None
    crop: str = "random"
    horizontal_flip: bool = True
    num_workers: int = 2

    def validate(self) -> None:
        _choice("data.source", self.source, DATA_SOURCES)
        _choice("data.crop", self.crop, CROP_MODES)
        if self.num_samples < 1:
            raise ConfigError(f"data.num_samples must be >= 1, got {self.num_samples}")
        if self.resize is not None and self.resize < 1:
            raise ConfigError(f"data.resize must be positive or null, got {self.resize}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class LossConfig(Config):
    """Weights of the tokenizer training loss (VQGAN, Esser et al. 2021, eq. 4-7; VAR §4).

    total = reconstruction_weight·L1/L2 + perceptual_weight·LPIPS + commitment_weight·commitment
            + codebook_weight·codebook + entropy_weight·entropy + gan_weight·λ_adaptive·G loss (after
            ``gan_start_step``). ``gan_weight`` 0 trains no discriminator; ``perceptual_weight`` 0 needs no
            LPIPS weights. ``perceptual_backbone_weights`` is a local torchvision state dict for the LPIPS
            backbone (offline machines).
    """

    reconstruction: str = "l1"
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_network: str = "vgg"
    perceptual_backbone_weights: str | None = None
    commitment_weight: float = 1.0
    codebook_weight: float = 1.0
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    gan_weight: float = 0.0
    gan_start_step: int = 0
    gan_loss: str = "hinge"
    adaptive_gan_weight: bool = True
    max_adaptive_weight: float = 1e4
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    discriminator_norm: str = "group"

    def validate(self) -> None:
        _choice("loss.reconstruction", self.reconstruction, RECONSTRUCTION_LOSSES)
        _choice("loss.perceptual_network", self.perceptual_network, PERCEPTUAL_NETWORKS)
        _choice("loss.gan_loss", self.gan_loss, GAN_LOSSES)
        _choice("loss.discriminator_norm", self.discriminator_norm, DISCRIMINATOR_NORMS)
        for name in ("reconstruction_weight", "perceptual_weight", "commitment_weight", "codebook_weight",
                     "entropy_weight", "gan_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.entropy_temperature <= 0:
            raise ConfigError(f"loss.entropy_temperature must be positive, got {self.entropy_temperature}")
        if self.gan_start_step < 0:
            raise ConfigError(f"loss.gan_start_step must be >= 0, got {self.gan_start_step}")
        if self.discriminator_channels < 1 or self.discriminator_layers < 1:
            raise ConfigError(f"loss.discriminator_channels and discriminator_layers must be >= 1, got "
                              f"{self.discriminator_channels} and {self.discriminator_layers}")


@dataclass
class TrainConfig(Config):
    """Runtime knobs of a training run, shared by every trainer (tokenizer now, generator next).

    Steps count optimizer updates; ``batch_size`` is per process and per micro-step, so one update sees
    batch_size × gradient_accumulation_steps × processes images. ``resume``: ``auto`` continues from the
    newest complete checkpoint in ``out_dir/checkpoints`` when there is one, ``never`` starts fresh, or a
    checkpoint folder. ``init_from`` loads weights from an artok checkpoint before training (e.g. the
    discrete tokenizer a hybrid one starts from); ``freeze`` lists parameter-name prefixes kept fixed.
    """

    out_dir: str = "runs/tokenizer"
    seed: int = 0
    batch_size: int = 16
    max_steps: int = 10000
    max_minutes: float | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    lr: float = 1e-4
    discriminator_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    log_every: int = 10
    sample_every: int = 500
    save_every: int = 1000
    checkpoints_total_limit: int | None = 3
    eval_images: int = 256
    trackers: tuple[str, ...] = ("tensorboard",)
    resume: str = "auto"
    init_from: str | None = None
    freeze: tuple[str, ...] = ()
    find_unused_parameters: bool = False
    cpu: bool = False

    def validate(self) -> None:
        _choice("train.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("batch_size", "max_steps", "gradient_accumulation_steps", "log_every", "sample_every",
                     "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or (self.discriminator_lr is not None and self.discriminator_lr <= 0):
            raise ConfigError(f"train.lr and train.discriminator_lr must be positive, got {self.lr} and "
                              f"{self.discriminator_lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be in [0, 1), got {self.betas}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.warmup_steps must be >= 0 and train.min_lr_ratio in [0, 1], got "
                              f"{self.warmup_steps} and {self.min_lr_ratio}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be positive or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be positive or null, got {self.max_minutes}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ConfigError(f"train.checkpoints_total_limit must be >= 1 or null, got {self.checkpoints_total_limit}")
        if self.eval_images < 0:
            raise ConfigError(f"train.eval_images must be >= 0, got {self.eval_images}")


@dataclass
class TokenizerTrainConfig(Config):
    """A tokenizer training run: the model (a ``TokenizerConfig``, or a preset name in YAML), the data,
    the loss weights and the runtime knobs."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        if isinstance(data, dict) and isinstance(data.get("tokenizer"), str):
            from artok.registry import tokenizer_config  # registry imports this module

            data = {**data, "tokenizer": tokenizer_config(data["tokenizer"]).to_dict()}
        return super().from_dict(data, where=where)


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


# ---------------------------------------------------------------------------------------------------------
# HART: residual diffusion head and the hybrid transformer (fixture README sections 3 and 5)
# ---------------------------------------------------------------------------------------------------------

HART_SCALES_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
HART_ADALN = ("pooled", "shared_table", "none")
HART_POOLING = ("max", "mean")


@dataclass
class DiffusionHeadConfig(Config):
    """HART's residual diffusion head (MAR's ``SimpleMLPAdaLN``, fixture README 5.5).

    ``latent_channels`` is C of the residual tokens, ``condition_dim`` the width of the transformer's hidden
    state. The network works on residual / ``latent_scale`` (HART's ``vae_scale``). Training uses the
    ``num_train_timesteps`` cosine schedule; sampling is respaced to ``num_sampling_steps``.
    """

    latent_channels: int = 32
    condition_dim: int = 1536
    width: int = 1024
    depth: int = 6
    num_train_timesteps: int = 1000
    num_sampling_steps: int = 8
    latent_scale: float = 0.6

    def validate(self) -> None:
        for name in ("latent_channels", "condition_dim", "width", "depth", "num_train_timesteps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"diffusion_head.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.num_sampling_steps <= self.num_train_timesteps:
            raise ConfigError(f"diffusion_head.num_sampling_steps must be in [1, {self.num_train_timesteps}], "
                              f"got {self.num_sampling_steps}")
        if self.latent_scale <= 0:
            raise ConfigError(f"diffusion_head.latent_scale must be positive, got {self.latent_scale}")


@dataclass
class HartConfig(Config):
    """HART's hybrid transformer (Tang et al., 2024, arXiv 2410.10812; fixture README 5.2–5.4): Llama blocks
    (RMSNorm, SwiGLU, 1D RoPE on the condition tokens and 2D RoPE on image tokens) predicting VAR's
    next-scale ids, plus a residual diffusion head on the last scale's hidden states.

    Conditioning: text-to-image when ``context_dim`` > 0 (a sequence of up to ``max_context_tokens``
    text-encoder states, the released model), class-conditional when ``num_classes`` > 0 (one class
    embedding token; the null class is ``num_classes``). ``adaln``: ``pooled`` (per-block AdaLN from the
    pooled condition, ``adaln_pooling`` max or mean over valid tokens), ``shared_table`` (HART's
    ``disable_aln`` + ``shared_aln``: a per-block table plus the mean-pooled condition) or ``none``.
    ``attention_l2_norm`` is VAR's cosine attention; else the softmax scale is 0.25/√head_dim (quirk Q5).

    Training: ``class_dropout`` is the probability of dropping the condition (HART's ``cond_drop_rate``; its
    ``torch.randn(B) < p`` draw drops 54% at 0.1, quirk Q1, so set 0.54 to match it). The last scale is
    MAR-masked: a fraction ~ truncnorm[``mask_ratio_min``, 1] (mean 1, std 0.25) of its tokens is removed,
    keeping at least ``min_kept_tokens`` (all of them when the last scale has no more); the diffusion target of each kept token is the tokenizer's residual
    before the last code minus the code of an id sampled from the model (top-k ``train_top_k``, top-p
    ``train_top_p``), repeated ``diffusion_batch_mul`` times.
    """

    codebook_size: int = 4096
    latent_channels: int = 32
    scales: tuple[int, ...] = HART_SCALES_1024
    depth: int = 24
    embed_dim: int = 1536
    num_heads: int = 24
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    context_dim: int = 1536
    max_context_tokens: int = 300
    context_norm: bool = False
    num_classes: int = 0
    adaln: str = "shared_table"
    adaln_pooling: str = "max"
    attention_l2_norm: bool = False
    class_dropout: float = 0.1
    mask_ratio_min: float = 0.5
    min_kept_tokens: int = 32
    train_top_k: int = 600
    train_top_p: float = 0.96
    diffusion_batch_mul: int = 4
    diffusion_head: DiffusionHeadConfig = field(default_factory=DiffusionHeadConfig)

    def validate(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales) or any(b <= a for a, b in zip(self.scales, self.scales[1:])):
            raise ConfigError(f"hart.scales must be positive and strictly increasing, got {self.scales}")
        if len(self.scales) < 2 or self.scales[0] != 1:
            raise ConfigError(f"hart.scales must start at 1 (scale 0 is predicted from the last condition token) "
                              f"and have at least two scales, got {self.scales}")
        for name in ("codebook_size", "latent_channels", "depth", "embed_dim", "num_heads", "diffusion_batch_mul"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hart.{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ConfigError(f"hart.embed_dim {self.embed_dim} / num_heads {self.num_heads} must be a head size "
                              "divisible by 4 (2D RoPE)")
        if (self.context_dim > 0) == (self.num_classes > 0):
            raise ConfigError(f"hart: set exactly one of context_dim (text-to-image) and num_classes (class-"
                              f"conditional), got context_dim={self.context_dim}, num_classes={self.num_classes}")
        if self.context_dim > 0 and self.max_context_tokens < 1:
            raise ConfigError(f"hart.max_context_tokens must be >= 1, got {self.max_context_tokens}")
        if self.adaln not in HART_ADALN:
            raise ConfigError(f"hart.adaln: unknown '{self.adaln}'{suggest(self.adaln, HART_ADALN)}; "
                              f"choose one of {', '.join(HART_ADALN)}")
        if self.adaln_pooling not in HART_POOLING:
            raise ConfigError(f"hart.adaln_pooling: unknown '{self.adaln_pooling}'{suggest(self.adaln_pooling, HART_POOLING)}"
                              f"; choose one of {', '.join(HART_POOLING)}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError(f"hart.class_dropout must be in [0, 1), got {self.class_dropout}")
        if not 0.0 <= self.mask_ratio_min <= 1.0:
            raise ConfigError(f"hart.mask_ratio_min must be in [0, 1], got {self.mask_ratio_min}")
        if self.min_kept_tokens < 0:
            raise ConfigError(f"hart.min_kept_tokens must be >= 0, got {self.min_kept_tokens}")
        if self.norm_eps <= 0 or self.mlp_ratio <= 0:
            raise ConfigError(f"hart.norm_eps and mlp_ratio must be positive, got {self.norm_eps}, {self.mlp_ratio}")
        d = self.diffusion_head
        if (d.latent_channels, d.condition_dim) != (self.latent_channels, self.embed_dim):
            raise ConfigError(f"hart.diffusion_head must take latent_channels={self.latent_channels} and "
                              f"condition_dim={self.embed_dim}, got {d.latent_channels} and {d.condition_dim}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_tokens(self) -> int:
        """L: image tokens over all scales."""
        return sum(s * s for s in self.scales)

    @property
    def block_sizes(self) -> list[int]:
        """Tokens per autoregressive step: pn² per scale."""
        return [s * s for s in self.scales]

    @property
    def class_conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU width: int(2/3 · embed_dim · mlp_ratio) rounded up to a multiple of 256 (HART/Llama)."""
        return int((self.embed_dim * self.mlp_ratio * 2) / 3 + 255) // 256 * 256


# ---------------------------------------------------------------------------------------------------------
# Generator training (artok/training/generator_trainer.py)
# ---------------------------------------------------------------------------------------------------------

VIEW_MODES = ("random", "all")


@dataclass
class GeneratorDataConfig(Config):
    """Where the generator's token ids come from.

    ``tokens``: a directory written by ``artok encode`` (preferred: no tokenizer work during training). Its
    manifest must name the same tokenizer weights as ``GeneratorTrainConfig.tokenizer``. With several views
    per image (hflip, ten-crop), ``views: random`` draws one view per image per epoch (LlamaGen) and
    ``views: all`` treats every view as its own sample. Without ``tokens``, ``images`` are tokenized on the fly.
    """

    tokens: str | None = None
    views: str = "random"
    images: DataConfig | None = None
    num_workers: int = 2

    def validate(self) -> None:
        _choice("data.views", self.views, VIEW_MODES)
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class GeneratorRecipeConfig(Config):
    """The VAR recipe (Tian et al., 2024, section 4 and the official training script), all adjustable.

    ``scale_lr``: the learning rate is ``train.lr × global batch / 256`` (VAR's ``tblr``). ``label_smoothing``
    of the cross-entropy. Progressive training over scales: start with ``progressive_start`` scales and add
    scales linearly until all are trained at ``progressive_steps`` (0 disables). Sample grids every
    ``train.sample_every`` steps use the fixed ``sample_classes`` and ``sample_seed``.
    """

    scale_lr: bool = True
    label_smoothing: float = 0.0
    progressive_start: int = 0
    progressive_steps: int = 0
    sample_classes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    samples_per_class: int = 2
    sample_seed: int = 0
    sample_cfg: float = 1.5
    sample_top_k: int = 0
    sample_top_p: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"recipe.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.progressive_start < 0 or self.progressive_steps < 0:
            raise ConfigError("recipe.progressive_start and progressive_steps must be >= 0")
        if (self.progressive_start > 0) != (self.progressive_steps > 0):
            raise ConfigError("recipe.progressive_start and progressive_steps are set together (both 0 disables)")
        if self.samples_per_class < 1 or any(c < 0 for c in self.sample_classes):
            raise ConfigError("recipe.samples_per_class must be >= 1 and sample_classes non-negative")


def _generator_train_defaults() -> TrainConfig:
    """VAR's optimiser settings: AdamW β (0.9, 0.95), weight decay 0.05, lr 1e-4 per 256 images, warm-up then
    linear decay, gradient clipping 2."""
    return TrainConfig(out_dir="runs/generator", batch_size=64, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                       lr_schedule="linear", warmup_steps=500, min_lr_ratio=0.0, grad_clip=2.0, ema_decay=0.9999,
                       sample_every=1000, save_every=2000)


@dataclass
class GeneratorTrainConfig(Config):
    """A generator training run: the model (a ``GeneratorConfig`` for VAR/raster generators, a ``HartConfig``
    for class-conditional HART with its residual diffusion head, or a preset name of either in YAML), the
    tokenizer checkpoint whose ids it models, the data, the recipe and the runtime knobs."""

    generator: GeneratorConfig | HartConfig = field(default_factory=GeneratorConfig)
    tokenizer: str = ""
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    recipe: GeneratorRecipeConfig = field(default_factory=GeneratorRecipeConfig)
    train: TrainConfig = field(default_factory=_generator_train_defaults)

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        if isinstance(data, dict) and isinstance(data.get("generator"), str):
            from artok.registry import HART_PRESETS, generator_config, hart_config  # registry imports this module

            name = data["generator"]
            data = {**data, "generator": (hart_config(name) if name in HART_PRESETS else generator_config(name)).to_dict()}
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            # train keys not given keep the generator defaults, not TrainConfig's tokenizer defaults
            data = {**data, "train": {**_generator_train_defaults().to_dict(), **data["train"]}}
        return super().from_dict(data, where=where)

    @property
    def is_hart(self) -> bool:
        return isinstance(self.generator, HartConfig)

    def validate(self) -> None:
        if self.is_hart and not self.generator.class_conditional:
            raise ConfigError("generator: the trainer trains class-conditional HART (num_classes > 0); text-to-image "
                              "HART needs text-encoder contexts per image, which token shards do not hold")
        p = self.recipe.progressive_start
        if p and (self.is_hart or p > len(self.generator.scales) or self.generator.block_unit != "scale"):
            raise ConfigError(f"recipe.progressive_start={p}: progressive training needs next-scale blocks and at "
                              f"most {len(self.generator.scales)} scales")
        if any(c >= self.generator.num_classes for c in self.recipe.sample_classes):
            raise ConfigError(f"recipe.sample_classes {self.recipe.sample_classes} must be below "
                              f"num_classes={self.generator.num_classes}")

    def check_runnable(self) -> None:
        """What a run needs beyond valid values: a tokenizer and a data source."""
        if not self.tokenizer:
            raise ConfigError("tokenizer: the path of the tokenizer checkpoint whose ids the generator models is "
                              "required (artok convert / artok train tokenizer write one)")
        if self.data.tokens is None and self.data.images is None:
            raise ConfigError("data: give data.tokens (a directory from artok encode) or data.images")
