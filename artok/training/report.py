"""What a person looks at during training: reconstruction and per-class sample grids, a metrics log and loss
curves."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from artok.checkpoint import TRAINING_NAME
from artok.data.transforms import tensor_to_uint8

MIN_TILE = 96  # small images are upscaled (nearest) so that a grid is readable on screen


def tile_grid(images: torch.Tensor, *, columns: int) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1], row-major, ``columns`` per row → one (H', W', 3) uint8 grid, 2 px apart on white;
    small images are upscaled (nearest) to at least MIN_TILE pixels."""
    n, side, pad = images.shape[0], images.shape[-1], 2
    scale = max(1, math.ceil(MIN_TILE / side))
    tile = side * scale
    rows = math.ceil(n / columns)
    tiles = tensor_to_uint8(images)
    canvas = np.full((rows * (tile + pad) + pad, columns * (tile + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = pad + r * (tile + pad), pad + c * (tile + pad)
        canvas[y: y + tile, x: x + tile] = np.kron(tiles[i], np.ones((scale, scale, 1), np.uint8))
    return canvas


def class_grid(images: torch.Tensor, rows: int) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1], N = rows × columns, one row per class → one (H', W', 3) uint8 grid."""
    return tile_grid(images, columns=math.ceil(images.shape[0] / rows))


def reconstruction_grid(originals: torch.Tensor, reconstructions: torch.Tensor, *, columns: int = 8) -> np.ndarray:
    """Rows of originals, each followed by the row of their reconstructions: (H, W, 3) uint8."""
    rows = []
    for i in range(0, originals.shape[0], columns):
        o, r = originals[i:i + columns], reconstructions[i:i + columns]
        if o.shape[0] < columns:  # a short last row keeps its reconstructions under their originals
            blank = torch.ones((columns - o.shape[0], *o.shape[1:]), dtype=o.dtype)
            o, r = torch.cat([o, blank]), torch.cat([r, blank])
        rows += [o, r]
    return tile_grid(torch.cat(rows), columns=columns)


def save_grid(grid: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl``; reads them back for plots."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run that died after its last checkpoint)."""
        records = [r for r in self.read() if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in records))


def plot_curves(records: list[dict], path: str | Path) -> Path | None:
    """Loss terms, codebook usage per scale, PSNR and learning rate against steps, as one PNG."""
    records = [r for r in records if "step" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]

    def series(key: str):
        pts = [(r["step"], r[key]) for r in records if key in r]
        return ([s for s, _ in pts], [v for _, v in pts]) if pts else None

    loss_keys = [k for k in ("loss", "reconstruction", "perceptual", "commitment", "codebook", "entropy",
                             "generator", "discriminator") if series(k)]
    usage_keys = sorted({k for r in records for k in r if k.startswith("usage/")},
                        key=lambda k: int(k.split("/")[1].split("x")[0]))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for k in loss_keys:
        axes[0].plot(*series(k), label=k)
    axes[0].set_yscale("log")
    axes[0].set_title("losses")
    for k in usage_keys:
        axes[1].plot(*series(k), label=k.split("/")[1])
    axes[1].set_title("codebook usage per scale")
    if not usage_keys:  # a generator's run: how well its samples score, when the trainer was told to score them
        for k, label in (("sample_accuracy", "class accuracy"), ("sample_accuracy_min_class", "weakest class")):
            if series(k):
                axes[1].plot(*series(k), marker="o", label=label)
        axes[1].set_title("samples: class accuracy")
    axes[1].set_ylim(0, 1.05)
    ax = axes[2]
    if series("psnr"):
        ax.plot(*series("psnr"), color="C0", label="PSNR (dB)")
        ax.set_ylabel("PSNR (dB)")
    if series("lr"):
        twin = ax.twinx()
        twin.plot(*series("lr"), color="C3", linestyle="--", label="lr")
        twin.set_ylabel("learning rate")
    ax.set_title("PSNR (batch) and learning rate")
    for a in axes[:2]:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    for a in axes:
        a.set_xlabel("step")
        a.set_xlim(min(steps), max(max(steps), min(steps) + 1))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_training_summary(directory: Path, cfg, *, steps: int, global_batch: int, seconds: float,
                           metrics: dict, evaluation: dict | None = None) -> Path:
    """``training.json`` beside an export: the data it was trained on, how long, and the last logged metrics
    (and the final evaluation), which the model card of ``artok push`` reports."""
    data = getattr(cfg, "data", None)
    summary = {"data": data.to_dict() if data is not None else None, "steps": steps, "global_batch": global_batch,
               "minutes": round(seconds / 60, 2),
               "metrics": {k: v for k, v in metrics.items() if k != "step"}, "evaluation": evaluation or {}}
    path = Path(directory) / TRAINING_NAME
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
