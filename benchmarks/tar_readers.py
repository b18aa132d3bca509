"""Reading WebDataset tar shards: artok's former own tar indexer against wids (indexed random access, its
mmap and its tarfile reader, and ``ShardListDataset`` with its shard LRU) and webdataset (streaming).

Writes ``--shards`` shards of ``--per-shard`` samples with ``webdataset.TarWriter`` (a 32 px PNG, ``.cls``,
``.txt``, ``.json``), then times, on one process:

- indexing every shard (what a training or encoding process does once at start, and each DataLoader worker
  again since open files do not cross processes);
- reading the image bytes of ``--reads`` samples in a global random permutation (artok's sampler: exact
  resumption and per-process splits need indices, so reads are random over all shards);
- webdataset's streaming pipeline, which has no index: resuming at sample p means reading the p samples
  before it (timed for p = half the data set);
- correctness on shards TarWriter writes: a key longer than 100 characters (a pax header) and a member
  name repeated in one shard.

    python benchmarks/tar_readers.py --shards 8 --per-shard 1000 --reads 4000
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_shards(root: Path, shards: int, per_shard: int) -> list[str]:
    import webdataset as wds

    rng = np.random.default_rng(0)
    paths = []
    for s in range(shards):
        path = root / f"shard-{s:05d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
                writer.write({"__key__": f"{s:05d}/{i:06d}", "png": buf.getvalue(), "cls": i % 10,
                              "txt": f"sample {i}", "json": {"caption": f"sample {i}"}})
        paths.append(str(path))
    return paths


def own_index(path: str) -> dict[str, dict[str, tuple[int, int]]]:
    """The indexer artok used before wids (artok/data/sources.py at commit 33def9d)."""
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if dot:
                key = f"{directory}/{stem}" if directory else stem
                groups.setdefault(key, {})[ext.lower()] = (member.offset_data, member.size)
    return groups


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--lru-size", type=int, default=10, help="wids ShardListDataset's default is 10")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import webdataset as wds
    import wids
    from wids.wids import IndexedTarSamples

    out: dict[str, object] = {"shards": args.shards, "per_shard": args.per_shard, "reads": args.reads}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(Path(tmp), args.shards, args.per_shard)
        n = args.shards * args.per_shard
        out["bytes_per_shard"] = Path(paths[0]).stat().st_size

        # -- indexing ------------------------------------------------------------------------------------
        t_own, own = timed(lambda: [own_index(p) for p in paths])
        t_mm, mm = timed(lambda: [quiet(IndexedTarSamples, path=p, use_mmap=True) for p in paths])
        t_tf, tf = timed(lambda: [quiet(IndexedTarSamples, path=p, use_mmap=False, index_file=None) for p in paths])
        out["index_ms_per_shard"] = {"own tarfile indexer": 1e3 * t_own / len(paths),
                                     "wids mmap (MMIndexedTar)": 1e3 * t_mm / len(paths),
                                     "wids tarfile (TarFileReader)": 1e3 * t_tf / len(paths)}

        # -- random reads in a global permutation ---------------------------------------------------------
        order = random.Random(0).sample(range(n), min(args.reads, n))
        where = [(k // args.per_shard, own[k // args.per_shard][f"{k // args.per_shard:05d}/{k % args.per_shard:06d}"]["png"])
                 for k in order]
        handles = [open(p, "rb") for p in paths]

        def read_own():
            total = 0
            for s, (offset, size) in where:
                handles[s].seek(offset)
                total += len(handles[s].read(size))
            return total

        def read_wids(readers):
            def run():
                return sum(len(readers[k // args.per_shard][k % args.per_shard][".png"].getvalue()) for k in order)
            return run

        lru = quiet(wids.ShardListDataset, [{"url": p, "nsamples": args.per_shard} for p in paths],
                    localname=lambda url: url, lru_size=args.lru_size, transformations=[])

        def read_lru():
            return quiet(lambda: sum(len(lru[k][".png"].getvalue()) for k in order))

        reads = {}
        for name, fn in [("own seek + read", read_own), ("wids mmap", read_wids(mm)),
                         ("wids tarfile", read_wids(tf)), (f"wids ShardListDataset (lru_size={args.lru_size})", read_lru)]:
            t, total = timed(fn)
            reads[name] = {"samples_per_s": len(order) / t, "bytes": total}
        accesses, misses = lru.get_stats()
        reads[f"wids ShardListDataset (lru_size={args.lru_size})"]["shard_reopens_per_read"] = misses / accesses
        out["random_reads"] = reads
        for h in handles:
            h.close()

        # -- streaming ------------------------------------------------------------------------------------
        def stream(limit=None):
            count = 0
            for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
                count += 1
                if limit is not None and count >= limit:
                    break
            return count

        t_stream, count = timed(stream, repeat=1)
        t_skip, _ = timed(lambda: stream(n // 2), repeat=1)
        out["webdataset_stream"] = {"samples_per_s": count / t_stream,
                                    "resume_at_half_s": t_skip,
                                    "wids_resume_at_half_s": 0.0}

        # -- correctness on TarWriter's own output ----------------------------------------------------------
        long_key = Path(tmp) / "long.tar"
        with wds.TarWriter(str(long_key)) as writer:
            for i in range(2):
                writer.write({"__key__": "d/" + "x" * 120 + f"_{i}", "png": b"png", "cls": i})
        dup = Path(tmp) / "dup.tar"
        with tarfile.open(dup, "w") as tar:  # a member appended again (tar -r), as tar's update mode does
            for name, data in [("a.png", b"A1"), ("a.cls", b"1"), ("b.png", b"B"), ("b.cls", b"2"), ("a.png", b"A2")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        checks = {}
        for name, mmap in [("wids mmap", True), ("wids tarfile", False)]:
            row = {}
            try:
                samples = quiet(IndexedTarSamples, path=str(long_key), use_mmap=mmap, index_file=None)
                row["key_over_100_chars"] = f"{len(samples)} samples, key length {len(samples[0]['__key__'])}"
            except Exception as e:  # noqa: BLE001 - the failure is the finding
                row["key_over_100_chars"] = f"{type(e).__name__}: {e}"
            samples = quiet(IndexedTarSamples, path=str(dup), use_mmap=mmap, index_file=None)
            row["repeated_member"] = [{k: v.getvalue().decode() if k != "__key__" else v for k, v in
                                       samples[i].items()} for i in range(len(samples))]
            checks[name] = row
        out["correctness"] = checks
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
