"""``artok sample CHECKPOINT``: class-conditional samples as PNGs, an image grid, and with ``--npz`` the
``.npz`` array that the standard ImageNet FID evaluator reads (``arr_0``: uint8, N×H×W×3).

Batch b is drawn with the seed ``seed + b``, so the images depend on the seed and the batch size only;
``sample/sample.py`` (``accelerate launch``) splits the same batches across processes and writes the same
files. The helpers here are shared by both.
"""
from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

SAMPLE_NAME = "{index:06d}_class{label:04d}.png"
SAMPLE_RE = re.compile(r"^(\d{6,})_class(\d{4,})\.png$")
GRID_NAME = "grid.png"
NPZ_NAME = "samples.npz"
GRID_MAX = 64


# ---------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="artok pipeline directory (tokenizer/ + generator/), e.g. from `artok convert var`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--classes", nargs="+", type=int, metavar="ID", help="class ids to sample, one image each")
    which.add_argument("--per-class", type=int, metavar="N", help="N images of every class (50 for ImageNet FID)")
    p.add_argument("--out", required=True, help="output directory for the PNGs, grid.png and samples.npz")
    add_sampling_arguments(p)
    p.add_argument("--npz", action="store_true", help=f"also write {NPZ_NAME} (arr_0: uint8 N×H×W×3, labels)")


def add_sampling_arguments(p) -> None:
    """The sampling settings, shared by ``artok sample`` and ``artok eval generator`` (VAR's FID defaults)."""
    p.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance strength (0: none)")
    p.add_argument("--cfg-schedule", choices=("linear", "constant"), default="linear",
                   help="linear: VAR's ramp from 0 at the first step to --cfg at the last; constant: --cfg throughout")
    p.add_argument("--top-k", type=int, default=900, help="keep the k most likely tokens (0: all; 1: greedy)")
    p.add_argument("--top-p", type=float, default=0.96, help="nucleus sampling mass (0: off)")
    p.add_argument("--temperature", type=float, default=1.0, help="divides the guided logits")
    p.add_argument("--more-smooth", action="store_true", help="VAR's Gumbel soft codes (visual quality, not for FID)")
    p.add_argument("--seed", type=int, default=0, help="batch b uses seed + b")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast dtype")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace samples already in --out")


# ---------------------------------------------------------------------------------------------------------
# Loading and planning
# ---------------------------------------------------------------------------------------------------------

def load_pipeline(checkpoint: str | Path, device: str | torch.device):
    """(tokenizer, generator) of a pipeline checkpoint, in eval mode on ``device``; checked to fit together."""
    import artok
    from artok.sampling import check_compatible

    model = artok.from_pretrained(checkpoint)
    if not isinstance(model, artok.Pipeline):
        raise ValueError(f"{checkpoint} holds a {getattr(model, 'model_type', type(model).__name__)}; artok sample "
                         "needs a pipeline directory with tokenizer/ and generator/ (see `artok convert var`)")
    tok, gen = model.tokenizer, model.generator
    check_compatible(gen, tok)
    return tok.to(device).eval(), gen.to(device).eval()


def plan_labels(classes: list[int] | None, per_class: int | None, num_classes: int) -> list[int]:
    """The class of every image to draw, in output order."""
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"--per-class must be >= 1, got {per_class}")
        return [c for c in range(num_classes) for _ in range(per_class)]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class id {bad[0]} is out of range: the generator has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return list(classes)


def existing_samples(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if SAMPLE_RE.match(p.name) or p.name in (GRID_NAME, NPZ_NAME)]


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


def batches(labels: list[int], batch_size: int) -> list[tuple[int, int, list[int]]]:
    """(batch index, index of its first image, its labels) for every batch."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    return [(b, start, labels[start:start + batch_size]) for b, start in enumerate(range(0, len(labels), batch_size))]


# ---------------------------------------------------------------------------------------------------------
# Sampling and writing
# ---------------------------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8, rounded."""
    x = ((images.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def sample_batch(tok, gen, labels: list[int], batch_index: int, args, device: torch.device) -> np.ndarray:
    from artok.sampling import generate

    rng = torch.Generator(device=device).manual_seed(args.seed + batch_index)
    out = generate(gen, tok, torch.tensor(labels, device=device), cfg_scale=args.cfg, top_k=args.top_k,
                   top_p=args.top_p, temperature=args.temperature, cfg_schedule=args.cfg_schedule,
                   more_smooth=args.more_smooth, dtype=args.dtype, generator=rng)
    return to_uint8(out.images)


def write_pngs(out: Path, start: int, labels: list[int], images: np.ndarray) -> list[Path]:
    from PIL import Image

    paths = []
    for i, (label, img) in enumerate(zip(labels, images)):
        path = out / SAMPLE_NAME.format(index=start + i, label=label)
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def sample_jobs(tok, gen, jobs, args, device, *, out: Path, progress: bool = True, total: int | None = None) -> int:
    """Draw and write the given batches; returns the number of images written. Shows images/s."""
    from tqdm.auto import tqdm

    n = 0
    with tqdm(total=total or sum(len(j[2]) for j in jobs), unit="img", desc="sampling", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch_index, start, labels in jobs:
            images = sample_batch(tok, gen, labels, batch_index, args, device)
            write_pngs(out, start, labels, images)
            n += len(labels)
            bar.update(len(labels))
    return n


def sample_paths(out: Path) -> list[tuple[int, int, Path]]:
    """(index, label, path) of every sample PNG in ``out``, by index."""
    found = []
    for p in out.iterdir():
        m = SAMPLE_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(found)


def write_grid(out: Path, samples: list[tuple[int, int, Path]], max_images: int = GRID_MAX) -> Path:
    """The first ``max_images`` samples in a square-ish grid, 2 px apart."""
    import math

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


def finish(out: Path, *, npz: bool) -> list[Path]:
    """Grid (and npz) from the PNGs in ``out``."""
    samples = sample_paths(out)
    if not samples:
        raise RuntimeError(f"no samples were written to {out}")
    written = [write_grid(out, samples)]
    if npz:
        written.append(write_npz(out, samples))
    return written


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------

def default_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(args) -> int:
    device = default_device(args.device)
    check_out_dir(args.out, args.overwrite)  # before the (slow) load
    tok, gen = load_pipeline(args.checkpoint, device)
    labels = plan_labels(args.classes, args.per_class, gen.num_classes)
    jobs = batches(labels, args.batch_size)
    out = prepare_out_dir(args.out, args.overwrite)
    t0 = time.perf_counter()
    n = sample_jobs(tok, gen, jobs, args, device, out=out)
    seconds = time.perf_counter() - t0
    written = finish(out, npz=args.npz)
    print(f"wrote {n} samples to {out} ({n / seconds:.2f} images/s on {device}, {args.dtype}); "
          + ", ".join(p.name for p in written))
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser("sample", help="sample class-conditional images from an artok pipeline",
                       description=__doc__.split("\n\n")[0], formatter_class=formatter_class)
    add_arguments(p)
    p.set_defaults(func=run)
