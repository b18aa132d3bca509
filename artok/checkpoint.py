"""Saving and loading one artok model: ``config.json`` + ``model.safetensors``, never pickles.

The leaf of the package's stack (it imports no other artok module): ``PretrainedMixin`` gives a module built
from one config dataclass ``save_pretrained``/``from_pretrained``, ``register_model_type`` lets
``artok.from_pretrained`` rebuild a class from the ``model_type`` in its ``config.json``, ``load_strict``
loads a state dict with an error that names every mismatch. A path that is not a local directory is treated
as a Hugging Face Hub repository id and downloaded, with a clear error when that is impossible (offline).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

MODEL_TYPES: dict[str, type] = {}


def register_model_type(cls):
    """Class decorator: lets ``from_pretrained`` rebuild ``cls`` from its ``model_type``."""
    MODEL_TYPES[cls.model_type] = cls
    return cls


class CheckpointError(RuntimeError):
    """A checkpoint is missing, malformed or does not match the model."""


def resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is a file; artok checkpoints are directories holding {CONFIG_NAME}")
        return p
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return download(text)
    raise CheckpointError(f"no checkpoint at {p}: the directory does not exist")


def download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with diffusers/accelerate
        raise CheckpointError(f"'{repo_id}' is not a local directory and huggingface_hub is not installed") from e
    import os

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline))
    except Exception as e:
        raise CheckpointError(
            f"'{repo_id}' is not a local directory and could not be downloaded from the Hugging Face Hub "
            f"({type(e).__name__}: {' '.join(str(e).split())}). Without internet access, download it elsewhere "
            f"(`huggingface-cli download {repo_id} --local-dir DIR`) and pass DIR."
        ) from None


def read_config(path: str | Path) -> dict:
    p = resolve(path)
    cfg_path = p / CONFIG_NAME
    if not cfg_path.exists():
        raise CheckpointError(f"{p} has no {CONFIG_NAME}; is it an artok checkpoint?")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from None


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint",
                assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing, unexpected and mis-shaped keys.
    ``assign=True`` adopts the given tensors (used for models built on the ``meta`` device)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def show(items):
            return ", ".join(items[:12]) + (f", … ({len(items)} in all)" if len(items) > 12 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        raise CheckpointError(f"{source} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True, assign=assign)


class PretrainedMixin:
    """``save_pretrained``/``from_pretrained`` for modules built from one config dataclass."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]

    def save_pretrained(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"model_type": self.model_type, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = d / (WEIGHTS_NAME + ".tmp")
        save_file(tensors, str(tmp), metadata={"model_type": self.model_type})
        tmp.replace(d / WEIGHTS_NAME)
        (d / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str | torch.device = "cpu"):
        meta = read_config(directory)
        d = resolve(directory)
        if meta.get("model_type") != cls.model_type:
            raise CheckpointError(f"{d} holds a '{meta.get('model_type')}', not a '{cls.model_type}'")
        model = cls(cls.config_class.from_dict(meta["config"], where=f"{d / CONFIG_NAME}:config"))
        weights = d / WEIGHTS_NAME
        if not weights.exists():
            raise CheckpointError(f"{d} has no {WEIGHTS_NAME}")
        load_strict(model, load_file(str(weights), device=str(map_location)), source=str(weights))
        return model.eval()
