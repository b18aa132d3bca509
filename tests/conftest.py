import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> tuple[dict, dict]:
    """(io tensors, json sidecar) of fixtures/<name>, e.g. 'var/vqvae'."""
    return load_file(str(FIXTURES / f"{name}_io.safetensors")), json.loads((FIXTURES / f"{name}.json").read_text())


def fixture_weights(name: str) -> Path:
    return FIXTURES / f"{name}_state_dict.safetensors"


def uint8_to_pm1(u8: torch.Tensor) -> torch.Tensor:
    """VAR's normalize_01_into_pm1 on uint8 images."""
    x = u8.float() / 255
    return x + x - 1


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 1e-4, rtol: float = 1e-4, what: str = ""):
    """allclose with a failure message that reports max and mean differences."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    ok = bool((diff <= atol + rtol * expected.double().abs()).all())
    assert ok, f"{what}: max abs diff {diff.max().item():.3e}, mean {diff.mean().item():.3e} (atol {atol}, rtol {rtol})"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
