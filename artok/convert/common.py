"""Reading official checkpoints: safetensors or ``.pth``/``.bin`` loaded with ``weights_only=True``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from artok.checkpoint import CheckpointError

StateDict = Mapping[str, torch.Tensor]


def load_state_dict(source: str | Path | StateDict, *, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` dict from a path or a mapping, floats widened to fp32 (fixtures store fp8).

    ``.pth``/``.bin``/``.pt`` files are read with ``torch.load(weights_only=True)``; a top-level wrapper
    such as ``{"model": ...}`` or ``{"state_dict": ...}`` is unwrapped. With ``prefix``, only keys under it
    are kept and the prefix is stripped (when no key carries it, all keys are kept).
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.exists():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            try:
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {e}") from None
        for wrapper in ("state_dict", "model", "module", "trainer"):
            if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict) and not torch.is_tensor(sd[wrapper]):
                sd = sd[wrapper]
    else:
        sd = dict(source)
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError("the checkpoint is not a flat mapping of tensor names to tensors")
    if prefix and any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def count_indexed(sd: StateDict, pattern: str) -> int:
    """Number of distinct integers matched by the single group of ``pattern`` over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def require(sd: StateDict, key: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"not a {what} checkpoint: key '{key}' is missing")
    return sd[key]


class KeyRenames:
    """Regex renames from an official checkpoint's keys to artok's, plus the official buffers artok derives
    from its config (dropped on conversion). The first rule that matches a key applies; a key no rule
    matches keeps its name."""

    def __init__(self, rules: tuple[tuple[str, str], ...], derived: tuple[str, ...] = ()) -> None:
        self.rules = tuple((re.compile(pattern), replacement) for pattern, replacement in rules)
        self.derived = tuple(re.compile(pattern) for pattern in derived)

    def __call__(self, key: str) -> str:
        for rx, replacement in self.rules:
            if rx.match(key):
                return rx.sub(replacement, key)
        return key

    def is_derived(self, key: str) -> bool:
        return any(rx.match(key) for rx in self.derived)
