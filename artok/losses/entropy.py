"""Codebook entropy regulariser (MaskGIT/MAGVIT-v2 style): confident per-vector assignments, spread over
the whole codebook.

loss = mean_i H(p_i) − H(mean_i p_i), with p_i = softmax(−‖z_i − e‖² / (τ·d̄)) where d̄ is the batch's mean
squared distance (detached), so τ means the same whatever the scale of the latent; with cosine codes,
p_i = softmax(cos(z_i, e) / τ). Lowering it sharpens each vector's code choice (first term) while pushing the
batch to use many codes (second term), which is what keeps the coarse scales of a multi-scale tokenizer
from collapsing onto a few codes. (A fixed temperature on raw distances saturates the softmax as soon as
the latent grows, and the gradient vanishes: the 1x1 scale's inputs of a trained tokenizer sit ~9 squared
units from every code.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy_regularizer(z: torch.Tensor, codebook: torch.Tensor, *, temperature: float = 0.01,
                        l2_norm: bool = False) -> torch.Tensor:
    """z: (N, C) vectors, codebook: (V, C) → scalar, computed in fp32."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, e = z.float(), codebook.float()
        if l2_norm:
            logits = F.normalize(z, dim=-1) @ F.normalize(e, dim=-1).T / temperature  # (N, V)
        else:
            d = z.square().sum(1, keepdim=True) + e.square().sum(1) - 2 * z @ e.T  # (N, V)
            logits = -d / (temperature * d.mean().detach().clamp_min(1e-12))
        p = logits.softmax(-1)
        log_p = logits.log_softmax(-1)
        per_vector = -(p * log_p).sum(-1).mean()
        mean_p = p.mean(0)
        codebook_entropy = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
        return per_vector - codebook_entropy
