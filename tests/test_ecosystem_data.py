"""Data from the ecosystem's own writers: tar shards written by ``webdataset.TarWriter`` (images, ``.cls``,
``.txt``/``.json`` captions) read through wids' tar reader, a ``save_to_disk`` Hugging Face dataset, and one
loaded by name from the datasets cache with the Hub offline; each trains a tokenizer and encodes to the ids
the tokenizer gives the same images in memory."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artok import build_tokenizer, from_pretrained
from artok.cli import main as cli
from artok.data import BadImageError, TarShards, TokenDataset, build_dataset, data_config_from_spec
from artok.data.tokens import collate_tokens

wds = pytest.importorskip("webdataset")

TINY = Path(__file__).parent.parent / "configs" / "tiny" / "train-var-tokenizer.yaml"

TRAINED = [False, pytest.param(True, marks=pytest.mark.slow, id="trained")]  # training takes 5-15 s
TRAIN = ["--no-progress", "--train.batch_size=4", "--train.max_steps=2", "--train.log_every=1",
         "--train.sample_every=100", "--train.save_every=100", "--train.eval_images=0", "--train.warmup_steps=0",
         "--train.trackers=[none]", "--data.num_workers=0", "--data.horizontal_flip=false"]


@pytest.fixture
def fresh_accelerate_state():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _images(n: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _encoded(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _reference_ids(tok, arrays: list[np.ndarray]) -> list[torch.Tensor]:
    """The tokenizer's ids for the images in memory: uint8 → [-1, 1], no file or tar involved. One contiguous
    image at a time, as the encodings compared with it run: CPU convolutions differ by ~1e-6 between batch
    sizes and memory layouts, enough to flip a near-tie between two codes of a trained tokenizer."""
    with torch.no_grad():
        per_image = [tok.tokenize((torch.from_numpy(a).permute(2, 0, 1).float() / 127.5 - 1)[None].contiguous())
                     for a in arrays]
    return [torch.cat(scale) for scale in zip(*per_image)]  # per scale: (B, pn*pn)


def write_tarwriter_shards(root, arrays, *, per_shard: int, corrupt: int | None = None) -> str:
    """Shards ``root/shard-000.tar``, ... as webdataset writes them: PNG, ``.cls``, and a caption as ``.txt`` for
    even samples and as ``.json`` (``{"caption": ...}``) for odd ones; sample ``corrupt`` gets broken JPEG bytes."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(arrays), per_shard):
        with wds.TarWriter(str(root / f"shard-{s // per_shard:03d}.tar")) as writer:
            for i in range(s, min(s + per_shard, len(arrays))):
                sample = {"__key__": f"{i // per_shard:03d}/{i:05d}", "cls": i % 3}
                if i == corrupt:
                    sample["jpg"] = b"\xff\xd8\xff not a jpeg at all"
                else:
                    sample["png"] = _encoded(arrays[i])
                sample["txt" if i % 2 == 0 else "json"] = (f"image {i}" if i % 2 == 0 else {"caption": f"image {i}"})
                writer.write(sample)
    return str(root / ("shard-{000..%03d}.tar" % ((len(arrays) - 1) // per_shard)))


# -- reading --------------------------------------------------------------------------------------------------

def test_tarwriter_shards_read_with_labels_captions_and_a_named_corrupt_member(tmp_path):
    arrays = _images(7)
    pattern = write_tarwriter_shards(tmp_path / "shards", arrays, per_shard=3, corrupt=4)
    ds = TarShards(pattern)
    assert len(ds) == 7 and len(ds.shards) == 3
    for i in (0, 3, 6):
        image, label = ds[i]
        assert label == i % 3 and np.array_equal(np.asarray(image), arrays[i])
    assert [ds.caption(i) for i in (0, 1, 6)] == ["image 0", "image 1", "image 6"]  # .txt, .json, .txt
    assert ds.name(4) == f"{tmp_path / 'shards' / 'shard-001.tar'}:001/00004"
    with pytest.raises(BadImageError, match=r"shard-001\.tar:001/00004"):
        ds[4]
    # training replaces it and reports it by shard and key
    train = build_dataset(data_config_from_spec(pattern), image_size=32, train=False)
    item = train[(4, 0)]
    assert len(item["bad_files"]) == 1 and item["bad_files"][0].startswith(ds.name(4) + "\t")
    # what goes to DataLoader workers: offsets, no open files; the copy reads the same bytes
    ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._handles == {} and np.array_equal(np.asarray(copy[6][0]), arrays[6])


def test_long_keys_unsorted_members_and_unreadable_shards(tmp_path):
    """The cases that decided the reader (benchmarks/tar_readers.py): TarWriter puts a key over 100 characters
    in a pax header, which wids' mmap reader cannot read; ``tar cf`` stores a folder unsorted, which wids'
    consecutive grouping would split; a file that is no tar is reported by name."""
    arrays = _images(2)
    long_key = "d/" + "k" * 120
    with wds.TarWriter(str(tmp_path / "long.tar")) as writer:
        for i in range(2):
            writer.write({"__key__": f"{long_key}{i}", "png": _encoded(arrays[i]), "cls": 5 + i})
    ds = TarShards(str(tmp_path / "long.tar"))
    assert len(ds) == 2 and ds.name(1).endswith(f"{long_key}1") and ds[1][1] == 6
    assert np.array_equal(np.asarray(ds[1][0]), arrays[1])

    with tarfile.open(tmp_path / "unsorted.tar", "w") as tar:  # a.png, b.png, b.cls, a.cls
        for name, data in [("a.png", _encoded(arrays[0])), ("b.png", _encoded(arrays[1])), ("b.cls", b"2"),
                           ("a.cls", b"1")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = TarShards(str(tmp_path / "unsorted.tar"))
    assert len(ds) == 2 and [ds[0][1], ds[1][1]] == [1, 2]

    (tmp_path / "junk.tar").write_bytes(b"this is no tar file" * 40)
    with pytest.raises(BadImageError, match=r"junk\.tar: not a readable tar file"):
        TarShards(str(tmp_path / "junk.tar"))
    assert len(TarShards(str(tmp_path / "{long,unsorted}.tar"))) == 4  # brace lists, as braceexpand reads them


# -- training and encoding ----------------------------------------------------------------------------------

def _train_and_encode(tmp_path, data: str, arrays: list[np.ndarray], *, train: bool) -> TokenDataset:
    """``artok encode`` of ``data`` with a tokenizer trained on it for two steps (``train``) or a fresh one;
    returns the read-back encoding and the tokenizer's in-memory ids of ``arrays``."""
    tokenizer = tmp_path / "run" / "tokenizer"
    if train:
        assert cli(["train", "tokenizer", "--config", str(TINY), "--data", data, "--out-dir", str(tmp_path / "run"),
                    *TRAIN]) == 0
        records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2]
    else:
        build_tokenizer("tiny-var-vqvae").save_pretrained(tokenizer)
    assert cli(["encode", str(tokenizer), "--data", data, "--out", str(tmp_path / "enc"), "--shard-size", "4",
                "--batch-size", "1", "--num-workers", "0", "--cpu"]) == 0
    return TokenDataset(tmp_path / "enc", verify=True), _reference_ids(from_pretrained(tokenizer).eval(), arrays)


def _check_ids(encoded: TokenDataset, reference: list[torch.Tensor], indices: list[int]) -> None:
    batch = collate_tokens([encoded[i] for i in range(len(encoded))])
    assert batch["index"].tolist() == indices
    for got, want in zip(batch["ids"], reference):
        assert torch.equal(got, want[indices])


@pytest.mark.parametrize("train", TRAINED)
def test_tarwriter_shards_train_a_tokenizer_and_encode_to_the_in_memory_ids(tmp_path, train, fresh_accelerate_state):
    arrays = _images(10)
    pattern = write_tarwriter_shards(tmp_path / "shards", arrays, per_shard=4, corrupt=5)
    encoded, reference = _train_and_encode(tmp_path, pattern, arrays, train=train)
    assert encoded.manifest["source"] == pattern
    good = [i for i in range(10) if i != 5]
    _check_ids(encoded, reference, good)
    assert encoded.labels.tolist() == [i % 3 for i in good]
    [skipped] = encoded.manifest["skipped"]
    assert skipped["index"] == 5 and "shard-001.tar:001/00005" in skipped["reason"]


@pytest.mark.parametrize("train", TRAINED)
def test_hf_dataset_saved_to_disk_trains_and_encodes(tmp_path, train, fresh_accelerate_state):
    datasets = pytest.importorskip("datasets")
    arrays = _images(6)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": [{"bytes": _encoded(a), "path": None} for a in arrays],
                                "label": [i % 4 for i in range(6)]}, features=features).save_to_disk(tmp_path / "hf")
    encoded, reference = _train_and_encode(tmp_path, str(tmp_path / "hf"), arrays, train=train)
    _check_ids(encoded, reference, list(range(6)))
    assert encoded.labels.tolist() == [i % 4 for i in range(6)]


def _cache_as_downloaded(datasets, cache, repo_id: str, parquet) -> None:
    """Fill ``cache`` as ``load_dataset(repo_id)`` leaves it after downloading a parquet dataset from the Hub:
    ``<namespace>___<name>/default/0.0.0/<commit>/<name>-train.arrow`` beside its ``dataset_info.json``."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    builder = Parquet(cache_dir=str(cache), dataset_name=f"{namespace}___{name}", config_id="default",
                      hash="0" * 40, data_files={"train": str(parquet)})
    builder.download_and_prepare()
    folder = cache / f"{namespace}___{name}" / "default" / "0.0.0" / ("0" * 40)
    # the builder names its file after dataset_name; the Hub's builder after the repo's name
    (folder / f"{namespace}___{name}-train.arrow").rename(folder / f"{name}-train.arrow")


@pytest.mark.parametrize("train", TRAINED)
def test_hf_dataset_loaded_by_name_offline_trains_and_encodes(tmp_path, train, monkeypatch, fresh_accelerate_state):
    datasets = pytest.importorskip("datasets")
    arrays = _images(6)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": [{"bytes": _encoded(a), "path": None} for a in arrays],
                                "label": [2] * 6}, features=features).to_parquet(tmp_path / "train.parquet")
    cache = tmp_path / "hf-cache"
    _cache_as_downloaded(datasets, cache, "artok-test/tiny_images", tmp_path / "train.parquet")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import: set for this process too
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    assert data_config_from_spec("hf:artok-test/tiny_images").source == "hf"
    encoded, reference = _train_and_encode(tmp_path, "hf:artok-test/tiny_images", arrays, train=train)
    _check_ids(encoded, reference, list(range(6)))
    assert set(encoded.labels.tolist()) == {2}
    with pytest.raises(ConnectionError, match="artok-test/not_cached"):
        build_dataset(data_config_from_spec("hf:artok-test/not_cached"), image_size=32)

