"""HART's hybrid tokenizer (Tang et al., 2024, arXiv 2410.10812): VAR's multi-scale discrete tokens plus a
continuous residual token map, decoded by one decoder that learns both latents.

``tokenize`` gives the discrete ids as for VAR, ``residual`` the continuous part, and ``detokenize(ids,
residual)`` decodes the hybrid latent (equal to the encoder's latent) or, without a residual, the
discrete-only latent. Training follows HART's recipe: start from a trained VAR tokenizer, freeze the encoder
and the codebook, and fine-tune the decoder on both latents (``skip_continuous_prob``).
"""
from __future__ import annotations

import torch

from artok.config import ConfigError, TokenizerConfig
from artok.checkpoint import register_model_type
from artok.quantizers.hybrid import HybridQuantizer
from artok.tokenizers.tokenizer import Tokenizer, TokenizerOutput


@register_model_type
class HybridTokenizer(Tokenizer):
    """Images (B, 3, H, W) in [-1, 1] ↔ ids per scale + a continuous residual (B, C, h, w)."""

    model_type = "hybrid_tokenizer"
    is_hybrid = True
    config_class = TokenizerConfig
    quantizer: HybridQuantizer

    def __init__(self, config: TokenizerConfig) -> None:
        if config.quantizer.kind != "hybrid":
            raise ConfigError(f"HybridTokenizer needs quantizer.kind 'hybrid', got '{config.quantizer.kind}'")
        super().__init__(config)

    # -- hybrid API ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def residual(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → continuous residual (B, C, h, w): f minus the discrete part with
        no φ on the last scale, as HART does."""
        return self.quantizer.residual(self.encode(images))

    @torch.no_grad()
    def tokenize_hybrid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """images → (ids per scale, residual (B, C, h, w)) from one encoder pass."""
        ids, _, residual = self.quantizer.split(self.encode(images))
        return ids, residual

    def ids_to_latent(self, ids: list[torch.Tensor], *, progressive: bool = False,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
        """f̂ (B, C, h, w): discrete-only (VAR's rule, φ on every scale) without ``residual``, HART's hybrid
        latent (no φ on the last scale, plus the residual) with it."""
        if residual is None:
            return super().ids_to_latent(ids, progressive=progressive)
        if progressive:
            raise ValueError("progressive decoding is discrete-only; pass residual=None")
        return self.quantizer.hybrid_latent(ids, residual)

    @torch.no_grad()
    def detokenize(self, ids: list[torch.Tensor], residual: torch.Tensor | None = None) -> torch.Tensor:
        """ids of every scale (+ residual (B, C, h, w)) → images (B, 3, H, W) in [-1, 1]. Without a residual
        this is the discrete-only decoding."""
        if len(ids) != len(self.scales):
            raise ValueError(f"detokenize needs ids for all {len(self.scales)} scales {self.scales}, got {len(ids)}")
        return self.decode(self.ids_to_latent(ids, residual=residual))

    def autoregressive_step(self, si: int, f_hat: torch.Tensor | None, ids: torch.Tensor, *,
                            codes: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """Add block si's ids to the running latent; on the last scale a ``residual`` (B, C, h, w) makes it
        HART's hybrid step (no φ). Returns (f̂, next block's input or None)."""
        return self.quantizer.autoregressive_step(si, f_hat, ids, codes=codes, residual=residual)

    # -- training -----------------------------------------------------------------------------------------
    def freeze(self, *, encoder: bool = True, codebook: bool = True) -> "HybridTokenizer":
        """Freeze the encoder (with ``quant_conv``) and/or the codebook, as HART fine-tunes its hybrid
        decoder from a trained VAR tokenizer (``freeze_codebook_for_hybrid``). φ and the decoder stay
        trainable. Returns self."""
        if encoder:
            for p in (*self.encoder.parameters(), *self.quant_conv.parameters()):
                p.requires_grad_(False)
        if codebook:
            self.quantizer.codebook.embedding.weight.requires_grad_(False)
            self.quantizer.codebook.ema_decay = None  # no EMA updates
            self.quantizer.codebook.dead_code_threshold = 0.0  # and no restarts either
        return self

    def forward(self, images: torch.Tensor, *, skip_continuous_prob: float | None = None) -> TokenizerOutput:
        """Training forward: hybrid quantization (the residual is added back per sample with probability
        1 − ``skip_continuous_prob``) and the unclamped reconstruction."""
        f = self.encode(images)
        q = self.quantizer(f, skip_continuous_prob=skip_continuous_prob)
        rec = self.decoder(self.post_quant_conv(q.quantized))
        losses, stats = self.encoder_extras(q.losses, q.stats)
        return TokenizerOutput(reconstruction=rec, quantized=q.quantized, ids=q.ids, losses=losses, stats=stats,
                               quantizer_inputs=q.inputs)
