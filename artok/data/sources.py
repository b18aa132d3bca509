"""Image datasets on disk: image folders, Hugging Face ``datasets``, and WebDataset tar shards.

Each returns ``(PIL RGB image, label)`` from ``__getitem__`` and raises ``BadImageError`` for a sample
that cannot be decoded; ``name(i)`` says which file that was, and ``caption(i)`` gives its text for
text-conditioned training (a ``.txt`` file beside an image, a ``.txt`` or ``.json`` member of a tar sample, a
text column of a Hugging Face dataset), raising ``BadImageError`` when a sample has none. Decoding goes through ``load_image``, so
every source handles CMYK, 16-bit, grayscale, palette and RGBA files the same way.
"""
from __future__ import annotations

import glob
import os
import tarfile
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from artok.data.images import IMAGE_EXTENSIONS, BadImageError, is_image_file, load_image

# ---------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------


class ImageFolder(Dataset):
    """Every image file under ``root``, recursively, in sorted order. Files directly in first-level
    sub-folders and deeper take that sub-folder as their class (sorted names → 0, 1, ...); files at the top
    level get label 0 when there are no sub-folders."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and is_image_file(p))
        if not self.files:
            raise FileNotFoundError(f"no image files under {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        top = sorted({p.relative_to(self.root).parts[0] for p in self.files if len(p.relative_to(self.root).parts) > 1})
        self.classes = top
        index = {name: i for i, name in enumerate(top)}
        self.labels = [index.get(p.relative_to(self.root).parts[0], 0) if len(p.relative_to(self.root).parts) > 1
                       else 0 for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_image(self.files[index]), self.labels[index]

    def name(self, index: int) -> str:
        return str(self.files[index])

    def caption(self, index: int) -> str:
        """The text of ``photo.txt`` beside ``photo.jpg``."""
        path = self.files[index].with_suffix(".txt")
        if not path.is_file():
            raise BadImageError(f"{self.files[index]}: no caption ({path.name} beside the image)")
        return path.read_text(encoding="utf-8", errors="replace").strip()


# ---------------------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------------------


def _load_hf(path: str, split: str):
    try:
        import datasets
    except ImportError:
        raise ModuleNotFoundError("data.source 'hf' needs the datasets package: pip install datasets "
                                  "(or pip install 'artok[data]')") from None
    local = Path(path).expanduser()
    if local.is_dir() and any((local / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        data = datasets.load_from_disk(str(local))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"{local} has splits {', '.join(data)}, not '{split}'")
            data = data[split]
        return data
    return datasets.load_dataset(path, split=split)


class HFImageDataset(Dataset):
    """A Hugging Face dataset with an image column (``image_key``) and an optional integer label column.

    The image column is read undecoded (``datasets.Image(decode=False)``) and decoded by ``load_image``, so
    a corrupt row is reported and skipped instead of raising inside ``datasets``.
    """

    def __init__(self, path: str, *, split: str = "train", image_key: str = "image", label_key: str = "label",
                 caption_key: str = "caption") -> None:
        import datasets

        data = _load_hf(path, split)
        if image_key not in data.column_names:
            raise ValueError(f"dataset {path} has no column '{image_key}' (columns: {', '.join(data.column_names)}); "
                             f"set data.image_key")
        if isinstance(data.features[image_key], datasets.Image):
            data = data.cast_column(image_key, datasets.Image(decode=False))
        self.data, self.path, self.image_key = data, path, image_key
        self.label_key = label_key if label_key in data.column_names else None
        self.caption_key = caption_key

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.data[index]
        value, name = row[self.image_key], self.name(index)
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = load_image(value["bytes"], name=name)
        elif isinstance(value, dict) and value.get("path"):
            image = load_image(value["path"], name=name)
        elif isinstance(value, (bytes, bytearray)):
            image = load_image(value, name=name)
        elif isinstance(value, str):
            image = load_image(value, name=name)
        else:
            raise BadImageError(f"{name}: unsupported image value of type {type(value).__name__}")
        if image.mode != "RGB":
            from artok.data.images import to_rgb

            image = to_rgb(image)
        label = int(row[self.label_key]) if self.label_key is not None and row[self.label_key] is not None else 0
        return image, label

    def name(self, index: int) -> str:
        return f"{self.path}[{index}]"

    def caption(self, index: int) -> str:
        """The ``caption_key`` column (``--caption-key``, ``data.caption_key``)."""
        if self.caption_key not in self.data.column_names:
            raise BadImageError(f"{self.name(index)}: no caption column '{self.caption_key}' (columns: "
                                f"{', '.join(self.data.column_names)}); set data.caption_key")
        value = self.data[index][self.caption_key]
        if isinstance(value, (list, tuple)):  # several captions per image: the first
            value = value[0] if value else None
        if not isinstance(value, str):
            raise BadImageError(f"{self.name(index)}: caption is {type(value).__name__}, not text")
        return value.strip()


# ---------------------------------------------------------------------------------------------------------
# WebDataset tar shards
# ---------------------------------------------------------------------------------------------------------


def expand_shards(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` → three paths (brace expansion as webdataset and wids do it, with ``braceexpand``:
    ranges and ``{x,y}`` lists); globs are expanded too; the result must exist."""
    from braceexpand import braceexpand

    paths = []
    for part in braceexpand(pattern):
        matches = sorted(glob.glob(str(Path(part).expanduser()))) if any(c in part for c in "*?[") else [part]
        paths += matches
    missing = [p for p in paths if not Path(p).expanduser().is_file()]
    if not paths or missing:
        raise FileNotFoundError(f"tar shards '{pattern}': {'no file matches' if not paths else 'missing ' + ', '.join(missing[:5])}")
    return [str(Path(p).expanduser()) for p in paths]


