"""Saving and loading one artok model: ``config.json`` + ``model.safetensors``, never pickles.

The bottom of the package's stack (it imports only ``artok.model_card``): ``PretrainedMixin`` gives a module built
from one config dataclass ``save_pretrained``/``from_pretrained``, ``register_model_type`` lets
``artok.from_pretrained`` rebuild a class from the ``model_type`` in its ``config.json``, ``load_strict``
loads a state dict with an error that names every mismatch. A path that is not a local directory is treated
as a Hugging Face Hub repository id and downloaded into the standard cache (at a ``revision`` when given),
with a clear error when that is impossible (offline); ``push_to_hub`` uploads a folder with a model card.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from artok import model_card as card

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TRAINING_NAME = "training.json"  # what `artok train` knew of the run (data, steps, metrics), beside its export
FORMAT_VERSION = 1

MODEL_TYPES: dict[str, type] = {}


def register_model_type(cls):
    """Class decorator: lets ``from_pretrained`` rebuild ``cls`` from its ``model_type``."""
    MODEL_TYPES[cls.model_type] = cls
    return cls


class CheckpointError(RuntimeError):
    """A checkpoint is missing, malformed or does not match the model."""


def resolve(path: str | Path, *, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a Hub repository id (``user/name``) downloaded into the standard
    Hugging Face cache at ``revision`` (a branch, tag or commit; the default branch when None)."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is a file; artok checkpoints are directories holding {CONFIG_NAME}")
        return p
    text = str(path)
    if is_repo_id(text):
        return download(text, revision=revision)
    raise CheckpointError(f"no checkpoint at {p}: the directory does not exist")


def is_repo_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/"))


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` as the environment holds it now (``huggingface_hub`` reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def download(repo_id: str, *, revision: str | None = None) -> Path:
    """``snapshot_download`` of the whole repository (a pipeline's ``tokenizer/`` and ``generator/`` too)
    into the Hugging Face cache; offline (``HF_HUB_OFFLINE=1``) only what the cache already holds."""
    from huggingface_hub import snapshot_download

    at = f" at revision '{revision}'" if revision else ""
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=hub_offline(),
                                      endpoint=hub_endpoint()))
    except Exception as e:
        raise CheckpointError(
            f"'{repo_id}' is not a local directory and could not be downloaded from the Hugging Face Hub{at} "
            f"({_one_line(e)}). Without internet access, download it elsewhere "
            f"(`hf download {repo_id}{' --revision ' + revision if revision else ''} --local-dir DIR`) and pass DIR."
        ) from None


def read_config(path: str | Path, *, revision: str | None = None) -> dict:
    p = resolve(path, revision=revision)
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


# -- publishing to the Hugging Face Hub -------------------------------------------------------------------

def count_parameters(weights: Path) -> int | None:
    """Parameters and buffers in a ``model.safetensors``, from its header (no tensor is read)."""
    if not weights.is_file():
        return None
    with safe_open(str(weights), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def model_card(directory: str | Path, repo_id: str) -> str:
    """The ``README.md`` that ``push_to_hub`` uploads when the folder has none of its own."""
    d = Path(directory)
    meta = read_config(d)
    subfolders = ("tokenizer", "generator") if meta.get("model_type") == "pipeline" else ("",)
    parts = {}
    for name in subfolders:
        sub = read_config(d / name) if name else meta
        parts[name] = (sub.get("model_type", "?"), sub.get("config") or {}, count_parameters(d / name / WEIGHTS_NAME))
    training = json.loads((d / TRAINING_NAME).read_text()) if (d / TRAINING_NAME).is_file() else None
    return card.render(repo_id, meta.get("model_type", "?"), parts, training)


def push_to_hub(directory: str | Path, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Upload an artok checkpoint folder (a tokenizer, a generator or a pipeline) to the Hub repository
    ``repo_id`` in one commit, creating the repository (and the branch ``revision``) when missing, with a
    generated model card unless the folder holds a ``README.md``. Returns the commit's URL.

    Built on ``huggingface_hub``'s upload API; the token is ``token``, else ``HF_TOKEN`` or ``hf auth login``'s."""
    from huggingface_hub import CommitOperationAdd, HfApi

    d = Path(directory)
    meta = read_config(d)  # refuses a folder that is not an artok checkpoint
    if not is_repo_id(repo_id):
        raise CheckpointError(f"'{repo_id}' is not a Hub repository id (user/name)")
    if hub_offline():
        raise CheckpointError(f"cannot push {d} to '{repo_id}': HF_HUB_OFFLINE is set")
    files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
                   and not any(part.startswith(".") for part in p.relative_to(d).parts))
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(d).as_posix(), path_or_fileobj=str(p)) for p in files]
    if not (d / CARD_NAME).is_file():
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME,
                                             path_or_fileobj=model_card(d, repo_id).encode("utf-8")))
    api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id, operations, revision=revision,
                                   commit_message=commit_message or f"Upload artok {meta.get('model_type')}")
    except Exception as e:
        raise CheckpointError(f"could not push {d} to the Hugging Face Hub as '{repo_id}' ({_one_line(e)}). Check "
                              "the network and that you are logged in with write access (`hf auth login` or "
                              "HF_TOKEN).") from None
    return commit.commit_url


class PretrainedMixin:
    """``save_pretrained``/``from_pretrained`` for modules built from one config dataclass."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]

    def save_pretrained(self, directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **push_options) -> Path:
        """Write ``config.json`` + ``model.safetensors``; with ``push_to_hub=True`` also upload the folder to
        ``repo_id`` (options: ``revision``, ``private``, ``token``, ``commit_message``; see ``push_to_hub``)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"model_type": self.model_type, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = d / (WEIGHTS_NAME + ".tmp")
        save_file(tensors, str(tmp), metadata={"model_type": self.model_type})
        tmp.replace(d / WEIGHTS_NAME)
        (d / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        return finish_save(d, push=push_to_hub, repo_id=repo_id, **push_options)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str | torch.device = "cpu",
                        revision: str | None = None):
        """Load from a folder or a Hub repository id (at ``revision``: a branch, tag or commit)."""
        d = resolve(directory, revision=revision)
        meta = read_config(d)
        if meta.get("model_type") != cls.model_type:
            raise CheckpointError(f"{d} holds a '{meta.get('model_type')}', not a '{cls.model_type}'")
        model = cls(cls.config_class.from_dict(meta["config"], where=f"{d / CONFIG_NAME}:config"))
        weights = d / WEIGHTS_NAME
        if not weights.exists():
            raise CheckpointError(f"{d} has no {WEIGHTS_NAME}")
        load_strict(model, load_file(str(weights), device=str(map_location)), source=str(weights))
        return model.eval()


def finish_save(directory: Path, *, push: bool, repo_id: str | None, **push_options) -> Path:
    """The end of every ``save_pretrained``: the upload, when asked for."""
    if push:
        if repo_id is None:
            raise CheckpointError("save_pretrained(push_to_hub=True) needs repo_id='user/name'")
        push_to_hub(directory, repo_id, **push_options)
    elif repo_id is not None or push_options:
        raise CheckpointError("repo_id and the push options only apply with push_to_hub=True")
    return directory
