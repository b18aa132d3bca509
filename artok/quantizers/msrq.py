"""VAR's multi-scale residual quantiser (Tian et al., 2024, arXiv 2404.02905, Algorithm 1).

A latent f (B, C, H, W) is quantised coarse to fine: at scale k the remaining residual is area-downsampled
to pn_k × pn_k, each cell takes its nearest code, the code map is bicubic-upsampled back to H × W, refined
by a shared convolution φ, and subtracted from the residual. The token map of scale k thus describes what
scales 0..k-1 missed. Notation follows docs/reference-behaviour.md, section 4.2.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.config.tokenizer import STRAIGHT_THROUGH, phi_index_per_scale
from artok.quantizers.codebook import Codebook, batch_statistics
from artok.quantizers.output import QuantizerOutput


def area_downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling to size × size (``F.interpolate`` mode 'area')."""
    return F.interpolate(x, size=(size, size), mode="area")


def bicubic_upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bicubic").contiguous()


class Phi(nn.Conv2d):
    """φ(h) = (1 − r)·h + r·conv3x3(h): VAR's quantisation-error refinement."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


class PhiSchedule(nn.Module):
    """K φ convolutions shared across the scales by position (``share_quant_resi``); identity when r ≈ 0."""

    def __init__(self, *, channels: int, ratio: float, count: int, num_scales: int) -> None:
        super().__init__()
        self.count = count
        self.convs = nn.ModuleList(
            [Phi(channels, ratio) if abs(ratio) > 1e-6 else nn.Identity() for _ in range(count)]
        )
        self.index = phi_index_per_scale(count, num_scales)

    def forward(self, h: torch.Tensor, scale_index: int) -> torch.Tensor:
        return self.convs[self.index[scale_index]](h)


class MultiScaleResidualQuantizer(nn.Module):
    """VAR's ``VectorQuantizer2``.

    Args:
        codebook_size, dim: V and C.
        scales: side lengths pn_k of the token maps, smallest first; the last is the latent side.
        beta: commitment weight.
        quant_resi, share_quant_resi: φ ratio r and the number of shared φ convs (0: one per scale).
        l2_norm: choose codes by cosine similarity (VAR's ``using_znorm``); code vectors are used as stored.
        ema_decay, dead_code_threshold, usage_decay: see ``Codebook``.
        scale_norm: each scale standardises its inputs before the lookup, (z − mean_s) / std_s, and adds
            ``mean_s + std_s · e`` (``scale_mean`` (S, C) and ``scale_std`` (S): running averages over training
            batches, identical on every process). The residuals shrink from scale to scale and the 1x1 inputs
            (image means) share one large offset, so without it the one shared codebook sits where the many
            fine-scale vectors are and the coarse scales pick a handful of codes; with it every scale's inputs
            are spread alike around zero and can share the codes.
        balance_scales: with EMA codes, every scale moves the codes as much as every other: a scale's
            vectors enter the running code means with weight ∝ 1 / (its vectors per step), so the 64 image
            means of a 1x1 scale pull the codes they choose as hard as the 4,096 vectors of an 8x8 one do (a
            k-means over the scales with equal weights). Without it the fine scales, having most vectors,
            pull every shared code to where they are and the coarse scales fall onto a few codes.
        prefix_dropout: in training, this fraction of the images is decoded from the first k scales only (k
            uniform in 1 .. K − 1; nested dropout): the decoder learns to draw what the coarse scales hold,
            and the encoder to put the image's layout there, which is what a next-scale generator starts
            from. The losses and codebook statistics still use every scale.
        straight_through: how the reconstruction's gradient crosses the quantiser. ``"global"`` (VAR): one
            straight-through estimator around the whole residual loop, f + sg(f̂ − f); φ (and learnt codes)
            see only the latent-space codebook loss. ``"per_scale"`` (vector-quantize-pytorch's
            ``HierarchicalVQ``): every scale's lookup is straight-through on its own and the residual keeps its
            gradient, so φ learns from the reconstruction loss too; commitment and codebook losses are then
            per scale, β·‖z_k − sg(e_k)‖² and ‖e_k − sg(z_k)‖² on the lookup's inputs. The forward values are
            the same in both.
    """

    def __init__(
        self,
        *,
        codebook_size: int,
        dim: int,
        scales: tuple[int, ...],
        beta: float = 0.25,
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        l2_norm: bool = False,
        ema_decay: float | None = None,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
        scale_norm: bool = False,
        balance_scales: bool = False,
        prefix_dropout: float = 0.0,
        straight_through: str = "global",
    ) -> None:
        super().__init__()
        if not 0.0 <= prefix_dropout < 1.0:
            raise ValueError(f"prefix_dropout must be in [0, 1), got {prefix_dropout}")
        if straight_through not in STRAIGHT_THROUGH:
            raise ValueError(f"straight_through must be one of {STRAIGHT_THROUGH}, got '{straight_through}'")
        self.straight_through = straight_through
        self.scales = tuple(int(s) for s in scales)
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.codebook = Codebook(
            codebook_size=codebook_size, dim=dim, l2_norm=l2_norm, ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold, num_scales=len(self.scales), usage_decay=usage_decay,
        )
        count = share_quant_resi if share_quant_resi > 0 else len(self.scales)
        self.phi = PhiSchedule(channels=dim, ratio=quant_resi, count=count, num_scales=len(self.scales))
        self.scale_norm, self.prefix_dropout = scale_norm, prefix_dropout
        if balance_scales and ema_decay is None:
            raise ValueError("balance_scales weights the EMA code updates: it needs ema_decay")
        self.balance_scales = balance_scales
        # EMA weight of one vector of each scale: the tokens of all scales divided equally among the scales,
        # so the weighted hits still sum to the batch's tokens
        self.scale_weights = (tuple(self.num_tokens / (len(self.scales) * pn * pn) for pn in self.scales)
                              if balance_scales else None)
        self.norm_decay = usage_decay
        if scale_norm:
            self.register_buffer("scale_mean", torch.zeros(len(self.scales), dim))
            self.register_buffer("scale_std", torch.ones(len(self.scales)))
            self.register_buffer("norm_updates", torch.zeros((), dtype=torch.long))

    # -- shapes -------------------------------------------------------------------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def block_sizes(self) -> list[int]:
        """Tokens per autoregressive block: one block per scale."""
        return [pn * pn for pn in self.scales]

    @property
    def num_tokens(self) -> int:
        return sum(self.block_sizes)

    def _check_latent(self, f: torch.Tensor) -> None:
        if f.ndim != 4 or f.shape[1] != self.dim or f.shape[2] != f.shape[3] or f.shape[-1] != self.scales[-1]:
            raise ValueError(
                f"latent of shape {tuple(f.shape)} does not fit the quantizer: expected (B, {self.dim}, "
                f"{self.scales[-1]}, {self.scales[-1]})"
            )

    def _check_ids(self, ids: list[torch.Tensor], *, all_scales: bool = True) -> None:
        n = len(ids)
        if (all_scales and n != self.num_scales) or not 1 <= n <= self.num_scales:
            want = f"{self.num_scales}" if all_scales else f"1 to {self.num_scales}"
            raise ValueError(f"expected ids for {want} scales of {self.scales}, got {n} tensors")
        for k, idx in enumerate(ids):
            if idx.ndim != 2 or idx.shape[1] != self.scales[k] ** 2:
                raise ValueError(f"ids of scale {k} have shape {tuple(idx.shape)}, expected (B, {self.scales[k] ** 2})")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
                raise ValueError(
                    f"ids of scale {k} range over [{int(idx.min())}, {int(idx.max())}], outside the codebook "
                    f"[0, {self.codebook_size - 1}]"
                )

    # -- the residual loop ------------------------------------------------------------------------------
    def _code_map(self, ids: torch.Tensor, si: int, size: int, codes: torch.Tensor | None = None) -> torch.Tensor:
        """φ(upsample(e[ids])): the contribution of scale si at full size. ids: (B, pn*pn) → (B, C, H, W).
        ``codes`` (B, pn*pn, C), when given, replaces the lookup e[ids]."""
        pn = self.scales[si]
        vectors = self.codebook(ids) if codes is None else codes
        h = rearrange(self._gain(vectors, si), "b (h w) c -> b c h w", h=pn, w=pn)
        if si != self.num_scales - 1:
            h = bicubic_upsample(h, size)
        return self.phi(h, si)

    # -- per-scale units (scale_norm) ---------------------------------------------------------------------
    def _gain(self, vectors: torch.Tensor, si: int) -> torch.Tensor:
        """Code vectors in the latent's units: mean + std · e with ``scale_norm``, as stored otherwise."""
        if not self.scale_norm:
            return vectors
        return self.scale_mean[si].to(vectors.dtype) + vectors * self.scale_std[si].to(vectors.dtype)

    def _units(self, z: torch.Tensor, si: int, *, center: bool = True) -> torch.Tensor:
        """A scale's input vectors (N, C) in codebook units, (z − mean) / std with ``scale_norm``
        (``center=False``: a difference of inputs, divided only)."""
        if not self.scale_norm:
            return z
        return ((z - self.scale_mean[si]) if center else z) / self.scale_std[si]

    @torch.no_grad()
    def _update_scale_norm(self, sums: torch.Tensor, sumsq: torch.Tensor, counts: torch.Tensor) -> None:
        """Running mean (per channel) and std (over channels) per scale from this step's sums (S, C), sums of
        squares (S,) and vector counts (S,), summed over processes in one collective, bias-corrected like
        the codebook's usage."""
        S, C = sums.shape
        total = self.codebook.sync.all_reduce_sum(torch.cat([sums.reshape(-1), sumsq, counts]).double())
        n_vec = total[S * C + S:].clamp_min(1)
        mean = total[: S * C].view(S, C) / n_vec[:, None]
        var = (total[S * C: S * C + S] / (n_vec * C) - mean.square().mean(1)).clamp_min(1e-12)
        n = int(self.norm_updates)
        decay = min(self.norm_decay, n / (n + 1.0))
        device = self.scale_std.device
        # new tensors, not in-place updates: this step's graph still holds the old units for backward
        self.scale_mean = self.scale_mean * decay + mean.float().to(device) * (1.0 - decay)
        self.scale_std = self.scale_std * decay + var.sqrt().float().to(device) * (1.0 - decay)
        self.norm_updates += 1

    def _residual_loop(self, f: torch.Tensor, *, keep_fhats: bool = False):
        """Run the loop of docs/reference-behaviour.md 4.2.3 on f (fp32). Returns ids per scale, f̂ after each scale (or only the last), the
        per-scale inputs z that chose the codes (for codebook statistics)."""
        H = f.shape[-1]
        f_rest = f.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        ids, fhats, inputs = [], [], []
        for si, pn in enumerate(self.scales):
            z = area_downsample(f_rest, pn) if si != self.num_scales - 1 else f_rest
            z = self._units(rearrange(z, "b c h w -> (b h w) c"), si)  # (B*pn*pn, C), raster order
            idx = self.codebook.nearest(z).view(f.shape[0], pn * pn)
            h = self._code_map(idx, si, H)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            ids.append(idx)
            inputs.append(z)
            fhats.append(f_hat if keep_fhats or si == self.num_scales - 1 else None)
        return ids, fhats, inputs

    @torch.no_grad()
    def quantize(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Token ids of f, per scale (B, pn*pn). Never updates statistics."""
        self._check_latent(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            ids, _, _ = self._residual_loop(f.float())
        return ids

    @torch.no_grad()
    def cumulative_latents(self, f: torch.Tensor) -> list[torch.Tensor]:
        """f̂ after each scale, (B, C, H, W) each: the reconstruction error shrinks down the list."""
        self._check_latent(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            _, fhats, _ = self._residual_loop(f.float(), keep_fhats=True)
        return fhats

    def forward(self, f: torch.Tensor) -> QuantizerOutput:
        """Training forward (docs/reference-behaviour.md 4.2.5). f: (B, C, H, W), any dtype; quantised in fp32.

        Losses: ``commitment`` = β·mean_k mse(sg(f̂_k), f) pulls the encoder, ``codebook`` =
        mean_k mse(f̂_k, sg(f)) pulls the codes (when not EMA) and φ. The output is straight-through.
        """
        self._check_latent(f)
        in_dtype = f.dtype
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.float()
            H = f.shape[-1]
            f_nograd = f.detach()
            f_rest = f_nograd.clone()
            f_hat = torch.zeros_like(f_rest)
            commitment = f.new_zeros(())
            codebook = f.new_zeros(())
            ids, inputs, fhats = [], [], []
            drop_prefixes = self.training and self.prefix_dropout > 0
            # f − sg(f): zero, but carries the gradient of the latent into each scale's input
            f_grad = f - f_nograd
            hits = f.new_zeros(self.num_scales, self.codebook_size)
            assigned = f.new_zeros(self.codebook_size, self.dim) if self.codebook.ema_decay is not None else None
            sums, sumsq = f.new_zeros(self.num_scales, self.dim), f.new_zeros(self.num_scales)
            counts = f.new_zeros(self.num_scales)
            per_scale = self.straight_through == "per_scale"
            rest = f if per_scale else f_rest  # per scale: the residual keeps the latent's gradient
            for si, pn in enumerate(self.scales):
                z = area_downsample(rest, pn) if si != self.num_scales - 1 else rest
                z = rearrange(z, "b c h w -> (b h w) c")  # (B*pn*pn, C)
                if self.scale_norm and self.training:
                    zd = z.detach()
                    sums[si], sumsq[si], counts[si] = zd.sum(0), zd.square().sum(), zd.shape[0]
                z = self._units(z, si)
                idx = self.codebook.nearest(z.detach())
                if self.training:
                    hits[si] = torch.bincount(idx, minlength=self.codebook_size).float()
                    if assigned is not None:
                        weighted = z.detach() if self.scale_weights is None else z.detach() * self.scale_weights[si]
                        assigned.index_add_(0, idx, weighted)
                codes = None
                if per_scale:
                    e = self.codebook(idx)
                    commitment = commitment + F.mse_loss(z, e.detach()) * self.beta
                    codebook = codebook + F.mse_loss(e, z.detach())
                    codes = (z + (e - z).detach()).view(f.shape[0], pn * pn, -1)  # the code's value, z's gradient
                    inputs.append(z)
                else:
                    grad_path = area_downsample(f_grad, pn) if si != self.num_scales - 1 else f_grad
                    inputs.append(z + self._units(rearrange(grad_path, "b c h w -> (b h w) c"), si, center=False))
                idx = idx.view(f.shape[0], pn * pn)
                h = self._code_map(idx, si, H, codes=codes)
                f_hat = f_hat + h
                rest = rest - (h if per_scale else h.detach())
                ids.append(idx)
                if not per_scale:
                    commitment = commitment + F.mse_loss(f_hat.detach(), f) * self.beta
                    codebook = codebook + F.mse_loss(f_hat, f_nograd)
                if drop_prefixes:
                    fhats.append(f_hat)
            commitment = commitment / self.num_scales
            codebook = codebook / self.num_scales
            decoded = self._prefix_dropout(fhats) if drop_prefixes else f_hat
            # global: one straight-through estimator; per scale: f̂ already carries the gradient
            quantized = decoded if per_scale else (decoded.detach() - f_nograd) + f
        if self.training:
            weights = None if self.scale_weights is None else torch.tensor(self.scale_weights)
            self.codebook.update(hits, assigned, [z.detach() for z in inputs], scale_weights=weights)
            if self.scale_norm:
                self._update_scale_norm(sums, sumsq, counts)
        stats = batch_statistics(torch.cat(ids, 1), self.codebook_size)
        return QuantizerOutput(
            quantized=quantized.to(in_dtype), ids=ids,
            losses={"commitment": commitment, "codebook": codebook}, stats=stats, inputs=inputs,
        )

    def _prefix_dropout(self, fhats: list[torch.Tensor]) -> torch.Tensor:
        """Per image: f̂ of all scales, or with probability ``prefix_dropout`` f̂ of the first k scales."""
        B, K = fhats[0].shape[0], len(fhats)
        device = fhats[0].device
        drop = torch.rand(B, device=device) < self.prefix_dropout
        kept = torch.randint(0, K - 1, (B,), device=device)  # index of the last kept scale
        last = torch.where(drop, kept, torch.full_like(kept, K - 1))
        stacked = torch.stack(fhats, 0)  # (K, B, C, H, W)
        return stacked[last, torch.arange(B, device=device)]

    # -- from ids -----------------------------------------------------------------------------------------
    def ids_to_latent(self, ids: list[torch.Tensor], *, progressive: bool = False) -> torch.Tensor:
        """f̂ from ids of the first len(ids) scales.

        progressive=False (VAR's ``all_to_max_scale``): Σ_k φ(up(e[ids_k])) at the full latent size,
        (B, C, H, W). progressive=True (VAR's experimental no-shape path): f̂ grows with the scales,
        f̂ ← up(f̂, pn_k) + φ(e[ids_k]) at native size, returning (B, C, pn, pn) of the last given scale.
        """
        self._check_ids(ids, all_scales=False)
        B, H = ids[0].shape[0], self.scales[-1]
        if progressive:
            f_hat = None
            for si, idx in enumerate(ids):
                pn = self.scales[si]
                h = rearrange(self._gain(self.codebook(idx), si), "b (h w) c -> b c h w", h=pn, w=pn)
                f_hat = h.new_zeros(B, self.dim, pn, pn) if f_hat is None else bicubic_upsample(f_hat, pn)
                f_hat = f_hat + self.phi(h, si)
            return f_hat
        f_hat = None
        for si, idx in enumerate(ids):
            h = self._code_map(idx, si, H)
            f_hat = h if f_hat is None else f_hat + h
        return f_hat

    def teacher_inputs(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Next-scale teacher-forcing input (VAR's ``idxBl_to_var_input``): for k = 1..K−1 the area-
        downsampled f̂ of scales < k at pn_k, flattened and concatenated: (B, L − pn_0², C)."""
        self._check_ids(ids)
        H = self.scales[-1]
        f_hat = None
        out = []
        for si in range(self.num_scales - 1):
            h = self._code_map(ids[si], si, H)
            f_hat = h if f_hat is None else f_hat + h
            nxt = area_downsample(f_hat, self.scales[si + 1])
            out.append(rearrange(nxt, "b c h w -> b (h w) c"))
        return torch.cat(out, dim=1)  # (B, L - pn_0², C)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors of ids: (...) → (..., C)."""
        return self.codebook(ids)

    def autoregressive_step(self, si: int, f_hat: torch.Tensor | None, ids: torch.Tensor, *,
                            codes: torch.Tensor | None = None):
        """One step of next-scale generation (VAR's ``get_next_autoregressive_input``).

        Adds the contribution of scale si's ids (B, pn_si²) to f̂ (None before the first step) and returns
        (f̂ (B, C, H, W), the next block's input (B, pn_{si+1}², C), or None after the last scale).
        ``codes`` (B, pn_si², C), when given, is used instead of the code vectors of ``ids`` (VAR's Gumbel
        "more smooth" sampling feeds soft mixtures of codes).
        """
        h = self._code_map(ids, si, self.scales[-1], codes)
        f_hat = h if f_hat is None else f_hat + h
        if si == self.num_scales - 1:
            return f_hat, None
        return f_hat, rearrange(area_downsample(f_hat, self.scales[si + 1]), "b c h w -> b (h w) c")
