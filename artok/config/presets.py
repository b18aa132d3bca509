"""Presets by name: ``tokenizer_config("var-vqvae-f16")``, ``generator_config("var-d16")``,
``hart_config("tiny-hart-c2i")``. A preset is a config, so presets live with the configs; building a model from
one is ``artok.build_tokenizer`` / ``build_generator`` / ``build_hart`` (``artok/pipeline.py``). Every preset
has a tiny twin for CPU tests. The YAML files under ``configs/`` are dumps of these presets (a test keeps them
equal).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from artok.config.base import ConfigError, suggest
from artok.config.generator import HART_SCALES_1024, DiffusionHeadConfig, GeneratorConfig, HartConfig
from artok.config.encoders import (ContextClusterEncoderConfig, ConvEncoderConfig, MixedScaleEncoderConfig,
                                   QuadtreeEncoderConfig, SuperTokenEncoderConfig, TokenLearnerEncoderConfig,
                                   TokenMergeEncoderConfig, ViTEncoderConfig, VisualTransformerEncoderConfig)
from artok.config.tokenizer import QuantizerConfig, TokenizerConfig


class PresetFamily:
    """Named config factories of one kind (tokenizer, generator, HART): registration by decorator, lookup
    with dotted overrides, and the YAML dump under ``configs/<folder>/`` (tiny twins under ``configs/tiny/``).
    """

    def __init__(self, kind: str, config_class: type, folder: str) -> None:
        self.kind, self.config_class, self.folder = kind, config_class, folder
        self.presets: dict[str, Callable[[], Any]] = {}

    def register(self, name: str):
        def wrap(fn):
            if name in self.presets:
                raise ValueError(f"{self.kind} preset '{name}' is registered twice")
            self.presets[name] = fn
            return fn

        return wrap

    def config(self, name: str, **overrides: Any):
        """The preset ``name`` with dotted overrides applied (``{"quantizer.codebook_size": 512}``)."""
        if name not in self.presets:
            raise ConfigError(f"unknown {self.kind} preset '{name}'{suggest(name, self.presets)}; "
                              f"known: {', '.join(sorted(self.presets))}")
        cfg = self.presets[name]()
        return cfg.override(overrides) if overrides else cfg

    def resolve(self, name_or_config, **overrides: Any):
        """A config from a preset name or a config of this family, with overrides applied."""
        if isinstance(name_or_config, self.config_class):
            return name_or_config.override(overrides) if overrides else name_or_config
        return self.config(name_or_config, **overrides)

    def dump(self, configs_dir) -> list[Path]:
        """Write every preset as YAML; returns the paths written."""
        written = []
        for name, make in self.presets.items():
            path = Path(configs_dir) / ("tiny" if name.startswith("tiny-") else self.folder) / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {self.kind} preset '{name}': {make.__doc__.splitlines()[0]}\n" + make().to_yaml())
            written.append(path)
        return written


TOKENIZERS = PresetFamily("tokenizer", TokenizerConfig, "tokenizer")
TOKENIZER_PRESETS = TOKENIZERS.presets
tokenizer_preset = TOKENIZERS.register


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


QUICKSTART_SCALES = (1, 2, 4, 8)


@tokenizer_preset("quickstart-var-vqvae")
def _quickstart_var_vqvae() -> TokenizerConfig:
    """The quickstart's tokenizer, sized for minutes of CPU: 16 px → 8×8 latent (downsampling 2), scales
    (1, 2, 4, 8), V=512, C=16, EMA codes with scale-aware dead-code restart."""
    return TokenizerConfig(
        image_size=16, latent_channels=16,
        encoder=ConvEncoderConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1),
        quantizer=QuantizerConfig(kind="msrq", codebook_size=512, scales=QUICKSTART_SCALES, ema_decay=0.9,
                                  dead_code_threshold=0.1),
    )


@tokenizer_preset("var-vqvae-32")
def _var_vqvae_32() -> TokenizerConfig:
    """A multi-scale tokenizer for 32 px images (Fashion-MNIST, CIFAR-sized crops): 8x8 latent of C=16,
    scales (1, 2, 4, 8) = 85 tokens, V=512 EMA codes. A light conv body (0.4 M parameters: no
    full-resolution or middle blocks, widths 16/32/64) for CPU minutes; standardised per-scale lookups,
    scale-aware dead-code restart and prefix dropout (configs/recipes/fashion-mnist-tokenizer.yaml)."""
    return TokenizerConfig(
        image_size=32, latent_channels=16,
        encoder=ConvEncoderConfig(ch=16, ch_mult=(1, 2, 4), level_blocks=(0, 1, 2), attn_levels=(), mid=False,
                                  mid_attn=False, norm_groups=8),
        quantizer=QuantizerConfig(kind="msrq", codebook_size=512, scales=QUICKSTART_SCALES, ema_decay=0.99,
                                  dead_code_threshold=0.1, scale_norm=True, prefix_dropout=0.03),
    )


def tokenizer_config(name: str, **overrides: Any) -> TokenizerConfig:
    """The preset ``name`` with dotted overrides applied (``{"quantizer.codebook_size": 512}``)."""
    return TOKENIZERS.config(name, **overrides)




def dump_tokenizer_presets(configs_dir) -> list:
    """Write every tokenizer preset as YAML: ``configs/tokenizer/<name>.yaml``, tiny twins under
    ``configs/tiny/``. Returns the paths written."""
    return TOKENIZERS.dump(configs_dir)


# ---------------------------------------------------------------------------------------------------------
# Generator presets (VAR transformers)
# ---------------------------------------------------------------------------------------------------------

GENERATORS = PresetFamily("generator", GeneratorConfig, "generator")
GENERATOR_PRESETS = GENERATORS.presets
generator_preset = GENERATORS.register


def _var(depth: int, *, shared_adaln: bool = False, scales: tuple[int, ...] = VAR_SCALES_256) -> GeneratorConfig:
    """VAR's ``build_vae_var``: width 64·depth, heads = depth, drop path 0.1·depth/24, ImageNet classes."""
    return GeneratorConfig(
        num_classes=1000, codebook_size=4096, latent_channels=32, scales=scales, block_unit="scale",
        depth=depth, embed_dim=64 * depth, num_heads=depth, mlp_ratio=4.0, shared_adaln=shared_adaln,
        attention_l2_norm=True, class_dropout=0.1, drop_path=0.1 * depth / 24,
    )


