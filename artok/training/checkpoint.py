"""Resumable training state (Accelerate ``save_state``/``load_state``), checkpoint discovery, weight
initialisation/freezing, and export of the EMA weights with ``save_pretrained``."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from artok.checkpoint import WEIGHTS_NAME, resolve

CHECKPOINTS_DIR = "checkpoints"
COMPLETE_MARKER = "artok_state.json"  # written after every process has saved: marks a usable checkpoint


class TrainingState:
    """Counters that must survive a restart: optimizer steps, samples this process has consumed, time."""

    def __init__(self) -> None:
        self.step = 0
        self.samples_seen = 0
        self.seconds = 0.0

    def state_dict(self) -> dict:
        return {"step": self.step, "samples_seen": self.samples_seen, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.seconds = float(state["seconds"])


def _number(path: Path) -> int:
    m = re.search(r"(\d+)$", path.name)
    return int(m.group(1)) if m else -1


def complete_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint folders under ``out_dir/checkpoints`` that finished saving, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and (p / COMPLETE_MARKER).is_file()), key=_number)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = complete_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, state: TrainingState) -> Path:
    """``accelerator.save_state`` (rotated by ``total_limit``), then the completion marker."""
    path = Path(accelerator.save_state())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / COMPLETE_MARKER).write_text(json.dumps(state.state_dict(), indent=2))
    accelerator.wait_for_everyone()
    return path


def _number_after_existing(accelerator, out_dir: str | Path, at_least: int = -1) -> None:
    """Number the next automatic checkpoint after the newest ``checkpoint_*`` folder present (a fresh start in a
    used ``out_dir``, or incomplete folders a crash left), so ``save_state`` never meets a folder it would
    refuse to overwrite and rotation keeps working."""
    numbers = [_number(p) for p in (Path(out_dir) / CHECKPOINTS_DIR).glob("checkpoint_*")]
    accelerator.project_configuration.iteration = max(numbers + [at_least, -1]) + 1


def resume(accelerator, resume: str, out_dir: str | Path) -> Path | None:
    """Load the checkpoint ``resume`` asks for (``auto``: the newest complete one, if any; ``never``; or a
    folder). Returns the folder loaded, or None for a fresh start."""
    if resume == "never":
        path = None
    elif resume == "auto":
        path = latest_checkpoint(out_dir)
    else:
        path = Path(resume).expanduser()
        if not (path / COMPLETE_MARKER).is_file():
            raise FileNotFoundError(f"train.resume: {path} is not a complete artok training checkpoint "
                                    f"(no {COMPLETE_MARKER})")
    if path is None:
        _number_after_existing(accelerator, out_dir)
        return None
    accelerator.load_state(str(path))
    _number_after_existing(accelerator, out_dir, _number(path))
    return path


def initialize_from(model: nn.Module, checkpoint: str | Path) -> list[str]:
    """Copy the weights of an artok checkpoint whose names and shapes match; returns the names not found
    there (new modules keep their initialisation, e.g. a hybrid decoder's residual path)."""
    source = load_file(str(resolve(checkpoint) / WEIGHTS_NAME))
    own = model.state_dict()
    mismatched = [f"{k}: {tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in source and source[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"train.init_from {checkpoint}: shapes differ for {', '.join(mismatched[:5])}")
    model.load_state_dict({k: source[k] for k in own if k in source}, strict=False)
    return [k for k in own if k not in source]


def freeze(model: nn.Module, prefixes: tuple[str, ...] | list[str]) -> int:
    """Stop gradients for parameters whose name starts with one of ``prefixes``; returns how many.
    Raises when a prefix matches nothing (a typo would otherwise silently train everything)."""
    names = [n for n, _ in model.named_parameters()]
    frozen = 0
    for prefix in prefixes:
        hits = [p for n, p in model.named_parameters() if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"train.freeze: no parameter under '{prefix}' (top-level modules: {', '.join(tops)})")
        for p in hits:
            p.requires_grad_(False)
        frozen += len(hits)
    return frozen


def export(model: nn.Module, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` loadable with ``artok.from_pretrained``."""
    with torch.no_grad():
        return model.save_pretrained(directory)
