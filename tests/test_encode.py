"""Encoding datasets to sharded token ids: round trip, resume, corrupt inputs, processes, numpy-only reading."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from artok import build_tokenizer
from artok import from_pretrained as artok_from
from artok.data.encode import encode_dataset
from artok.data.tokens import TokenDataset, collate_tokens, record_dtype


class Images(Dataset):
    """Deterministic random images with labels; indices in ``bad`` raise like a corrupt file would."""

    def __init__(self, n=23, size=32, bad=(), interrupt_at=None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        self.bad, self.interrupt_at = set(bad), interrupt_at

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.interrupt_at:
            raise KeyboardInterrupt("simulated kill")
        if i in self.bad:
            raise OSError(f"image file is truncated ({i})")
        return self.x[i], i % 5


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("tiny-var-vqvae").eval()


def encode(tok, ds, out, **kw):
    kw.setdefault("shard_size", 8)
    kw.setdefault("batch_size", 3)
    return encode_dataset(tok, ds, out, image_size=32, progress=False, **kw)


def test_round_trip_equals_direct_encoding(tok, tmp_path):
    ds = Images()
    manifest = encode(tok, ds, tmp_path / "enc")
    assert manifest["num_records"] == 23 and len(manifest["shards"]) == 3
    assert manifest["tokenizer_config"] == tok.config.to_dict() and manifest["scales"] == [1, 2, 4]
    read = TokenDataset(tmp_path / "enc", verify=True)
    assert read.dtype["ids"].base == np.uint16
    batch = collate_tokens([read[i] for i in range(len(read))])
    assert batch["index"].tolist() == list(range(23)) and batch["labels"].tolist() == [i % 5 for i in range(23)]
    direct = tok.tokenize(ds.x)
    for a, b in zip(batch["ids"], direct):
        assert torch.equal(a, b)
    assert torch.equal(tok.detokenize(batch["ids"]), tok.detokenize(direct))


def test_resume_after_kill_has_no_duplicates_or_gaps(tok, tmp_path):
    out = tmp_path / "enc"
    with pytest.raises(KeyboardInterrupt):
        encode(tok, Images(interrupt_at=13), out)
    assert sorted(p.name for p in out.glob("shard-*.bin")) == ["shard-00000.bin"]
    assert not list(out.glob(".shard-*")), "the partial shard must not be left behind"
    assert not (out / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        TokenDataset(out)
    first = (out / "shard-00000.bin").stat().st_mtime_ns
    encode(tok, Images(), out)
    assert (out / "shard-00000.bin").stat().st_mtime_ns == first, "completed shards are not redone"
    read = TokenDataset(out)
    assert sorted(r.index for r in read) == list(range(23))


def test_corrupt_inputs_are_skipped_and_listed(tok, tmp_path):
    manifest = encode(tok, Images(bad={2, 17}), tmp_path / "enc")
    assert manifest["num_records"] == 21
    assert [s["index"] for s in manifest["skipped"]] == [2, 17]
    assert "truncated" in manifest["skipped"][0]["reason"]
    assert 2 not in {r.index for r in TokenDataset(tmp_path / "enc")}


def test_processes_split_shards(tok, tmp_path):
    """Two processes (run one after the other here) each write their shards; rank 0 writes the manifest."""
    out = tmp_path / "enc"
    assert encode(tok, Images(), out, rank=1, world_size=2) is None
    assert sorted(p.name for p in out.glob("shard-*.bin")) == ["shard-00001.bin"]
    manifest = encode(tok, Images(), out, rank=0, world_size=2)
    assert manifest["num_records"] == 23
    assert sorted(r.index for r in TokenDataset(out)) == list(range(23))


def test_hflip_views(tok, tmp_path):
    ds = Images(n=5)
    manifest = encode(tok, ds, tmp_path / "enc", augment="hflip")
    assert manifest["views_per_input"] == 2 and manifest["num_records"] == 10
    read = TokenDataset(tmp_path / "enc")
    flipped = [r for r in read if r.view == 1]
    direct = tok.tokenize(ds.x.flip(-1))
    for r in flipped:
        assert all(torch.equal(a, b[r.index]) for a, b in zip(r.ids, direct))


def test_different_settings_refused_unless_overwrite(tok, tmp_path):
    encode(tok, Images(n=5), tmp_path / "enc")
    with pytest.raises(FileExistsError, match="augment.*--overwrite"):
        encode(tok, Images(n=5), tmp_path / "enc", augment="hflip")
    manifest = encode(tok, Images(n=5), tmp_path / "enc", augment="hflip", overwrite=True)
    assert manifest["views_per_input"] == 2


def test_corrupt_shard_is_detected(tok, tmp_path):
    encode(tok, Images(n=5), tmp_path / "enc")
    shard = tmp_path / "enc" / "shard-00000.bin"
    data = bytearray(shard.read_bytes())
    data[20] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        TokenDataset(tmp_path / "enc", verify=True)


def test_id_dtype_follows_codebook_size():
    assert record_dtype(10, 65536)["ids"].base == np.uint16
    assert record_dtype(10, 65537)["ids"].base == np.int32
    assert record_dtype(10, 16, (4, 2, 2))["residual"].base == np.float16


def test_reading_needs_only_numpy(tok, tmp_path):
    """A shard is readable with numpy and the manifest alone: no torch, no artok."""
    encode(tok, Images(n=5), tmp_path / "enc")
    code = (
        "import sys, json, numpy as np\n"
        "sys.modules['torch'] = None; sys.modules['artok'] = None\n"
        f"d = {str(tmp_path / 'enc')!r}\n"
        "m = json.load(open(d + '/manifest.json'))\n"
        "dt = np.dtype([(n, b, tuple(s)) for n, b, s in m['record_dtype']])\n"
        "r = np.memmap(d + '/' + m['shards'][0]['name'], dtype=dt, mode='r')\n"
        "print(len(r), r['ids'].shape[1], r['ids'].dtype, r['label'][4])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["5", "21", "uint16", "4"]


def test_cli_encode_builtin_dataset_and_resume(tmp_path, capsys):
    from artok.cli import main

    build_tokenizer("tiny-vq").save_pretrained(tmp_path / "tok")
    args = ["encode", str(tmp_path / "tok"), "--data", "procedural", "--num-samples", "40", "--out",
            str(tmp_path / "enc"), "--shard-size", "16", "--num-workers", "0", "--cpu"]
    assert main(args) == 0
    read = TokenDataset(tmp_path / "enc", verify=True)
    assert len(read) == 40 and read.manifest["source"] == "procedural"
    assert len(set(read.labels.tolist())) > 3, "the procedural set is class-labelled"
    capsys.readouterr()
    assert main(args) == 0  # everything already encoded: nothing is redone
    assert main(args + ["--augment", "hflip"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_sigkill_part_way_then_resume_matches_uninterrupted_run(tmp_path):
    """Kill `artok encode` with SIGKILL once a shard is on disk, run it again: the shards hold every record exactly
    once, byte-identical to an uninterrupted run."""
    import os
    import signal
    import time

    build_tokenizer("tiny-var-vqvae").save_pretrained(tmp_path / "tok")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(out):
        return [sys.executable, "-m", "artok.cli", "encode", str(tmp_path / "tok"), "--data", "procedural",
                "--num-samples", "64", "--out", str(out), "--shard-size", "16", "--batch-size", "4",
                "--num-workers", "0", "--cpu"]

    proc = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "shard-00000.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (tmp_path / "killed").glob("shard-*.bin"))
    assert 1 <= len(done_before) < 4 and not (tmp_path / "killed" / "manifest.json").exists()
    res = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    # the uninterrupted run, in this process, with what the CLI builds
    from artok.data import build_source, data_config_from_spec
    from artok.data.encode import ImageSource

    tok = artok_from(tmp_path / "tok")
    source = build_source(data_config_from_spec("procedural", num_samples=64), image_size=32, seed=0)
    encode_dataset(tok, ImageSource(source, 32, "none"), tmp_path / "straight", image_size=32, shard_size=16,
                   batch_size=4, source="procedural", progress=False)
    killed, straight = TokenDataset(tmp_path / "killed", verify=True), TokenDataset(tmp_path / "straight")
    assert sorted(r.index for r in killed) == list(range(64))
    assert [s["sha256"] for s in killed.manifest["shards"]] == [s["sha256"] for s in straight.manifest["shards"]]
    assert not list((tmp_path / "killed").glob(".*.tmp")), "no partial shard is left behind"
