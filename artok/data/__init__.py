"""Training data: image folders, Hugging Face datasets, WebDataset shards and built-in offline sets, with
robust decoding and deterministic augmentation."""
from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from artok.config import DATA_SOURCES, DataConfig
from artok.config.training import BUILTIN_SOURCES
from artok.data.builtin import (STYLE_SOURCES, FashionMNIST, ProceduralShapes, SkimagePhotos, draw_shape,
                                fashion_mnist_available)
from artok.data.images import IMAGE_EXTENSIONS, BadImageError, load_image, to_rgb
from artok.data.loader import (InfiniteShardedSampler, TrainingSet, collate, evaluation_loader,
                               training_loader)
from artok.data.preload import Preloaded
from artok.data.sources import HFImageDataset, ImageFolder, TarShards, expand_shards
from artok.data.tokens import TokenDataset, TokenRecord  # the shards `artok encode` writes
from artok.data.transforms import ImageTransform, pil_to_tensor, tensor_to_uint8


def build_source(config: DataConfig, *, image_size: int, seed: int = 0, split: str | None = None) -> Dataset:
    """The dataset of ``(RGB image, label)`` that ``config`` names (before cropping)."""
    split = split or config.split
    if config.source in ("folder", "hf", "webdataset") and not config.path:
        raise ValueError(f"data.path is required for data.source '{config.source}': pass --data PATH or "
                         f"--data.path=PATH")
    if config.source == "folder":
        return ImageFolder(config.path)
    if config.source == "hf":
        return HFImageDataset(config.path, split=split, image_key=config.image_key, label_key=config.label_key,
                              caption_key=config.caption_key)
    if config.source == "webdataset":
        return TarShards(config.path, label_key=config.label_key, caption_key=config.caption_key)
    if config.source == "fashion-mnist":
        return FashionMNIST(config.path, split=split)
    if config.source == "skimage":
        return SkimagePhotos(num_samples=config.num_samples, min_side=image_size,
                             seed=seed + (0 if split == "train" else 1))
    styles = {source: style for style, source in STYLE_SOURCES.items()}
    if config.source in styles:
        return ProceduralShapes(num_samples=config.num_samples, image_size=image_size,
                                seed=seed + (0 if split == "train" else 1), style=styles[config.source])
    raise ValueError(f"unknown data source '{config.source}'; choose one of {', '.join(DATA_SOURCES)}")


def build_dataset(config: DataConfig, *, image_size: int, train: bool = True, seed: int = 0,
                  split: str | None = None, captions: bool = False, uint8: bool = False,
                  preload_workers: int | None = None, progress: bool = True) -> TrainingSet:
    """Source + transform: random crops and flips for training, center crops for evaluation; ``captions``
    adds each sample's caption (text-conditioned training); ``uint8`` keeps samples in 8 bits until
    ``collate`` (the same batches, converted once per batch). With ``config.preload`` the source is decoded
    into memory first by ``preload_workers`` processes (default: one per CPU core)."""
    transform = ImageTransform(image_size, resize=config.resize, crop=config.crop if train else "center",
                               horizontal_flip=config.horizontal_flip and train, pad_small=config.pad_small)
    source = build_source(config, image_size=image_size, seed=seed, split=split)
    if config.preload:
        workers = (os.cpu_count() or 1) if preload_workers is None else preload_workers
        source = Preloaded(source, num_workers=workers, progress=progress)
    return TrainingSet(source, transform, seed=seed, captions=captions, uint8=uint8)


def data_config_from_spec(spec: str, **fields) -> DataConfig:
    """``--data`` on the command line: a built-in name (``BUILTIN_SOURCES``: ``procedural``, ``fashion-mnist``,
    ...), an image folder, a ``save_to_disk`` dataset folder, tar shards (``*.tar`` patterns), or ``hf:NAME``."""
    if spec in BUILTIN_SOURCES:
        if spec == "fashion-mnist":
            fields.setdefault("pad_small", True)  # 28 px → 32 px with black borders, as the field pads it
        return DataConfig(source=spec, **fields)
    if spec.startswith("hf:"):
        return DataConfig(source="hf", path=spec[3:], **fields)
    if ".tar" in spec:
        return DataConfig(source="webdataset", path=spec, **fields)
    path = Path(spec).expanduser()
    if path.is_dir():
        is_hf = any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
        return DataConfig(source="hf" if is_hf else "folder", path=spec, **fields)
    raise FileNotFoundError(f"--data '{spec}': not a folder, tar shards or built-in dataset "
                            f"({', '.join(BUILTIN_SOURCES)}); use hf:NAME for a Hugging Face dataset")


__all__ = ["BadImageError", "FashionMNIST", "HFImageDataset", "IMAGE_EXTENSIONS", "ImageFolder", "ImageTransform",
           "InfiniteShardedSampler", "Preloaded", "ProceduralShapes", "SkimagePhotos", "TarShards", "TokenDataset",
           "TokenRecord", "TrainingSet",
           "build_dataset", "build_source", "collate", "data_config_from_spec", "draw_shape", "evaluation_loader",
           "expand_shards", "fashion_mnist_available", "load_image", "pil_to_tensor", "tensor_to_uint8", "to_rgb",
           "training_loader"]
