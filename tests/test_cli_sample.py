"""``artok sample`` and ``sample/sample.py`` (accelerate launch) on a tiny pipeline."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artok
from artok.cli import main as cli
from artok.hub import Pipeline

ROOT = Path(__file__).parent.parent


def save_pipeline(path: Path, tokenizer: str = "tiny-var-vqvae", generator: str = "tiny-var", **overrides) -> Path:
    torch.manual_seed(0)
    gen = artok.build_generator(generator, **overrides)
    with torch.no_grad():
        for p in gen.parameters():  # O(1) random weights, so that samples depend on the class
            p.normal_(0, 0.3)
    Pipeline(artok.build_tokenizer(tokenizer), gen).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return save_pipeline(tmp_path_factory.mktemp("ckpt") / "tiny")


def pngs(out: Path) -> list[Path]:
    return sorted(out.glob("*_class*.png"))


def test_sample_writes_pngs_grid_and_npz(pipeline, tmp_path, capsys):
    out = tmp_path / "samples"
    rc = cli(["sample", str(pipeline), "--classes", "3", "1", "4", "1", "5", "--batch-size", "2", "--top-k", "10",
              "--seed", "7", "--out", str(out), "--npz"])
    assert rc == 0
    assert "wrote 5 samples" in capsys.readouterr().out
    files = pngs(out)
    assert [f.name for f in files] == ["000000_class0003.png", "000001_class0001.png", "000002_class0004.png",
                                       "000003_class0001.png", "000004_class0005.png"]
    with np.load(out / "samples.npz") as npz:
        arr, labels = npz["arr_0"], npz["labels"]
    assert arr.shape == (5, 32, 32, 3) and arr.dtype == np.uint8
    assert labels.tolist() == [3, 1, 4, 1, 5]
    for i, f in enumerate(files):
        assert np.array_equal(np.asarray(Image.open(f)), arr[i])
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)  # 3 columns x 2 rows of 32 px with 2 px padding
    assert not np.array_equal(arr[1], arr[2]), "different classes and draws should give different images"

    # same seed and batch size → the same images
    again = tmp_path / "again"
    assert cli(["sample", str(pipeline), "--classes", "3", "1", "4", "1", "5", "--batch-size", "2", "--top-k", "10",
                "--seed", "7", "--out", str(again)]) == 0
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
               for a, b in zip(files, pngs(again)))
    assert not (again / "samples.npz").exists()


def test_existing_samples_are_refused_unless_overwrite(pipeline, tmp_path, capsys):
    out = tmp_path / "samples"
    assert cli(["sample", str(pipeline), "--per-class", "1", "--out", str(out), "--batch-size", "10"]) == 0
    assert len(pngs(out)) == 10
    assert [int(f.name.split("class")[1][:4]) for f in pngs(out)] == list(range(10))
    (out / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert cli(["sample", str(pipeline), "--classes", "2", "--out", str(out)]) == 2
    assert "already holds 11 sample files" in capsys.readouterr().err and len(pngs(out)) == 10
    assert cli(["sample", str(pipeline), "--classes", "2", "--out", str(out), "--overwrite"]) == 0
    assert [f.name for f in pngs(out)] == ["000000_class0002.png"]
    assert (out / "notes.txt").read_text() == "keep me", "--overwrite removes samples only"


def test_bad_classes_and_mismatched_pipelines_are_errors(pipeline, tmp_path, capsys):
    assert cli(["sample", str(pipeline), "--classes", "3", "10", "--out", str(tmp_path / "a")]) == 2
    assert "class id 10 is out of range: the generator has 10 classes (0..9)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()

    bad = save_pipeline(tmp_path / "bad", tokenizer="tiny-vq", generator="tiny-var")
    assert cli(["sample", str(bad), "--classes", "1", "--out", str(tmp_path / "b")]) == 2
    assert "tokenizer and the generator disagree: scales" in capsys.readouterr().err

    bad = save_pipeline(tmp_path / "bad-v", codebook_size=128)
    assert cli(["sample", str(bad), "--classes", "1", "--out", str(tmp_path / "c")]) == 2
    assert "codebook size: generator 128, tokenizer 64" in capsys.readouterr().err

    artok.build_generator("tiny-var").save_pretrained(tmp_path / "gen-only")
    assert cli(["sample", str(tmp_path / "gen-only"), "--classes", "1", "--out", str(tmp_path / "d")]) == 2
    assert "needs a pipeline directory" in capsys.readouterr().err


def test_raster_pipeline_samples(tmp_path):
    ckpt = save_pipeline(tmp_path / "raster", tokenizer="tiny-vq", generator="tiny-raster")
    out = tmp_path / "s"
    assert cli(["sample", str(ckpt), "--classes", "0", "9", "--out", str(out), "--cfg", "2", "--cfg-schedule",
                "constant", "--dtype", "bf16", "--npz"]) == 0
    with np.load(out / "samples.npz") as npz:
        assert npz["arr_0"].shape == (2, 32, 32, 3)


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_accelerate_launch_on_two_processes_writes_the_same_files(pipeline, tmp_path):
    args = ["--classes", "3", "1", "4", "1", "5", "--batch-size", "2", "--top-k", "10", "--seed", "7", "--npz",
            "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread in both runs, so float rounding is identical
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "artok.cli", "sample", str(pipeline), *args, "--out", str(single)],
                   check=True, env=env)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    for name, entry in (("script", [str(ROOT / "sample" / "sample.py")]), ("cli", ["-m", "artok.cli", "sample"])):
        multi = tmp_path / name  # the entry script and the CLI itself, under accelerate launch
        subprocess.run([*launch, *entry, str(pipeline), *args, "--out", str(multi)], check=True, env=env)
        with np.load(single / "samples.npz") as a, np.load(multi / "samples.npz") as b:
            assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["labels"], b["labels"])


def test_acceleration_flags_reach_the_sampler(pipeline, tmp_path, capsys):
    base = ["sample", str(pipeline), "--classes", "3", "1", "--batch-size", "2", "--top-k", "10", "--seed", "7"]
    assert cli(base + ["--out", str(tmp_path / "exact")]) == 0
    # the pipeline's own generator as its draft: the same model predicts every block, so the same images
    assert cli(base + ["--draft", str(pipeline), "--draft-last", "1", "--out", str(tmp_path / "self-draft")]) == 0
    assert cli(base + ["--guidance-off-last", "1", "--out", str(tmp_path / "no-guidance")]) == 0
    exact, drafted, unguided = (np.stack([np.asarray(Image.open(f)) for f in pngs(tmp_path / d)])
                                for d in ("exact", "self-draft", "no-guidance"))
    assert np.array_equal(exact, drafted)
    assert not np.array_equal(exact, unguided)
    assert cli(base + ["--merge-last", "1", "--merge-ratio", "0.9", "--out", str(tmp_path / "bad")]) != 0
    assert "merge_ratio must be in [0, 0.5]" in capsys.readouterr().err
    assert not pngs(tmp_path / "bad"), "a bad option is refused before any sampling"


def test_a_pipeline_carries_its_sampling_defaults_and_flags_override_them(pipeline, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    loaded = artok.from_pretrained(pipeline)
    Pipeline(loaded.tokenizer, loaded.generator, sampling={"cfg": 4, "top_k": 10, "top_p": 0.0}).save_pretrained(tuned)
    assert artok.from_pretrained(tuned).sampling == {"cfg": 4.0, "top_k": 10, "top_p": 0.0}
    assert artok.from_pretrained(pipeline).sampling is None

    def draw(checkpoint, out, *flags):
        assert cli(["sample", str(checkpoint), "--classes", "3", "1", "--batch-size", "2", "--seed", "7",
                    "--out", str(tmp_path / out), *flags]) == 0
        return np.stack([np.asarray(Image.open(f)) for f in pngs(tmp_path / out)])

    defaults = draw(tuned, "defaults")
    assert "cfg 4.0 (pipeline)" in capsys.readouterr().out
    explicit = draw(pipeline, "explicit", "--cfg", "4", "--top-k", "10", "--top-p", "0")
    assert np.array_equal(defaults, explicit)  # the recorded settings are the ones used
    overridden = draw(tuned, "overridden", "--cfg", "0")
    assert "cfg 0.0 (flag)" in capsys.readouterr().out
    assert not np.array_equal(defaults, overridden)
    assert np.array_equal(draw(pipeline, "var", "--top-k", "900", "--top-p", "0.96", "--cfg", "1.5"),
                          draw(pipeline, "var-defaults"))  # no record: VAR's settings, as before


def test_bad_sampling_records_are_refused(pipeline, tmp_path):
    import json

    from artok.checkpoint import CheckpointError

    loaded = artok.from_pretrained(pipeline)
    with pytest.raises(CheckpointError, match="unknown sampling setting"):
        Pipeline(loaded.tokenizer, loaded.generator, sampling={"guidance": 2})
    with pytest.raises(CheckpointError, match="top_k must be int"):
        Pipeline(loaded.tokenizer, loaded.generator, sampling={"top_k": 2.5})
    broken = tmp_path / "broken"
    Pipeline(loaded.tokenizer, loaded.generator).save_pretrained(broken)
    meta = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**meta, "sampling": {"cfg": "high"}}))
    with pytest.raises(CheckpointError, match="config.json: sampling setting cfg must be float"):
        artok.from_pretrained(broken)
