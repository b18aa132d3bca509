"""Writing samples to disk: uint8 conversion, one PNG per sample, the grid and the ``.npz`` array that the
standard ImageNet FID evaluator reads (``arr_0``: uint8, N×H×W×3, plus ``labels``).

Sample i of class c is ``{i:06d}_class{c:04d}.png``, of prompt p ``{i:06d}_prompt{p:04d}.png`` (the prompts
in ``prompts.jsonl`` beside them); ``artok sample``, ``sample/sample.py`` (``accelerate
launch``) and ``artok eval generator`` all write and read this layout through the helpers here.
"""
from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

SAMPLE_NAME = "{index:06d}_class{label:04d}.png"
PROMPT_SAMPLE_NAME = "{index:06d}_prompt{label:04d}.png"
SAMPLE_RE = re.compile(r"^(\d{6,})_(?:class|prompt)(\d{4,})\.png$")
GRID_NAME = "grid.png"
PROMPTS_NAME = "prompts.jsonl"
NPZ_NAME = "samples.npz"
GRID_MAX = 64


# ---------------------------------------------------------------------------------------------------------
# The output directory
# ---------------------------------------------------------------------------------------------------------

def existing_samples(out: Path) -> list[Path]:
    """The sample PNGs, grid and npz already in ``out`` (nothing else)."""
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if SAMPLE_RE.match(p.name) or p.name in (GRID_NAME, NPZ_NAME, PROMPTS_NAME)]


def check_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse a directory that already holds samples unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a directory")
    found = existing_samples(out)
    if found and not overwrite:
        raise FileExistsError(f"{out} already holds {len(found)} sample files ({found[0].name}, …); "
                              "pass --overwrite to replace them")
    return out


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Create ``out``; with ``overwrite`` remove earlier samples, grid and npz (nothing else)."""
    out = check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for p in existing_samples(out):
        p.unlink()
    return out


def sample_paths(out: Path) -> list[tuple[int, int, Path]]:
    """(index, label, path) of every sample PNG in ``out``, by index."""
    found = []
    for p in out.iterdir():
        m = SAMPLE_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(found)


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8, rounded."""
    x = ((images.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def write_pngs(out: Path, start: int, labels: list[int], images: np.ndarray, *, name: str = SAMPLE_NAME) -> list[Path]:
    """One PNG per image (B, H, W, 3) uint8, numbered from ``start`` (``name``: ``SAMPLE_NAME`` with class
    labels, ``PROMPT_SAMPLE_NAME`` with prompt numbers)."""
    from PIL import Image

    paths = []
    for i, (label, img) in enumerate(zip(labels, images)):
        path = out / name.format(index=start + i, label=label)
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def write_grid(out: Path, samples: list[tuple[int, int, Path]], max_images: int = GRID_MAX) -> Path:
    """The first ``max_images`` samples in a square-ish grid, 2 px apart."""
    from PIL import Image
    from torchvision.utils import make_grid

    chosen = samples[:max_images]
    imgs = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))) for _, _, p in chosen])
    nrow = math.ceil(math.sqrt(len(chosen)))
    grid = make_grid(imgs.permute(0, 3, 1, 2), nrow=nrow, padding=2, pad_value=255)
    path = out / GRID_NAME
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def write_npz(out: Path, samples: list[tuple[int, int, Path]]) -> Path:
    """``samples.npz`` with ``arr_0`` (N, H, W, 3) uint8 and ``labels`` (N,), streamed through a memory-mapped
    ``.npy`` so that 50,000 images need no more memory than one."""
    from PIL import Image

    first = np.asarray(Image.open(samples[0][2]).convert("RGB"))
    tmp = out / "arr_0.npy.tmp"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples),) + first.shape)
    for i, (_, _, p) in enumerate(samples):
        img = np.asarray(Image.open(p).convert("RGB"))
        if img.shape != first.shape:
            raise ValueError(f"{p} is {img.shape}, the other samples are {first.shape}")
        arr[i] = img
    arr.flush()
    del arr
    labels = out / "labels.npy.tmp"
    with open(labels, "wb") as f:
        np.save(f, np.array([label for _, label, _ in samples], dtype=np.int64), allow_pickle=False)
    path = out / NPZ_NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:  # the np.savez layout
        z.write(tmp, "arr_0.npy")
        z.write(labels, "labels.npy")
    tmp.unlink()
    labels.unlink()
    return path


def write_prompts(out: Path, prompts: list[str], plan: list[int], *, seed: int, batch_size: int) -> Path:
    """``prompts.jsonl``: one line per image, in order: its file, prompt, prompt number and batch seed."""
    import json

    path = out / PROMPTS_NAME
    with open(path, "w", encoding="utf-8") as f:
        for index, p in enumerate(plan):
            f.write(json.dumps({"file": PROMPT_SAMPLE_NAME.format(index=index, label=p), "prompt": prompts[p],
                                "prompt_index": p, "seed": seed + index // batch_size}, ensure_ascii=False) + "\n")
    return path


def finish(out: Path, *, npz: bool) -> list[Path]:
    """Grid (and npz) from the PNGs in ``out``."""
    samples = sample_paths(out)
    if not samples:
        raise RuntimeError(f"no samples were written to {out}")
    written = [write_grid(out, samples)]
    if npz:
        written.append(write_npz(out, samples))
    return written
