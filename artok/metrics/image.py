"""Pixel-space reconstruction metrics: PSNR and SSIM (Wang et al., 2004), per image."""
from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5  # Wang et al.'s Gaussian window; 11 taps (radius 3.5 σ, as scikit-image)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak = full range): (B, 3, H, W) → (B,)."""
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (_to_unit(x) - _to_unit(y)).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(channels: int, device) -> torch.Tensor:
    radius = int(3.5 * SSIM_SIGMA + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-t.square() / (2 * SSIM_SIGMA ** 2))
    g = (g / g.sum()).float()
    return (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()  # (C, 1, k, k)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity of images in [-1, 1], Gaussian-weighted, averaged over channels and the
    positions whose window fits inside the image (scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False, data_range=1``): (B, 3, H, W) → (B,).
    torchmetrics' ``structural_similarity_index_measure`` also averages the border of a reflect-padded image
    (about 1e-3 apart on 32 px images); over the inner positions of its SSIM map it equals this
    (tests/test_metrics_crosscheck.py)."""
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    x, y = _to_unit(x), _to_unit(y)
    C = x.shape[1]
    window = _gaussian_window(C, x.device)
    if min(x.shape[-2:]) < window.shape[-1]:
        raise ValueError(f"ssim needs images of at least {window.shape[-1]} px, got {tuple(x.shape[-2:])}")

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=C)  # valid positions only

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)
