"""Pixel reconstruction losses (L1 as VQGAN/VAR train with, L2 as VQ-VAE did)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean L1 or L2 distance, computed in fp32. Both (B, 3, H, W)."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ in shape")
    reconstruction, target = reconstruction.float(), target.float()
    if kind == "l1":
        return F.l1_loss(reconstruction, target)
    if kind == "l2":
        return F.mse_loss(reconstruction, target)
    raise ValueError(f"reconstruction loss must be 'l1' or 'l2', got '{kind}'")
