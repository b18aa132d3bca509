"""Generator configs: VAR's block-causal next-scale transformer and HART (diffusion head + transformer)."""
from __future__ import annotations

from dataclasses import dataclass, field

from artok.config.base import Config, ConfigError, suggest

# ---------------------------------------------------------------------------------------------------------
# Generator (block-causal next-scale transformer)
# ---------------------------------------------------------------------------------------------------------

BLOCK_UNITS = ("scale", "token")


class TransformerShape:
    """Shape properties shared by the transformer configs (``embed_dim``, ``num_heads``, ``scales``)."""

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_tokens(self) -> int:
        """L: image tokens per image over all scales."""
        return sum(s * s for s in self.scales)

    @property
    def block_sizes(self) -> list[int]:
        """Tokens per autoregressive step: pn² per scale."""
        return [s * s for s in self.scales]


@dataclass
class GeneratorConfig(TransformerShape, Config):
    """Class-conditional block-causal transformer over token ids (VAR, arXiv 2404.02905; docs/reference-behaviour.md 4.3).

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
    def block_sizes(self) -> list[int]:
        """Tokens per autoregressive step: pn² per scale, or 1 per token in raster order."""
        if self.block_unit == "token":
            return [1] * self.num_tokens
        return [s * s for s in self.scales]




# ---------------------------------------------------------------------------------------------------------
# HART: residual diffusion head and the hybrid transformer (docs/reference-behaviour.md sections 3 and 5)
# ---------------------------------------------------------------------------------------------------------

HART_SCALES_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
HART_ADALN = ("pooled", "shared_table", "none")
HART_POOLING = ("max", "mean")


@dataclass
class DiffusionHeadConfig(Config):
    """HART's residual diffusion head (MAR's ``SimpleMLPAdaLN``, docs/reference-behaviour.md 5.5).

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
class HartConfig(TransformerShape, Config):
    """HART's hybrid transformer (Tang et al., 2024, arXiv 2410.10812; docs/reference-behaviour.md 5.2–5.4): Llama blocks
    (RMSNorm, SwiGLU, 1D RoPE on the condition tokens and 2D RoPE on image tokens) predicting VAR's
    next-scale ids, plus a residual diffusion head on the last scale's hidden states.

    Conditioning: text-to-image when ``context_dim`` > 0 (a sequence of up to ``max_context_tokens``
    text-encoder states, the released model), class-conditional when ``num_classes`` > 0 (one class
    embedding token; the null class is ``num_classes``). ``adaln``: ``pooled`` (per-block AdaLN from the
    pooled condition, ``adaln_pooling`` max or mean over valid tokens), ``shared_table`` (HART's
    ``disable_aln`` + ``shared_aln``: a per-block table plus the mean-pooled condition) or ``none``.
    ``attention_l2_norm`` is VAR's cosine attention; else the softmax scale is 0.25/√head_dim (docs/reference-behaviour.md Q5).

    Training: ``class_dropout`` is the probability of dropping the condition (HART's ``cond_drop_rate``; its
    ``torch.randn(B) < p`` draw drops 54% at 0.1, see docs/reference-behaviour.md Q1, so set 0.54 to match it). The last scale is
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
    def class_conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU width: int(2/3 · embed_dim · mlp_ratio) rounded up to a multiple of 256 (HART/Llama)."""
        return int((self.embed_dim * self.mlp_ratio * 2) / 3 + 255) // 256 * 256
