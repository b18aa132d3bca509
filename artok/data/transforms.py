"""Resize, crop and flip for training images, driven by an explicit random generator.

Randomness comes from a ``torch.Generator`` seeded per (run seed, epoch, sample index), never from global
state, so an augmented sample is the same whichever worker or process loads it, and a resumed run sees
exactly the crops the uninterrupted run would have seen.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB image → (3, H, W) float in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return uint8_to_unit(torch.from_numpy(array.copy()).permute(2, 0, 1))  # (3, H, W)


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) → float in [-1, 1], the values ``pil_to_tensor`` gives."""
    return images.float().div_(127.5).sub_(1.0)


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class ImageTransform:
    """Shorter side → ``resize`` (bicubic), then a ``size`` × ``size`` crop, then an optional flip.

    Args:
        size: output side in pixels.
        resize: shorter side before cropping; None means ``size`` (the crop keeps the whole short side).
        crop: ``random`` or ``center``.
        horizontal_flip: flip half of the images left-right.
        pad_small: an image smaller than ``size`` on both sides is padded with black to size × size
            (centred) instead of upscaled: Fashion-MNIST's 28 px images become the usual 32 px ones.
    """

    def __init__(self, size: int, *, resize: int | None = None, crop: str = "center",
                 horizontal_flip: bool = False, pad_small: bool = False) -> None:
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got '{crop}'")
        self.size, self.resize = size, resize or size
        if self.resize < size:
            raise ValueError(f"resize {self.resize} is smaller than the crop size {size}")
        self.crop, self.horizontal_flip, self.pad_small = crop, horizontal_flip, pad_small

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """RGB image → (3, size, size) in [-1, 1]."""
        return uint8_to_unit(self.uint8(image, generator))

    def uint8(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """RGB image → (3, size, size) uint8: the same pixels and random draws as ``__call__``, left in 8 bits
        so that a batch is converted to floats in one operation (``collate`` does it)."""
        w, h = image.size
        if self.pad_small and w <= self.size and h <= self.size and (w, h) != (self.size, self.size):
            canvas = Image.new("RGB", (self.size, self.size), (0, 0, 0))
            canvas.paste(image.convert("RGB"), ((self.size - w) // 2, (self.size - h) // 2))
            image, (w, h) = canvas, canvas.size
        scale = self.resize / min(w, h)
        new_w, new_h = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.BICUBIC)
        if self.crop == "random" and generator is not None:
            left = int(torch.randint(0, new_w - self.size + 1, (), generator=generator))
            top = int(torch.randint(0, new_h - self.size + 1, (), generator=generator))
        else:
            left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
        # crop and flip as array views (the same pixels as PIL's crop and transpose, without two image copies)
        array = np.asarray(image, dtype=np.uint8)[top: top + self.size, left: left + self.size]
        if self.horizontal_flip and generator is not None and bool(torch.rand((), generator=generator) < 0.5):
            array = array[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (3, size, size)
