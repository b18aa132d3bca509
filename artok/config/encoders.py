"""Encoder and decoder configs: one dataclass per encoder ``kind``, selected by that field when a tokenizer's
``encoder`` section is loaded. A kind is spelled once, as the default of its config's ``kind`` field;
``register_encoder_config`` files the class under it, and ``artok.encoders.register_encoder`` files the
builders under the same class."""
from __future__ import annotations

from dataclasses import dataclass

from artok.config.base import Config, ConfigError, suggest


ENCODER_CONFIGS: dict[str, type["EncoderConfig"]] = {}


def encoder_kind(cls: type) -> str:
    """The kind an encoder config class stands for: the default of its ``kind`` field."""
    return cls.__dataclass_fields__["kind"].default


def register_encoder_config(cls):
    """Class decorator (above ``@dataclass``): make the class's ``kind`` selectable in the ``encoder``/
    ``decoder`` section of a tokenizer."""
    kind = encoder_kind(cls)
    if kind in ENCODER_CONFIGS and ENCODER_CONFIGS[kind] is not cls:
        raise ValueError(f"encoder kind '{kind}' is registered twice ({ENCODER_CONFIGS[kind].__name__}, {cls.__name__})")
    ENCODER_CONFIGS[kind] = cls
    return cls


@dataclass
class EncoderConfig(Config):
    """Base of encoder/decoder configs; ``kind`` picks the subclass when loading."""

    kind: str = "conv"

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