def _register_var_256(depth: int) -> None:
    def make() -> GeneratorConfig:
        return _var(depth)

    make.__doc__ = f"VAR-d{depth}: the released 256 px next-scale transformer (pairs with var-vqvae-f16)."
    generator_preset(f"var-d{depth}")(make)


for _depth in (16, 20, 24, 30):
    _register_var_256(_depth)


@generator_preset("var-d36")
def _var_d36() -> GeneratorConfig:
    """VAR-d36 with shared AdaLN on the 512 px schedule (pairs with var-vqvae-f16-512)."""
    return _var(36, shared_adaln=True, scales=VAR_SCALES_512)


@generator_preset("tiny-var")
def _tiny_var() -> GeneratorConfig:
    """Tiny twin of the VAR transformers for CPU tests: width 32, 2 blocks, scales (1, 2, 4), V=64, 10 classes
    (pairs with tiny-var-vqvae)."""
    return GeneratorConfig(
        num_classes=10, codebook_size=64, latent_channels=8, scales=(1, 2, 4), block_unit="scale",
        depth=2, embed_dim=32, num_heads=2, mlp_ratio=4.0, class_dropout=0.1,
    )


@generator_preset("tiny-raster")
def _tiny_raster() -> GeneratorConfig:
    """Tiny raster-order generator, one token per step over a 4x4 map (pairs with tiny-vq)."""
    return _tiny_var().replace(scales=(4,), block_unit="token")


@generator_preset("quickstart-var")
def _quickstart_var() -> GeneratorConfig:
    """The quickstart's generator: 4 blocks of width 128 over quickstart-var-vqvae's 4 scales, 10 classes."""
    return GeneratorConfig(
        num_classes=10, codebook_size=512, latent_channels=16, scales=QUICKSTART_SCALES, block_unit="scale",
        depth=4, embed_dim=128, num_heads=4, mlp_ratio=4.0, class_dropout=0.1,
    )


def generator_config(name: str, **overrides: Any) -> GeneratorConfig:
    """The generator preset ``name`` with overrides applied (``{"depth": 4}``)."""
    return GENERATORS.config(name, **overrides)




