"""Sharded pre-tokenized datasets: fixed-size binary records, a JSON manifest, numpy-only reading.

Layout of an encoded dataset directory::

    manifest.json            tokenizer config + weights hash, scale layout, record dtype, augmentations, shards
    shard-00000.bin          N records of the numpy structured dtype described in the manifest
    shard-00000.json         that shard's sidecar: input range, record count, sha256, skipped inputs

Shard k holds the inputs with indices [k·S, (k+1)·S) (S = ``shard_size``), so a killed run resumes by
skipping the shards that are complete, without duplicates or gaps. A shard is written under a temporary
name and renamed when complete, so no reader ever sees a partial shard. Ids are ``uint16`` when the
codebook has at most 65,536 entries, else ``int32``; a hybrid tokenizer's continuous residual is float16.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "artok-tokens"
FORMAT_VERSION = 1


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.bin"


def record_dtype(num_tokens: int, codebook_size: int, residual_shape: tuple[int, ...] | None = None) -> np.dtype:
    """One record: input index, view (augmentation) index, label, ids of all scales (+ residual)."""
    id_type = "<u2" if codebook_size <= 65536 else "<i4"
    fields = [("index", "<i8"), ("view", "<i2"), ("label", "<i4"), ("ids", id_type, (num_tokens,))]
    if residual_shape:
        fields.append(("residual", "<f2", tuple(residual_shape)))
    return np.dtype(fields)


def dtype_to_json(dt: np.dtype) -> list:
    return [[name, dt.fields[name][0].base.str, list(dt.fields[name][0].shape)] for name in dt.names]


def dtype_from_json(spec: list) -> np.dtype:
    return np.dtype([(name, base, tuple(shape)) if shape else (name, base) for name, base, shape in spec])


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------

class ShardWriter:
    """Writes one shard: ``add`` records, then ``close`` renames it into place with its sidecar."""

    def __init__(self, directory: Path, k: int, dtype: np.dtype, input_range: tuple[int, int]) -> None:
        self.directory, self.k, self.dtype, self.input_range = Path(directory), k, dtype, input_range
        self.final = self.directory / shard_name(k)
        self.tmp = self.directory / f".{shard_name(k)}.tmp"
        self._fh = open(self.tmp, "wb")
        self.count = 0
        self.skipped: list[dict] = []

    def add(self, records: np.ndarray) -> None:
        if records.dtype != self.dtype:
            raise ValueError(f"record dtype {records.dtype} does not match the shard dtype {self.dtype}")
        self._fh.write(records.tobytes())
        self.count += len(records)

    def skip(self, index: int, reason: str) -> None:
        self.skipped.append({"index": int(index), "reason": reason})

    def close(self) -> dict:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.final)
        info = {"name": self.final.name, "shard": self.k, "input_range": list(self.input_range), "count": self.count,
                "sha256": sha256_file(self.final), "skipped": self.skipped}
        _write_json_atomic(self.final.with_suffix(".json"), info)
        return info

    def abort(self) -> None:
        self._fh.close()
        self.tmp.unlink(missing_ok=True)


def completed_shards(directory: Path) -> dict[int, dict]:
    """Sidecars of the shards that were completed (file renamed into place and sidecar written)."""
    done = {}
    for sidecar in sorted(Path(directory).glob("shard-*.json")):
        try:
            info = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            continue  # a sidecar interrupted mid-write: the shard is redone
        if (Path(directory) / info["name"]).exists():
            done[int(info["shard"])] = info
    return done


def write_manifest(directory: Path, *, header: dict, dtype: np.dtype, num_inputs: int, shard_size: int) -> dict:
    """Assemble ``manifest.json`` from the completed shards' sidecars; raises if any shard is missing."""
    directory = Path(directory)
    num_shards = (num_inputs + shard_size - 1) // shard_size
    done = completed_shards(directory)
    missing = [k for k in range(num_shards) if k not in done]
    if missing:
        raise RuntimeError(f"{directory}: shards {missing[:10]} are not complete; run the encoding again to resume")
    shards = [done[k] for k in range(num_shards)]
    manifest = dict(header)
    manifest.update({
        "format": FORMAT, "format_version": FORMAT_VERSION, "record_dtype": dtype_to_json(dtype),
        "num_inputs": num_inputs, "shard_size": shard_size,
        "num_records": sum(s["count"] for s in shards),
        "skipped": [s for shard in shards for s in shard["skipped"]],
        "shards": [{k: s[k] for k in ("name", "input_range", "count", "sha256")} for s in shards],
    })
    _write_json_atomic(directory / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------------------
# Reading (numpy only; torch is optional for TokenDataset's tensors)
# ---------------------------------------------------------------------------------------------------------

def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: not an encoded token dataset (or the encoding "
                                f"did not finish; run it again to resume)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an artok token manifest (format {manifest.get('format')!r})")
    return manifest


def open_shard(directory: str | Path, shard: dict, dtype: np.dtype, *, verify: bool = False) -> np.ndarray:
    """Memory-map one shard as a structured array of records."""
    path = Path(directory) / shard["name"]
    expected = shard["count"] * dtype.itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {expected} ({shard['count']} records)")
    if verify and sha256_file(path) != shard["sha256"]:
        raise ValueError(f"{path}: checksum mismatch, the shard is corrupt")
    if shard["count"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(shard["count"],))


@dataclass
class TokenRecord:
    ids: list  # per scale, (pn*pn,) int64 tensors (or arrays)
    label: int
    index: int
    view: int
    residual: object = None  # (C, h, w) float32 tensor for hybrid tokenizers


class TokenDataset:
    """Memory-mapped reader of an encoded dataset; a ``torch.utils.data.Dataset`` of ``TokenRecord``.

    ``verify=True`` checks every shard's sha256 on open. Items are tensors when ``as_tensors`` (default),
    numpy arrays otherwise.
    """

    def __init__(self, directory: str | Path, *, verify: bool = False, as_tensors: bool = True) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.dtype = dtype_from_json(self.manifest["record_dtype"])
        self.scales = tuple(self.manifest["scales"])
        self.as_tensors = as_tensors
        self.shards = [open_shard(self.directory, s, self.dtype, verify=verify) for s in self.manifest["shards"]]
        counts = np.array([len(s) for s in self.shards], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._splits = np.cumsum([s * s for s in self.scales])[:-1]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def record(self, i: int) -> np.void:
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for {len(self)} records")
        i = i % len(self)
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return self.shards[k][i - self._offsets[k]]

    def __getitem__(self, i: int) -> TokenRecord:
        r = self.record(i)
        ids = np.split(r["ids"].astype(np.int64), self._splits)
        residual = r["residual"].astype(np.float32) if "residual" in self.dtype.names else None
        if self.as_tensors:
            import torch

            ids = [torch.from_numpy(a) for a in ids]
            residual = torch.from_numpy(residual) if residual is not None else None
        return TokenRecord(ids=ids, label=int(r["label"]), index=int(r["index"]), view=int(r["view"]),
                           residual=residual)

    def __iter__(self) -> Iterator[TokenRecord]:
        for i in range(len(self)):
            yield self[i]

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([np.asarray(s["label"]) for s in self.shards]) if self.shards else np.zeros(0, np.int32)


def collate_tokens(records: list[TokenRecord]) -> dict:
    """Batch TokenRecords: ids → list per scale of (B, pn*pn) int64, labels (B,), residual (B, C, h, w)."""
    import torch

    out = {
        "ids": [torch.stack([r.ids[k] for r in records]) for k in range(len(records[0].ids))],
        "labels": torch.tensor([r.label for r in records], dtype=torch.long),
        "index": torch.tensor([r.index for r in records], dtype=torch.long),
    }
    if records[0].residual is not None:
        out["residual"] = torch.stack([r.residual for r in records])
    return out