def index_shard(path: str) -> dict[str, dict[str, tuple[int, int]]]:
    """key → {extension: (offset, size)} of one tar shard, indexed by wids' tar reader.

    wids has two readers. Its mmap reader indexes 6x faster (53 against 395 ms for a shard of 1,000 32 px
    PNG samples, ``benchmarks/tar_readers.py``) but reads only the 100-byte ustar name field: on the shards
    ``webdataset.TarWriter`` itself writes for keys longer than 100 characters (a pax header) it raises
    IndexError, and with a ustar prefix it would drop the directory. Its ``tarfile`` reader reads every
    format Python's ``tarfile`` does, so that is the one used. ``index_file=None``: it would otherwise write
    a pickle beside each shard and load one found there.

    Members are grouped by wids' key rule (``splitname``: the path up to the first dot of the file name),
    over the whole shard rather than runs of consecutive members as wids' ``group_by_key`` does: ``tar cf``
    stores a folder in directory order, not sorted, and such a shard would otherwise split its samples.
    """
    from wids.wids import splitname
    from wids.wids_tar import TarFileReader

    try:
        reader = TarFileReader(path, index_file=None, verbose=False)
    except (tarfile.TarError, OSError, ValueError) as e:
        raise BadImageError(f"{path}: not a readable tar file ({str(e).splitlines()[0]})") from None
    try:
        groups: dict[str, dict[str, tuple[int, int]]] = {}
        for name, (offset, size) in zip(reader.names(), reader.index.tolist()):
            if "." not in name.rpartition("/")[2]:
                continue
            key, ext = splitname(name)
            groups.setdefault(key, {})[ext[1:].lower()] = (int(offset), int(size))
        return groups
    finally:
        reader.close()