def dump_generator_presets(configs_dir) -> list:
    """Write every generator preset as YAML: ``configs/generator/<name>.yaml``, tiny twins under
    ``configs/tiny/``. Returns the paths written."""
    return GENERATORS.dump(configs_dir)


# ---------------------------------------------------------------------------------------------------------
# Tokenizers with ViT-family encoders (artok/encoders/vit.py, token_merge.py, mixed_scale.py, quadtree.py,
# super_token.py, visual_transformer.py, token_learner.py, context_cluster.py): tiny multi-scale tokenizers
# for CPU tests, one per encoder kind
# ---------------------------------------------------------------------------------------------------------

_TINY_VIT = dict(patch_size=8, width=32, depth=2, num_heads=2)


def _tiny_var_with(encoder) -> TokenizerConfig:
    return TokenizerConfig(
        image_size=32, latent_channels=8, encoder=encoder,
        quantizer=QuantizerConfig(kind="msrq", codebook_size=64, scales=(1, 2, 4), share_quant_resi=3),
    )


@tokenizer_preset("tiny-var-vit")
def _tiny_var_vit() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a ViT encoder and decoder: 32 px, patch 8, scales (1, 2, 4), V=64."""
    return _tiny_var_with(ViTEncoderConfig(**_TINY_VIT))


@tokenizer_preset("tiny-var-tome")
def _tiny_var_tome() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a token-merging (ToMe) ViT encoder merging 2 tokens per layer."""
    return _tiny_var_with(TokenMergeEncoderConfig(**_TINY_VIT, merge_per_layer=2))


@tokenizer_preset("tiny-var-msvit")
def _tiny_var_msvit() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a mixed-scale gated (MSViT) encoder: 16 px coarse, 8 px fine patches."""
    return _tiny_var_with(MixedScaleEncoderConfig(**_TINY_VIT, coarse_factor=2, gate_hidden=16))


@tokenizer_preset("tiny-var-quadtree")
def _tiny_var_quadtree() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a quadtree (Quadformer) encoder: 8-32 px patches, at most 10 tokens."""
    return _tiny_var_with(QuadtreeEncoderConfig(**_TINY_VIT, levels=2, token_budget=10))


@tokenizer_preset("tiny-var-stvit")
def _tiny_var_stvit() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a super-token (STViT) encoder: one super token per 2x2 tokens."""
    return _tiny_var_with(SuperTokenEncoderConfig(**_TINY_VIT, super_token_size=2))


@tokenizer_preset("tiny-var-vt")
def _tiny_var_vt() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a Visual Transformer encoder: 4 visual tokens, recurrent tokenizer."""
    return _tiny_var_with(VisualTransformerEncoderConfig(**_TINY_VIT, num_tokens=4, recurrent=True))


