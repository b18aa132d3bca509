"""Codebook quantisers: single-scale VQ, VAR's multi-scale residual VQ, HART's hybrid."""
from artok.quantizers.codebook import Codebook
from artok.quantizers.msrq import MultiScaleResidualQuantizer, phi_index_per_scale
from artok.quantizers.output import QuantizerOutput
from artok.quantizers.vq import VectorQuantizer

__all__ = ["Codebook", "MultiScaleResidualQuantizer", "QuantizerOutput", "VectorQuantizer", "build_quantizer",
           "phi_index_per_scale"]


def build_quantizer(config, dim: int):
    """Quantizer module from a ``QuantizerConfig`` and the latent channel count."""
    common = dict(
        codebook_size=config.codebook_size, dim=dim, scales=config.scales, beta=config.beta,
        l2_norm=config.l2_norm, ema_decay=config.ema_decay, dead_code_threshold=config.dead_code_threshold,
        usage_decay=config.usage_decay,
    )
    if config.kind == "vq":
        return VectorQuantizer(**common)
    if config.kind == "msrq":
        return MultiScaleResidualQuantizer(**common, quant_resi=config.quant_resi,
                                           share_quant_resi=config.share_quant_resi, scale_norm=config.scale_norm,
                                           balance_scales=config.balance_scales, prefix_dropout=config.prefix_dropout,
                                           straight_through=config.straight_through)
    if config.kind == "hybrid":
        from artok.quantizers.hybrid import HybridQuantizer

        return HybridQuantizer(**common, quant_resi=config.quant_resi, share_quant_resi=config.share_quant_resi,
                               skip_continuous_prob=config.skip_continuous_prob)
    raise ValueError(f"unknown quantizer kind '{config.kind}'")
