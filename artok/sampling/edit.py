"""Masks for zero-shot editing (``artok.sampling.edit``; VAR's in- and out-painting, class-conditional edits): the mask's white pixels are
generated, the rest is teacher-forced from the input image at every scale.

A token of scale k is sampled when more than half of its cell of the pn_k × pn_k grid is white, and kept
(taken from the input's ids) otherwise. Scales are residuals of one another, so keeping the coarse cells that
the mask only grazes keeps the input's colours and layout around the hole; a rule that regenerated every cell
the mask touches would redraw the whole 1x1 and 2x2 scales for any mask, and the kept fine residuals would
then sit on another image's base. For a hybrid (HART)
tokenizer the continuous residual is kept the same way at the latent's resolution. An all-black mask returns
the input's ids; an all-white mask is ordinary sampling with the same seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from artok.sampling.forcing import Forced


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A (B, 1, H, W) bool mask (True: generate) from (H, W), (1, H, W), (B, H, W) or (B, 1, H, W) values
    in {0, 1} (bool, int or float); anything else is a ValueError naming the problem."""
    B, _, H, W = images.shape
    if not torch.is_tensor(mask):
        raise ValueError(f"mask must be a tensor, got {type(mask).__name__}")
    m = mask
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None] if m.shape[0] == B and m.shape[0] != 1 else m[None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"mask must have one channel, (H, W), (B, H, W) or (B, 1, H, W); got {tuple(mask.shape)}")
    if m.shape[-2:] != (H, W):
        raise ValueError(f"mask is {m.shape[-2]}x{m.shape[-1]} pixels, the images {H}x{W}")
    if m.shape[0] not in (1, B):
        raise ValueError(f"mask has batch {m.shape[0]}, the images {B}")
    values = m.float()
    if not torch.all((values == 0) | (values == 1)):
        raise ValueError("mask must be binary: 1 (white) where to generate, 0 (black) where to keep the input")
    return values.expand(B, 1, H, W) > 0.5


def keep_masks(mask: torch.Tensor, scales) -> list[torch.Tensor]:
    """Per scale, (B, pn²) bool in raster order: True (keep the input's id) where at most half the cell is
    white."""
    return [(F.adaptive_avg_pool2d(mask.float(), pn) <= 0.5).flatten(1) for pn in scales]


@torch.no_grad()
def edit_forcing(tok, images: torch.Tensor, mask: torch.Tensor) -> Forced:
    """What ``artok.sampling.edit`` forces: the input's ids (and residual) outside the mask, at every scale."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    size = tok.config.image_size
    if images.shape[-2:] != (size, size):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]}; the tokenizer takes {size}x{size}")
    m = check_mask(mask, images)
    images = images.to(next(tok.parameters()).device)
    if tok.is_hybrid:
        ids, residual = tok.tokenize_hybrid(images)
        H = tok.scales[-1]
        latent_keep = keep_masks(m, [H])[0].view(-1, 1, H, H)
        return Forced(ids=ids, keep=keep_masks(m, tok.scales), residual=residual, residual_keep=latent_keep)
    return Forced(ids=tok.tokenize(images), keep=keep_masks(m, tok.scales))
