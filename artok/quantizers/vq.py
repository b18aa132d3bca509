"""Single-scale vector quantiser (VQ-VAE, van den Oord et al., 2017; VQGAN, Esser et al., 2021).

One token per latent cell in raster order. With ``l2_norm`` both the latent vectors and the codes are
l2-normalised before matching and the normalised code is returned (ViT-VQGAN, LlamaGen). For
autoregressive generation every token is its own block, so the next-scale transformer becomes a
raster-order generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.quantizers.codebook import Codebook, batch_statistics
from artok.quantizers.output import QuantizerOutput


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser on a (B, C, s, s) latent; ``scales`` is ``(s,)``."""

    def __init__(
        self,
        *,
        codebook_size: int,
        dim: int,
        scales: tuple[int, ...],
        beta: float = 0.25,
        l2_norm: bool = False,
        ema_decay: float | None = None,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        if len(scales) != 1:
            raise ValueError(f"VectorQuantizer takes one scale, got {tuple(scales)}")
        self.scales = (int(scales[0]),)
        self.codebook_size, self.dim, self.beta, self.l2_norm = codebook_size, dim, beta, l2_norm
        self.codebook = Codebook(
            codebook_size=codebook_size, dim=dim, l2_norm=l2_norm, ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold, num_scales=1, usage_decay=usage_decay,
        )

    @property
    def num_scales(self) -> int:
        return 1

    @property
    def block_sizes(self) -> list[int]:
        """Raster order: every token is its own autoregressive block."""
        return [1] * self.num_tokens

    @property
    def num_tokens(self) -> int:
        return self.scales[0] ** 2

    def _check_latent(self, f: torch.Tensor) -> None:
        s = self.scales[0]
        if f.ndim != 4 or f.shape[1] != self.dim or tuple(f.shape[2:]) != (s, s):
            raise ValueError(f"latent of shape {tuple(f.shape)} does not fit the quantizer: expected (B, {self.dim}, {s}, {s})")

    def _check_ids(self, ids: list[torch.Tensor]) -> torch.Tensor:
        if len(ids) != 1 or ids[0].ndim != 2 or ids[0].shape[1] != self.num_tokens:
            shapes = [tuple(i.shape) for i in ids]
            raise ValueError(f"expected ids as one tensor of shape (B, {self.num_tokens}), got {shapes}")
        idx = ids[0]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
            raise ValueError(
                f"ids range over [{int(idx.min())}, {int(idx.max())}], outside the codebook [0, {self.codebook_size - 1}]"
            )
        return idx

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors as the decoder sees them: (...) → (..., C)."""
        e = self.codebook(ids)
        return F.normalize(e, dim=-1) if self.l2_norm else e

    def _to_grid(self, vectors: torch.Tensor) -> torch.Tensor:
        s = self.scales[0]
        return rearrange(vectors, "b (h w) c -> b c h w", h=s, w=s)

    @torch.no_grad()
    def quantize(self, f: torch.Tensor) -> list[torch.Tensor]:
        self._check_latent(f)
        z = rearrange(f.float(), "b c h w -> (b h w) c")
        return [self.codebook.nearest(z).view(f.shape[0], self.num_tokens)]

    @torch.no_grad()
    def cumulative_latents(self, f: torch.Tensor) -> list[torch.Tensor]:
        return [self.ids_to_latent(self.quantize(f))]

    def forward(self, f: torch.Tensor) -> QuantizerOutput:
        """f: (B, C, s, s) → straight-through quantised latent, ids [(B, s*s)], losses."""
        self._check_latent(f)
        in_dtype = f.dtype
        with torch.autocast(device_type=f.device.type, enabled=False):
            z = rearrange(f.float(), "b c h w -> (b h w) c")  # (B*s*s, C)
            if self.l2_norm:
                z = F.normalize(z, dim=-1)
            idx = self.codebook.nearest(z)
            q = self.embed(idx)
            commitment = F.mse_loss(q.detach(), z) * self.beta
            codebook = F.mse_loss(q, z.detach())
            q = z + (q - z).detach()  # straight-through estimator
            if self.training:
                hits = torch.bincount(idx, minlength=self.codebook_size).float()[None]
                assigned = None
                if self.codebook.ema_decay is not None:
                    assigned = z.new_zeros(self.codebook_size, self.dim).index_add_(0, idx, z.detach())
                self.codebook.update(hits, assigned, z.detach())
        ids = idx.view(f.shape[0], self.num_tokens)
        quantized = self._to_grid(q.view(f.shape[0], self.num_tokens, self.dim)).to(in_dtype)
        losses = {"commitment": commitment}
        if self.codebook.ema_decay is None:
            losses["codebook"] = codebook
        return QuantizerOutput(quantized=quantized, ids=[ids], losses=losses,
                               stats=batch_statistics(ids, self.codebook_size), inputs=[z])

    def ids_to_latent(self, ids: list[torch.Tensor], *, progressive: bool = False) -> torch.Tensor:
        """(B, C, s, s) from ids [(B, s*s)]."""
        return self._to_grid(self.embed(self._check_ids(ids)))

    def teacher_inputs(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Raster teacher forcing: token i is predicted from the codes of tokens < i. (B, L − 1, C)."""
        return self.embed(self._check_ids(ids)[:, :-1])

    def autoregressive_step(self, si: int, f_hat: torch.Tensor | None, ids: torch.Tensor, *,
                            codes: torch.Tensor | None = None):
        """Write token si (ids: (B, 1)) into the latent canvas; return (canvas, next input (B, 1, C) or
        None after the last token). ``codes`` (B, 1, C), when given, replaces the code vector of ``ids``."""
        e = self.embed(ids) if codes is None else codes  # (B, 1, C)
        if f_hat is None:
            f_hat = e.new_zeros(ids.shape[0], self.dim, self.scales[0], self.scales[0])
        f_hat = f_hat.clone()
        row, col = divmod(si, self.scales[0])
        f_hat[:, :, row, col] = e[:, 0]
        return f_hat, (None if si == self.num_tokens - 1 else e)
