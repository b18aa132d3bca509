"""HART's hybrid quantiser (Tang et al., 2024, arXiv 2410.10812, section 3.1): VAR's multi-scale residual
tokens plus one continuous residual token map.

The discrete part is VAR's residual loop. On the last scale the id is chosen on the remaining residual
``f_rest_last`` (no resampling) and the continuous residual is ``r = f_rest_last − e[id_last]``. The hybrid
latent rebuilds f exactly: ``Σ_{k<K−1} φ_k(up(e[ids_k])) + e[ids_last] + r``; the last scale gets *no* φ
(docs/reference-behaviour.md 5.1, quirk Q9). Discrete-only decoding keeps VAR's rule, φ on every scale.
"""
from __future__ import annotations

import torch
from einops import rearrange

from artok.quantizers.msrq import MultiScaleResidualQuantizer, area_downsample
from artok.quantizers.output import QuantizerOutput


class HybridQuantizer(MultiScaleResidualQuantizer):
    """``MultiScaleResidualQuantizer`` + HART's continuous residual (``HARTHybridQuantizer``).

    Args:
        skip_continuous_prob: in the training forward, the probability (per sample) that the continuous
            residual is *not* added back, so one decoder learns both the discrete-only latent and the hybrid
            one (which equals f). HART draws once per batch (``random.random() >= p``); per sample, every
            batch trains both latents. Other arguments: see ``MultiScaleResidualQuantizer``.
    """

    def __init__(self, *, skip_continuous_prob: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= skip_continuous_prob <= 1.0:
            raise ValueError(f"skip_continuous_prob must be in [0, 1], got {skip_continuous_prob}")
        self.skip_continuous_prob = skip_continuous_prob

    # -- checks -------------------------------------------------------------------------------------------
    def check_residual(self, residual: torch.Tensor, batch: int | None = None) -> None:
        """Raise ValueError unless residual is (B, C, H, W) with the latent's channels and side."""
        side = self.scales[-1]
        ok = isinstance(residual, torch.Tensor) and residual.ndim == 4 and tuple(residual.shape[1:]) == (
            self.dim, side, side)
        if ok and batch is not None and residual.shape[0] != batch:
            raise ValueError(f"residual has batch {residual.shape[0]} but the ids have batch {batch}")
        if not ok:
            shape = tuple(residual.shape) if isinstance(residual, torch.Tensor) else type(residual).__name__
            hint = ""
            if isinstance(residual, torch.Tensor) and residual.ndim == 3 and residual.shape[1:] == (side * side, self.dim):
                hint = " (looks like raster tokens (B, H*W, C): use rearrange(r, 'b (h w) c -> b c h w', h=H))"
            raise ValueError(f"residual of shape {shape} does not fit the quantizer: expected (B, {self.dim}, "
                             f"{side}, {side}){hint}")

    # -- the hybrid split -----------------------------------------------------------------------------------
    @torch.no_grad()
    def split(self, f: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """HART's ``img_to_idxBl_and_frest``: f (B, C, H, W) → (ids per scale, ``f_rest_last`` (B, C, H, W):
        the residual before the last scale's code is removed, continuous residual r = f_rest_last − e[id_last])."""
        self._check_latent(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.float()
            H = f.shape[-1]
            f_rest = f.clone()
            ids = []
            for si, pn in enumerate(self.scales[:-1]):
                z = rearrange(area_downsample(f_rest, pn), "b c h w -> (b h w) c")  # (B*pn*pn, C)
                idx = self.codebook.nearest(z).view(f.shape[0], pn * pn)
                f_rest = f_rest - self._code_map(idx, si, H)
                ids.append(idx)
            z = rearrange(f_rest, "b c h w -> (b h w) c")  # last scale: no resampling
            idx = self.codebook.nearest(z).view(f.shape[0], H * H)
            ids.append(idx)
            codes = rearrange(self.codebook(idx), "b (h w) c -> b c h w", h=H, w=H)
            residual = f_rest - codes  # no φ on the last scale in the hybrid path
        return ids, f_rest, residual

    @torch.no_grad()
    def residual(self, f: torch.Tensor) -> torch.Tensor:
        """The continuous residual r (B, C, H, W) of f: what the discrete tokens (no φ last) leave out."""
        return self.split(f)[2]

    def hybrid_latent(self, ids: list[torch.Tensor], residual: torch.Tensor) -> torch.Tensor:
        """f̂ = Σ_{k<K−1} φ(up(e[ids_k])) + e[ids_last] + r, as HART's generator assembles it: (B, C, H, W)."""
        self._check_ids(ids)
        self.check_residual(residual, ids[0].shape[0])
        H = self.scales[-1]
        f_hat = None
        for si in range(self.num_scales - 1):
            h = self._code_map(ids[si], si, H)
            f_hat = h if f_hat is None else f_hat + h
        last = rearrange(self.codebook(ids[-1]), "b (h w) c -> b c h w", h=H, w=H)
        return f_hat + last + residual

    # -- generation ---------------------------------------------------------------------------------------
    def autoregressive_step(self, si: int, f_hat: torch.Tensor | None, ids: torch.Tensor, *,
                            codes: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """VAR's step; with ``residual`` (B, C, H, W) on the last scale, HART's hybrid step instead:
        f̂ += e[ids] + residual with no φ (docs/reference-behaviour.md 5.4 step 5). ``codes`` replaces e[ids] (soft codes)."""
        if residual is None:
            if codes is None:
                return super().autoregressive_step(si, f_hat, ids)
            return super().autoregressive_step(si, f_hat, ids, codes=codes)
        if si != self.num_scales - 1:
            raise ValueError(f"a continuous residual belongs to the last scale ({self.num_scales - 1}), got scale {si}")
        self.check_residual(residual, ids.shape[0])
        H = self.scales[-1]
        vectors = self.codebook(ids) if codes is None else codes
        h = rearrange(vectors, "b (h w) c -> b c h w", h=H, w=H) + residual
        return (h if f_hat is None else f_hat + h), None

    # -- training -----------------------------------------------------------------------------------------
    def forward(self, f: torch.Tensor, *, skip_continuous_prob: float | None = None) -> QuantizerOutput:
        """Training forward (``HARTHybridQuantizer.forward``): VAR's loop with φ on every scale and its
        losses; then each sample gets its continuous residual f − f̂ back unless skipped (probability
        ``skip_continuous_prob``, default the constructor's), which makes its f̂ equal f. Straight-through."""
        p = self.skip_continuous_prob if skip_continuous_prob is None else skip_continuous_prob
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"skip_continuous_prob must be in [0, 1], got {p}")
        out = super().forward(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            quantized = out.quantized.float()
            f32 = f.float()
            # per sample: keep the continuous part with probability 1 − p (p = 0 and p = 1 are deterministic)
            keep = (torch.rand(f.shape[0], device=f.device) >= p) if 0.0 < p < 1.0 else \
                torch.full((f.shape[0],), p == 0.0, device=f.device, dtype=torch.bool)
            keep = keep.view(-1, 1, 1, 1).to(quantized.dtype)
            # discrete f̂ + (f − f̂).detach() is f̂'s straight-through twin with the residual added back
            quantized = quantized + keep * (f32 - quantized).detach()
        out.quantized = quantized.to(f.dtype)
        out.stats = {**out.stats, "continuous_fraction": keep.mean()}
        return out
