"""Training and evaluation loaders: augmented samples keyed by (index, epoch), bad files skipped and
reported, and an endless, deterministic, per-process sampler that resumes at any position.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from artok.data.images import BadImageError
from artok.data.transforms import ImageTransform, uint8_to_unit

MAX_CONSECUTIVE_BAD = 64  # give up (with a clear error) only when this many files in a row are unreadable
SUBSTITUTE_STRIDE = 7919  # a prime: substitutes for a bad file are spread over the dataset


class TrainingSet(Dataset):
    """Wraps a source dataset: ``dataset[(index, epoch)]`` → {"image": (3, S, S), "label", "bad_files"}, and
    with ``captions`` the source's ``caption(index)`` as "caption" (a sample without one counts as unreadable).

    The augmentation of sample (index, epoch) is drawn from a generator seeded with (seed, epoch, index),
    so it does not depend on which worker or process loads it. An unreadable file is replaced by another
    sample (deterministically) and listed in ``bad_files`` as "name<TAB>reason", so a batch always has full
    size and the run goes on.

    With ``uint8`` the image stays (3, S, S) uint8, the same pixels; ``collate`` turns a batch of them into
    the usual floats in one operation, which on small images is cheaper than converting each sample.
    """

    def __init__(self, source: Dataset, transform: ImageTransform, *, seed: int = 0, captions: bool = False,
                 uint8: bool = False) -> None:
        self.source, self.transform, self.seed, self.captions = source, transform, seed, captions
        self.uint8 = uint8
        if captions and not hasattr(source, "caption"):
            raise ValueError(f"{type(source).__name__} has no captions; text-conditioned training needs a folder "
                             "with a .txt beside each image, tar shards with .txt/.json members, a Hugging Face "
                             "dataset with a text column (data.caption_key), or the procedural shapes")

    def __len__(self) -> int:
        return len(self.source)

    def _name(self, index: int) -> str:
        return self.source.name(index) if hasattr(self.source, "name") else f"sample {index}"

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        bad = []
        for attempt in range(MAX_CONSECUTIVE_BAD):
            i = (index + attempt * SUBSTITUTE_STRIDE) % len(self.source)
            try:
                image, label = self.source[i]
                caption = self.source.caption(i) if self.captions else None
            except BadImageError as e:
                bad.append(f"{self._name(i)}\t{str(e).removeprefix(self._name(i) + ': ')}")
                continue
            generator = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFF_FFFF_FFFF_FFFF)
            pixels = self.transform.uint8(image, generator) if self.uint8 else self.transform(image, generator)
            item = {"image": pixels, "label": int(label), "bad_files": bad}
            if self.captions:
                item["caption"] = caption
            return item
        raise RuntimeError(f"{MAX_CONSECUTIVE_BAD} unreadable files in a row starting at {self._name(index)}; "
                           f"the data source looks broken. First errors: {'; '.join(bad[:3])}")


def collate(samples: list[dict]) -> dict:
    images = torch.stack([s["image"] for s in samples])  # (B, 3, S, S)
    batch = {
        "images": uint8_to_unit(images) if images.dtype == torch.uint8 else images,  # floats in [-1, 1]
        "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "bad_files": [b for s in samples for b in s["bad_files"]],
    }
    if "caption" in samples[0]:
        batch["captions"] = [s["caption"] for s in samples]
    return batch


class InfiniteShardedSampler(Sampler):
    """Endless stream of (index, epoch) keys for one process of ``num_replicas``.

    Epoch e visits a permutation drawn from (seed, e) (or the identity when not shuffling); process r takes
    every num_replicas-th index starting at r, truncated so that all processes get the same count.
    ``start`` skips that many keys of this process's stream, which is how a resumed run continues exactly
    where the interrupted one stopped.
    """

    def __init__(self, length: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True,
                 start: int = 0) -> None:
        if length < num_replicas:
            raise ValueError(f"dataset of {length} samples is smaller than the {num_replicas} processes")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self.per_epoch = length // num_replicas

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        return order[self.rank: self.per_epoch * self.num_replicas: self.num_replicas].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield index, epoch
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # DataLoader asks; the stream is endless, so report one epoch
        return self.per_epoch


def training_loader(dataset: TrainingSet, *, batch_size: int, num_workers: int = 0, num_replicas: int = 1,
                    rank: int = 0, seed: int = 0, start: int = 0) -> DataLoader:
    """Endless loader of collated batches for one process, starting ``start`` samples into its stream.

    The DataLoader gets its own generator, so creating it does not consume the global RNG: a resumed run
    keeps the same global random stream (dead-code restarts, dropout) as an uninterrupted one.
    """
    sampler = InfiniteShardedSampler(len(dataset), num_replicas=num_replicas, rank=rank, seed=seed, start=start)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      drop_last=True, generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def evaluation_loader(dataset: TrainingSet, *, batch_size: int, num_images: int | None = None,
                      num_workers: int = 0) -> DataLoader:
    """The first ``num_images`` samples (all when None), in order, unaugmented."""
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    keys = [(i, 0) for i in range(n)]
    return DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=num_workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0))
