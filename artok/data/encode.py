"""Encode an image dataset to sharded token ids (``artok encode``), resumable and split across processes.

Process r of W encodes the shards k with k mod W = r; each shard covers a fixed range of input indices, so a
killed run continues exactly where it stopped. Inputs that fail to load are skipped and listed in the
manifest. Memory stays flat: inputs stream through a DataLoader one batch at a time.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from artok.data.tokens import MANIFEST, ShardWriter, completed_shards, record_dtype, write_manifest

HEADER = "encode_header.json"
VIEWS_PER_INPUT = {"none": 1, "hflip": 2, "tencrop": 10}
AUGMENTATIONS = tuple(VIEWS_PER_INPUT)


# training statistics that never change what a tokenizer outputs
_STATISTICS = ("codebook.usage", "codebook.num_updates", "codebook.ema_count", "codebook.ema_sum")


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over the weights that determine the outputs (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if name.endswith(_STATISTICS):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def views(images: torch.Tensor, augment: str, size: int) -> list[torch.Tensor]:
    """Augmented views of a batch (B, 3, H, W): none → [x]; hflip → [x, flip x]; tencrop → the 5 crops of
    ``size`` (corners + centre) and their flips, LlamaGen-style (H is then larger than ``size``)."""
    if augment == "none":
        return [images]
    if augment == "hflip":
        return [images, images.flip(-1)]
    if augment == "tencrop":
        from torchvision.transforms.functional import ten_crop

        return list(ten_crop(images, [size, size]))
    raise ValueError(f"unknown augmentation '{augment}' (expected one of {', '.join(AUGMENTATIONS)})")


class _Safe(Dataset):
    """Wraps a dataset so that an input that fails to load becomes ``(index, None, reason)`` instead of an
    exception that would abort the run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            item = self.dataset[i]
        except Exception as e:  # corrupt or unreadable input: recorded, never fatal
            name = self.dataset.name(i) if hasattr(self.dataset, "name") else f"input {i}"
            return i, None, f"{name}: {type(e).__name__}: {e}"
        if item is None:
            return i, None, "skipped by the dataset"
        image, label = (item if isinstance(item, (tuple, list)) else (item, -1))[:2]
        return i, image, int(label) if label is not None else -1


class ImageSource(Dataset):
    """(PIL image, label) source → (image (3, S, S) in [-1, 1], label) with a deterministic centre crop; for
    ten-crop encoding S is 1.1 × the tokenizer's size, as LlamaGen does."""

    def __init__(self, source: Dataset, image_size: int, augment: str) -> None:
        from artok.data.transforms import ImageTransform

        self.source = source
        side = int(image_size * 1.1) if augment == "tencrop" else image_size
        self.transform = ImageTransform(side, crop="center")

    def __len__(self) -> int:
        return len(self.source)

    def name(self, i: int) -> str:
        return self.source.name(i) if hasattr(self.source, "name") else f"input {i}"

    def __getitem__(self, i: int):
        image, label = self.source[i]
        return self.transform(image), label


def _collate(batch):
    good = [(i, x, y) for i, x, y in batch if x is not None]
    bad = [(i, reason) for i, x, reason in batch if x is None]
    if good:
        idx, xs, ys = zip(*good)
        return torch.tensor(idx), torch.stack(xs), torch.tensor(ys), bad
    return torch.zeros(0, dtype=torch.long), None, None, bad


def _header(tokenizer, augment: str, image_size: int, source: str, num_inputs: int, shard_size: int) -> dict:
    return {
        "tokenizer_config": tokenizer.config.to_dict(), "tokenizer_type": tokenizer.model_type,
        "tokenizer_sha256": weights_hash(tokenizer), "scales": list(tokenizer.scales),
        "codebook_size": tokenizer.codebook_size, "num_tokens": tokenizer.num_tokens,
        "augment": augment, "views_per_input": VIEWS_PER_INPUT[augment], "image_size": image_size, "source": source,
        "num_inputs": num_inputs, "shard_size": shard_size,
    }