class TarShards(Dataset):
    """Samples of WebDataset tar shards (as ``webdataset.TarWriter`` writes them), read by random access.

    A sample is the group of members sharing a key; its image is the first member with an image extension,
    its label the integer in its ``.cls`` (or ``.<label_key>``) member, its caption the text of its ``.txt``
    member or the ``caption_key`` field of its ``.json`` member. Each shard is indexed once by wids' tar
    reader (``index_shard``), then each member is read with one seek, so shuffling, sharding over processes
    and exact resumption work as for a folder.

    The index is kept as plain offsets, not as wids' reader objects: those hold open files, which cannot be
    sent to DataLoader workers, so each worker would index every shard again (~0.4 ms per sample, about
    8 minutes per worker for ImageNet's 1.28 M images); offsets cross process boundaries for free. wids'
    ``ShardListDataset`` is not used either: it needs the sample count of each shard beforehand, writes a
    ``.lock`` file beside each shard it opens (read-only datasets fail), and re-indexes a shard whenever it
    falls out of its LRU of ``lru_size`` open shards, which a global shuffle over more shards than that does
    on most reads (measured in ``benchmarks/tar_readers.py``).
    """

    def __init__(self, pattern: str, *, label_key: str = "label", caption_key: str = "caption") -> None:
        self.shards = expand_shards(pattern)
        self.caption_key = caption_key
        self.samples: list[tuple[int, str, tuple[int, int], tuple[int, int] | None]] = []
        self.texts: list[tuple[str, tuple[int, int]] | None] = []  # per sample: ("txt" | "json", where)
        label_exts = ("cls", label_key)
        for shard_index, shard in enumerate(self.shards):
            for key, members in index_shard(shard).items():
                image = next((members[e] for e in members if f".{e.rsplit('.', 1)[-1]}" in IMAGE_EXTENSIONS), None)
                if image is None:
                    continue
                label = next((members[e] for e in label_exts if e in members), None)
                self.samples.append((shard_index, key, image, label))
                self.texts.append(next(((e, members[e]) for e in ("txt", "json") if e in members), None))
        if not self.samples:
            raise FileNotFoundError(f"no image samples in the tar shards '{pattern}'")
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, shard_index: int, where: tuple[int, int]) -> bytes:
        handle = self._handles.get(shard_index)
        if handle is None:  # opened lazily, so each DataLoader worker has its own handles
            handle = self._handles[shard_index] = open(self.shards[shard_index], "rb")
        # pread keeps no file position: workers forked after the main process opened a shard share its
        # descriptor, and a seek + read there could interleave with theirs
        data = os.pread(handle.fileno(), where[1], where[0])
        if len(data) != where[1]:
            raise BadImageError(f"{self.shards[shard_index]}: truncated, {len(data)} of {where[1]} bytes of a member")
        return data

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        shard_index, key, image, label = self.samples[index]
        rgb = load_image(self._read(shard_index, image), name=self.name(index))
        value = 0
        if label is not None:
            text = self._read(shard_index, label).decode("utf-8", "replace").strip()
            try:
                value = int(text)
            except ValueError:
                raise BadImageError(f"{self.name(index)}: label '{text[:20]}' is not an integer") from None
        return rgb, value

    def name(self, index: int) -> str:
        shard_index, key, _, _ = self.samples[index]
        return f"{self.shards[shard_index]}:{key}"

    def caption(self, index: int) -> str:
        """The sample's ``.txt`` member, or the ``caption_key`` field of its ``.json`` member."""
        text = self.texts[index]
        if text is None:
            raise BadImageError(f"{self.name(index)}: no caption (.txt or .json member)")
        kind, where = text
        raw = self._read(self.samples[index][0], where).decode("utf-8", "replace")
        if kind == "txt":
            return raw.strip()
        import json

        try:
            value = json.loads(raw).get(self.caption_key)
        except (json.JSONDecodeError, AttributeError):
            raise BadImageError(f"{self.name(index)}: its .json member is not a JSON object") from None
        if not isinstance(value, str):
            raise BadImageError(f"{self.name(index)}: its .json member has no text field '{self.caption_key}'")
        return value.strip()

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}  # file handles do not cross process boundaries