@tokenizer_preset("tiny-var-tokenlearner")
def _tiny_var_tokenlearner() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a TokenLearner + TokenFuser encoder: 4 tokens after the first block."""
    return _tiny_var_with(TokenLearnerEncoderConfig(**_TINY_VIT, num_tokens=4, learner_position=1))


@tokenizer_preset("tiny-var-coc")
def _tiny_var_coc() -> TokenizerConfig:
    """Tiny multi-scale tokenizer with a Context Clusters encoder: one centre per 2x2 region of points."""
    return _tiny_var_with(ContextClusterEncoderConfig(**_TINY_VIT, region_size=2, centres_per_side=1))


# ---------------------------------------------------------------------------------------------------------
# HART: hybrid tokenizers and transformers (artok/tokenizers/hybrid.py, artok/models/hart.py)
# ---------------------------------------------------------------------------------------------------------

@tokenizer_preset("hart-tokenizer-1024")
def _hart_tokenizer_1024() -> TokenizerConfig:
    """HART's hybrid tokenizer at 1024 px: VAR's body (ch 160, C=32, V=4096) on 14 scales plus the residual."""
    var = _var_vqvae_f16()
    return var.replace(image_size=1024, quantizer=var.quantizer.replace(kind="hybrid", scales=HART_SCALES_1024))


@tokenizer_preset("tiny-hart-tokenizer")
def _tiny_hart_tokenizer() -> TokenizerConfig:
    """Tiny twin of hart-tokenizer-1024 for CPU tests: 32 px, scales (1, 2, 4), V=64, C=8, hybrid."""
    tiny = _tiny_var_vqvae()
    return tiny.replace(quantizer=tiny.quantizer.replace(kind="hybrid"))


HARTS = PresetFamily("HART", HartConfig, "hart")
HART_PRESETS = HARTS.presets
hart_preset = HARTS.register


@hart_preset("hart-t2i-d24-1024")
def _hart_t2i_d24() -> HartConfig:
    """HART-0.7B-sized text-to-image transformer at 1024 px: depth 24, width 1536, Qwen2 context (1536-d, 300
    tokens), shared-table AdaLN, diffusion MLP 1024x6 (an inferred candidate; converted checkpoints take
    their config.json)."""
    return HartConfig(
        codebook_size=4096, latent_channels=32, scales=HART_SCALES_1024, depth=24, embed_dim=1536, num_heads=24,
        context_dim=1536, max_context_tokens=300, adaln="shared_table", attention_l2_norm=False,
        diffusion_head=DiffusionHeadConfig(latent_channels=32, condition_dim=1536, width=1024, depth=6),
    )


@hart_preset("hart-c2i-d20-256")
def _hart_c2i_d20() -> HartConfig:
    """Class-conditional HART on ImageNet 256 px (the paper's setting, never released): VAR-d20 sizes on VAR's
    256 px schedule with a hybrid tokenizer, pooled AdaLN, diffusion MLP 1024x6."""
    return HartConfig(
        codebook_size=4096, latent_channels=32, scales=VAR_SCALES_256, depth=20, embed_dim=1280, num_heads=20,
        context_dim=0, num_classes=1000, adaln="pooled", attention_l2_norm=True, min_kept_tokens=32,
        diffusion_head=DiffusionHeadConfig(latent_channels=32, condition_dim=1280, width=1024, depth=6),
    )


@hart_preset("tiny-hart-c2i")
def _tiny_hart_c2i() -> HartConfig:
    """Tiny class-conditional HART for CPU tests: width 32, 2 blocks, scales (1, 2, 4), V=64, 10 classes
    (pairs with tiny-hart-tokenizer)."""
    return HartConfig(
        codebook_size=64, latent_channels=8, scales=(1, 2, 4), depth=2, embed_dim=32, num_heads=2,
        context_dim=0, num_classes=10, adaln="pooled", attention_l2_norm=True, min_kept_tokens=4,
        diffusion_head=DiffusionHeadConfig(latent_channels=8, condition_dim=32, width=32, depth=2),
    )


@hart_preset("tiny-hart-t2i")
def _tiny_hart_t2i() -> HartConfig:
    """Tiny text-to-image HART for CPU tests: 16-d context of up to 8 tokens, shared-table AdaLN, context norm."""
    return _tiny_hart_c2i().replace(num_classes=0, context_dim=16, max_context_tokens=8, context_norm=True,
                                    adaln="shared_table", attention_l2_norm=False)


@hart_preset("quickstart-hart")
def _quickstart_hart() -> HartConfig:
    """quickstart-var's HART twin, on a hybrid quickstart-var-vqvae: 4 Llama blocks of width 128 over scales
    (1, 2, 4, 8), V=512, C=16, 10 classes, pooled AdaLN, a diffusion MLP of width 128 x 2 for the residual
    (benchmarks/var_vs_hart.py trains the two side by side)."""
    return HartConfig(
        codebook_size=512, latent_channels=16, scales=QUICKSTART_SCALES, depth=4, embed_dim=128, num_heads=4,
        context_dim=0, num_classes=10, adaln="pooled", attention_l2_norm=True, min_kept_tokens=16,
        train_top_k=0, train_top_p=0.0,
        diffusion_head=DiffusionHeadConfig(latent_channels=16, condition_dim=128, width=128, depth=2),
    )


def hart_config(name: str, **overrides: Any) -> HartConfig:
    """The HART preset ``name`` with dotted overrides applied (``{"depth": 4}``)."""
    return HARTS.config(name, **overrides)




def dump_hart_presets(configs_dir) -> list:
    """Write every HART preset as YAML: ``configs/hart/<name>.yaml``, tiny twins under ``configs/tiny/``."""
    return HARTS.dump(configs_dir)
