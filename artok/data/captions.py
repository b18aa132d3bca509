"""Captions beside encoded token ids, and optionally the text encoder's outputs for them, so that
text-conditioned training need not run the encoder (``artok encode --captions`` / ``--text-encoder``).

Layout, in the token directory (records find their caption by their input ``index``)::

    captions.jsonl             line i: the caption of input i (JSON string; null when it had none)
    contexts.bin               per input: mask (T,) uint8 and context (T, D) float16, a numpy structured array
    null_context.safetensors   the encoded null prompt (context (T, D), mask (T,)) when the record names one
    text.json                  the text encoder's record and weights hash, T and D, the number of inputs

``manifest.json`` gets the same description under ``"text"``. Files are written under temporary names and
renamed, so an interrupted run leaves no partial file; a finished one with the same captions and encoder is
not redone.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from artok.config import TextEncoderConfig

CAPTIONS = "captions.jsonl"
CONTEXTS = "contexts.bin"
NULL_CONTEXT = "null_context.safetensors"
TEXT_MANIFEST = "text.json"
FORMAT = "artok-text"


def context_dtype(length: int, dim: int) -> np.dtype:
    return np.dtype([("mask", "u1", (length,)), ("context", "<f2", (length, dim))])


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def source_captions(source, num_inputs: int) -> tuple[list[str | None], list[dict]]:
    """Every input's caption (None where it has none) and the list of those skipped, with the reason."""
    if not hasattr(source, "caption"):
        raise ValueError(f"{type(source).__name__} has no captions: use a folder with a .txt beside each image, tar "
                         "shards with .txt/.json members, a Hugging Face dataset with a text column "
                         "(--caption-key), or the procedural shapes")
    captions, missing = [], []
    for i in range(num_inputs):
        try:
            captions.append(source.caption(i))
        except Exception as e:  # a missing caption is listed, never fatal
            captions.append(None)
            missing.append({"index": i, "reason": str(e)})
    return captions, missing


def text_encoder_identity(encoder) -> dict:
    """What decides the stored contexts: the record (without the null prompt) and the weights' hash."""
    from artok.data.encode import weights_hash

    return {**encoder.record().identity(), "weights_sha256": weights_hash(encoder.model)}


@torch.no_grad()
def write_captions(source, out_dir: str | Path, *, encoder=None, batch_size: int = 64, progress: bool = True) -> dict:
    """Write the captions of ``source`` (which has ``caption(i)``) and, with a ``TextEncoder``, their contexts
    into ``out_dir``; returns the text description (also in ``manifest.json`` under ``"text"``)."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    n = len(source)
    captions, missing = source_captions(source, n)
    text = "\n".join(json.dumps(c, ensure_ascii=False) for c in captions) + "\n"
    info = {"format": FORMAT, "num_inputs": n, "captions": CAPTIONS,
            "captions_sha256": hashlib.sha256(text.encode()).hexdigest(), "missing": missing}
    if encoder is not None:
        info.update(text_encoder=encoder.record().to_dict(), identity=text_encoder_identity(encoder),
                    context_shape=[encoder.max_length, encoder.context_dim], context_dtype="float16",
                    contexts=CONTEXTS, null_context=NULL_CONTEXT if encoder.config.null_prompt is not None else None)
    old = out / TEXT_MANIFEST
    done = old.exists() and json.loads(old.read_text()) == info and all(
        (out / f).exists() for f in (CAPTIONS, info.get("contexts"), info.get("null_context")) if f)
    if not done:
        _write_atomic(out / CAPTIONS, text.encode())
        if encoder is not None:
            T, D = info["context_shape"]
            tmp = out / f".{CONTEXTS}.tmp"
            records = np.lib.format.open_memmap(tmp, mode="w+", dtype=context_dtype(T, D), shape=(n,))
            for lo in tqdm(range(0, n, batch_size), desc="encode captions", unit="batch", disable=not progress):
                batch = [c if c is not None else "" for c in captions[lo:lo + batch_size]]
                ctx = encoder(batch)
                records["mask"][lo:lo + len(batch)] = ctx.mask.cpu().numpy()
                records["context"][lo:lo + len(batch)] = ctx.context.cpu().numpy().astype(np.float16)
            records.flush()
            del records
            os.replace(tmp, out / CONTEXTS)
            if encoder.config.null_prompt is not None:
                from safetensors.torch import save_file

                null = encoder.null_context(1)
                save_file({"context": null.context[0].half().cpu().contiguous(), "mask": null.mask[0].cpu()},
                          str(out / NULL_CONTEXT))
        _write_atomic(old, json.dumps(info, indent=2).encode())
    manifest_path = out / "manifest.json"
    if manifest_path.exists():  # the token manifest names the captions and the text encoder too
        manifest = json.loads(manifest_path.read_text())
        manifest["text"] = {k: v for k, v in info.items() if k != "missing"}
        _write_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
    if progress:
        print(f"{n - len(missing)} captions{' and contexts' if encoder is not None else ''} → {out}"
              f"{f' ({len(missing)} inputs without one)' if missing else ''}")
    return info


class CaptionStore:
    """Reads what ``write_captions`` wrote: ``caption(index)``, and with contexts ``context(index)`` → (context
    (T, D) float32, mask (T,) bool), ``record`` (the ``TextEncoderConfig``) and ``null_context()``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / TEXT_MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{self.directory} holds no captions ({TEXT_MANIFEST}): encode with "
                                    "`artok encode ... --captions` or `--text-encoder NAME`")
        self.info = json.loads(path.read_text())
        self.captions = [json.loads(line) for line in (self.directory / CAPTIONS).read_text().splitlines()]
        self.has_contexts = "contexts" in self.info
        self.record = TextEncoderConfig.from_dict(self.info["text_encoder"]) if self.has_contexts else None
        if self.has_contexts:
            T, D = self.info["context_shape"]
            self.contexts = np.load(self.directory / CONTEXTS, mmap_mode="r")
            if self.contexts.dtype != context_dtype(T, D) or len(self.contexts) != self.info["num_inputs"]:
                raise ValueError(f"{self.directory / CONTEXTS} does not match {TEXT_MANIFEST}; encode again")

    @property
    def context_shape(self) -> tuple[int, int] | None:
        return tuple(self.info["context_shape"]) if self.has_contexts else None

    def caption(self, index: int) -> str:
        caption = self.captions[index]
        if caption is None:
            raise KeyError(f"input {index} of {self.directory} has no caption")
        return caption

    def context(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.contexts[index]
        return torch.from_numpy(r["context"].astype(np.float32)), torch.from_numpy(r["mask"].astype(bool))

    def null_context(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The stored null prompt's (context (T, D), mask (T,)), or None (HART's zero context)."""
        name = self.info.get("null_context")
        if not name:
            return None
        from safetensors.torch import load_file

        t = load_file(str(self.directory / name))
        return t["context"].float(), t["mask"].bool()