@register_encoder_config
@dataclass
class ConvEncoderConfig(EncoderConfig):
    """The VQGAN/VAR convolutional body (section 4.1 of docs/reference-behaviour.md).

    ``attn_levels`` lists the resolution levels whose residual blocks are followed by self-attention;
    None means the lowest-resolution level only, as VQGAN and VAR do. The decoder built from the same
    config uses ``num_res_blocks + 1`` blocks per level. ``level_blocks``, when set, gives the residual
    blocks of each level (finest first) for the encoder and the decoder alike, so a small-image tokenizer
    can skip the costly full-resolution blocks, e.g. ``ch_mult: [1, 2, 4], level_blocks: [0, 1, 1]``; the
    resampling convolutions then change the width (so the decoder's high-resolution convolutions run at the
    narrow width). ``mid: false`` drops the two middle blocks (and their attention). ``norm_groups``: the
    GroupNorm groups; 0 drops every normalisation (a plain residual conv net, as small-image autoencoders
    are often written).
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
        if self.norm_groups < 0:
            raise ConfigError(f"encoder.norm_groups must be >= 0 (0: no normalisation), got {self.norm_groups}")
        for m in self.ch_mult:
            if self.norm_groups and (self.ch * m) % self.norm_groups:
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
# ViT-family encoders: plain ViT and the token-reduction encoders built on it (artok/encoders/vit.py, ...)
# ---------------------------------------------------------------------------------------------------------

@register_encoder_config
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

    def validate(self) -> None:
        kind = encoder_kind(type(self))
        where = f"encoder ({kind})"
        if self.kind != kind:
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


@register_encoder_config
@dataclass
class TokenMergeEncoderConfig(ViTEncoderConfig):
    """ViT encoder with token merging (ToMe, arXiv 2210.09461): ``merge_per_layer`` tokens (r) merged in
    every block by bipartite soft matching, with a ``constant`` or ``decreasing`` (2r → 0) schedule and
    proportional attention; tokens are unmerged to the full grid before the quantizer."""

    kind: str = "tome"
    merge_per_layer: int = 8
    merge_schedule: str = "constant"
    proportional_attention: bool = True

    def validate(self) -> None:
        super().validate()
        if self.merge_per_layer < 0:
            raise ConfigError(f"encoder (tome).merge_per_layer must be >= 0, got {self.merge_per_layer}")
        if self.merge_schedule not in ("constant", "decreasing"):
            raise ConfigError(f"encoder (tome).merge_schedule must be 'constant' or 'decreasing', got "
                              f"'{self.merge_schedule}'{suggest(self.merge_schedule, ('constant', 'decreasing'))}")


@register_encoder_config
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


@register_encoder_config
@dataclass
class QuadtreeEncoderConfig(ViTEncoderConfig):
    """ViT encoder over quadtree mixed-resolution tokens (Quadformer, arXiv 2304.00287): patches of
    ``patch_size`` up to ``patch_size * 2**levels`` pixels, at most ``token_budget`` of them, split where
    the ``scorer`` (``pixel_variance``, ``pixel_blur`` or the learned-``feature`` variance) is highest."""

    kind: str = "quadtree"
    levels: int = 2
    token_budget: int = 128
    scorer: str = "pixel_variance"

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


@register_encoder_config
@dataclass
class SuperTokenEncoderConfig(ViTEncoderConfig):
    """ViT encoder with super-token attention (STViT, arXiv 2211.11167): one super token per
    ``super_token_size``² tokens, sampled by soft association with the 3×3 neighbouring super tokens
    (``sampling_iterations`` rounds), attended among themselves and upsampled back."""

    kind: str = "stvit"
    super_token_size: int = 2
    sampling_iterations: int = 1

    def validate(self) -> None:
        super().validate()
        if self.super_token_size < 1:
            raise ConfigError(f"encoder (stvit).super_token_size must be >= 1, got {self.super_token_size}")
        if self.sampling_iterations < 1:
            raise ConfigError(f"encoder (stvit).sampling_iterations must be >= 1, got {self.sampling_iterations}")


# ---------------------------------------------------------------------------------------------------------
# Semantic-token encoders: a few tokens (or clusters) carry the image (visual_transformer.py,
# token_learner.py, context_cluster.py); ``depth``, ``width``, heads and MLP ratio as for the ViT
# ---------------------------------------------------------------------------------------------------------

@register_encoder_config
@dataclass
class VisualTransformerEncoderConfig(ViTEncoderConfig):
    """Visual Transformer encoder (VT, arXiv 2006.03677): ``depth`` layers that each pool the grid into
    ``num_tokens`` (L) visual tokens by spatial attention, run a transformer block on them and project them
    back onto the grid; with ``recurrent`` the later layers take their filters from the previous tokens."""

    kind: str = "vt"
    num_tokens: int = 16
    recurrent: bool = True

    def validate(self) -> None:
        super().validate()
        if self.num_tokens < 1:
            raise ConfigError(f"encoder (vt).num_tokens (L) must be >= 1, got {self.num_tokens}")


@register_encoder_config
@dataclass
class TokenLearnerEncoderConfig(ViTEncoderConfig):
    """TokenLearner + TokenFuser encoder (arXiv 2106.11297): ``learner_position`` blocks on the full grid,
    then ``num_tokens`` (S) tokens learned by spatial attention, the remaining blocks on them, and the
    TokenFuser back to the grid."""

    kind: str = "tokenlearner"
    num_tokens: int = 8
    learner_position: int = 1

    def validate(self) -> None:
        super().validate()
        if self.num_tokens < 1:
            raise ConfigError(f"encoder (tokenlearner).num_tokens (S) must be >= 1, got {self.num_tokens}")
        if not 0 <= self.learner_position < self.depth:
            raise ConfigError(f"encoder (tokenlearner).learner_position must be in 0..depth-1 = 0..{self.depth - 1} "
                              f"(at least one block after the learner), got {self.learner_position}")


@register_encoder_config
@dataclass
class ContextClusterEncoderConfig(ViTEncoderConfig):
    """Context Clusters encoder (CoC, arXiv 2303.01494): points (colour + coordinates) per patch, ``depth``
    blocks clustering them around ``centres_per_side``² centres in each local region of ``region_size``²
    points. No attention and no position embedding in the encoder (``positions`` sets the ViT decoder's)."""

    kind: str = "coc"
    region_size: int = 4
    centres_per_side: int = 2

    def validate(self) -> None:
        super().validate()
        if self.region_size < 1:
            raise ConfigError(f"encoder (coc).region_size must be >= 1, got {self.region_size}")
        if self.centres_per_side < 1 or self.region_size % self.centres_per_side:
            raise ConfigError(f"encoder (coc).centres_per_side must be >= 1 and divide region_size "
                              f"{self.region_size}, got {self.centres_per_side}")
