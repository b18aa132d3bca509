"""A source decoded once into memory (``data.preload``): small datasets then cost no decoding per step.

On a 2-core machine decoding 32 px PNGs, padding and collating is about a tenth of a tokenizer step
(benchmarks/tokenizer_trainer_overhead.py); a plain loop that holds its images in a tensor does not pay it.
``Preloaded`` decodes every image once, in parallel worker processes, keeps the 8-bit pixels, and serves
them as the wrapped source would, so crops, flips, captions and bad-file handling stay what they were.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from artok.data.images import BadImageError


def memory_limit() -> int:
    """Bytes a preload may take: half of this machine's physical memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 8 GiB
        return 8 << 30


class _Decode(Dataset):
    """source[i] → (HWC uint8 pixels or None, label, error): what a preload worker returns."""

    def __init__(self, source: Dataset) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            image, label = self.source[index]
        except BadImageError as e:
            return None, -1, str(e)
        return np.asarray(image.convert("RGB"), dtype=np.uint8), int(label), None


class Preloaded(Dataset):
    """``source`` with every image decoded once into memory: ``ds[i]`` → (RGB image, label) like the source,
    unreadable files raise the same ``BadImageError`` (so ``TrainingSet`` still substitutes and reports them),
    and ``name``/``caption`` are the source's.

    Args:
        source: a dataset of (PIL image, label).
        num_workers: processes that decode (0: this one).
        max_bytes: refuse, before decoding everything, a dataset whose pixels would exceed this
            (default: half of the physical memory).
        progress: show a bar.
    """

    def __init__(self, source: Dataset, *, num_workers: int = 0, max_bytes: int | None = None,
                 progress: bool = True) -> None:
        self.source = source
        n = len(source)
        if n == 0:
            raise ValueError("data.preload: the data source is empty")
        limit = memory_limit() if max_bytes is None else max_bytes
        loader = DataLoader(_Decode(source), batch_size=256, num_workers=num_workers, collate_fn=list)
        self.pixels: list[np.ndarray | None] = []
        self.labels: list[int] = []
        self.errors: dict[int, str] = {}
        total = 0
        bar = tqdm(total=n, unit="img", desc="preloading images", disable=not progress, dynamic_ncols=True)
        for batch in loader:
            for array, label, error in batch:
                if error is not None:
                    self.errors[len(self.pixels)] = error
                else:
                    total += array.nbytes
                self.pixels.append(array)
                self.labels.append(label)
            bar.update(len(batch))
            decoded = len(self.pixels) - len(self.errors)
            if decoded and total / decoded * n > limit:
                bar.close()
                raise ValueError(f"data.preload: {n} images of about {total / decoded / 1e6:.2f} MB each need "
                                 f"{total / decoded * n / 1e9:.1f} GB, more than the {limit / 1e9:.1f} GB allowed "
                                 "(half of this machine's memory); set data.preload: false to decode per step")
        bar.close()
        self.nbytes = total
        if len(self.errors) == n:
            raise ValueError(f"data.preload: none of the {n} images could be decoded; first error: "
                             f"{next(iter(self.errors.values()))}")

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        array = self.pixels[index]
        if array is None:
            raise BadImageError(self.errors[index])
        return Image.fromarray(array), self.labels[index]

    def __getattr__(self, name: str):  # name(i), caption(i) and the like: the wrapped source's
        if name == "source":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.source, name)