def prepare_output(out_dir: Path, header: dict, *, overwrite: bool, is_main: bool) -> None:
    """Create ``out_dir`` or check that a previous run there used the same tokenizer and settings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / HEADER
    if path.exists() and overwrite and is_main:
        for p in list(out_dir.glob("shard-*")) + list(out_dir.glob(".shard-*")) + [out_dir / MANIFEST, path]:
            p.unlink(missing_ok=True)
    if path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in header if old.get(k) != header[k]]
        if changed:
            raise FileExistsError(
                f"{out_dir} holds an encoding made with different settings ({', '.join(changed)}); pass "
                f"--overwrite to discard it, or choose another --out"
            )
    elif is_main:
        path.write_text(json.dumps(header, indent=2))


def encode_dataset(
    tokenizer,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    image_size: int,
    augment: str = "none",
    shard_size: int = 4096,
    batch_size: int = 64,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    source: str = "",
    overwrite: bool = False,
    barrier: Callable[[], None] = lambda: None,
    progress: bool = True,
) -> dict | None:
    """Encode ``dataset`` (items ``(image (3, H, W) in [-1, 1], label)``) with ``tokenizer``.

    Returns the manifest on the main process (rank 0) once every shard is complete, None elsewhere.
    ``barrier`` synchronises processes (``accelerator.wait_for_everyone``) before the manifest is written.
    """
    from tqdm.auto import tqdm

    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation '{augment}' (expected one of {', '.join(AUGMENTATIONS)})")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}")
    out_dir = Path(out_dir)
    n = len(dataset)
    header = _header(tokenizer, augment, image_size, source, n, shard_size)
    if rank == 0:
        prepare_output(out_dir, header, overwrite=overwrite, is_main=True)
    barrier()
    if rank != 0:
        prepare_output(out_dir, header, overwrite=False, is_main=False)

    hybrid = tokenizer.is_hybrid
    residual_shape = (tokenizer.latent_channels, tokenizer.scales[-1], tokenizer.scales[-1]) if hybrid else None
    dtype = record_dtype(tokenizer.num_tokens, tokenizer.codebook_size, residual_shape)
    num_shards = (n + shard_size - 1) // shard_size
    done = completed_shards(out_dir)
    mine = [k for k in range(num_shards) if k % world_size == rank and k not in done]
    todo = sum(min((k + 1) * shard_size, n) - k * shard_size for k in mine)
    device = next(tokenizer.parameters()).device
    safe = _Safe(dataset)

    bar = tqdm(total=todo, unit="img", desc=f"encode[{rank}]" if world_size > 1 else "encode",
               disable=not progress, dynamic_ncols=True)
    start = time.time()
    for k in mine:
        lo, hi = k * shard_size, min((k + 1) * shard_size, n)
        writer = ShardWriter(out_dir, k, dtype, (lo, hi))
        try:
            loader = DataLoader(Subset(safe, range(lo, hi)), batch_size=batch_size, num_workers=num_workers,
                                collate_fn=_collate)
            for idx, images, labels, bad in loader:
                for i, reason in bad:
                    writer.skip(i, reason)
                if images is not None:
                    writer.add(_encode_batch(tokenizer, images.to(device), idx, labels, augment, image_size, dtype))
                bar.update(len(idx) + len(bad))
        except BaseException:
            writer.abort()  # the partial shard is dropped and redone on resume
            raise
        writer.close()
    bar.close()
    elapsed = time.time() - start
    barrier()
    if rank != 0:
        return None
    manifest = write_manifest(out_dir, header=header, dtype=dtype, num_inputs=n, shard_size=shard_size)
    if progress and todo:
        print(f"{'this process ' if world_size > 1 else ''}encoded {todo} inputs in {elapsed:.1f} s ({todo / max(elapsed, 1e-9):.1f} img/s); "
              f"{manifest['num_records']} records, {len(manifest['skipped'])} inputs skipped → {out_dir}")
    return manifest


@torch.no_grad()
def _encode_batch(tokenizer, images, idx, labels, augment, image_size, dtype) -> np.ndarray:
    hybrid = "residual" in dtype.names
    per_view = []
    for v, x in enumerate(views(images, augment, image_size)):
        ids = torch.cat(tokenizer.tokenize(x), dim=1).cpu().numpy()
        rec = np.zeros(len(x), dtype=dtype)
        rec["index"], rec["view"], rec["label"], rec["ids"] = idx.numpy(), v, labels.numpy(), ids
        if hybrid:
            rec["residual"] = tokenizer.residual(x).float().cpu().numpy().astype(np.float16)
        per_view.append(rec)
    # records ordered by input, then view
    return np.stack(per_view, axis=1).reshape(-1)
