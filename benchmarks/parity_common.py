"""Shared by the parity scripts: one Markdown row comparing an artok tensor with a fixture tensor."""
from __future__ import annotations

import torch

HEADER = ["| tensor | max abs diff | mean abs diff |", "|---|---|---|"]


def row(name: str, actual: torch.Tensor, expected: torch.Tensor) -> str:
    """Integer tensors: identical or how many entries differ; floats: max and mean absolute difference."""
    if not actual.is_floating_point():
        same = torch.equal(actual, expected)
        return f"| {name} | {'identical' if same else f'{int((actual != expected).sum())} of {actual.numel()} differ'} | |"
    d = (actual.double() - expected.double()).abs()
    return f"| {name} | {d.max().item():.2e} | {d.mean().item():.2e} |"
