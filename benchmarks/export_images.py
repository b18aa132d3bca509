"""Write a built-in dataset as a folder of PNGs (``OUT/train/<class>/*.png``, ``OUT/test/<class>/*.png``), the
form a user's own data has, so that artok and the plain-loop baseline (``baseline_vq_pytorch.py``) read the
same files. Class folders are numbered (``00-T-shirt-top``, ``01-Trouser``, …): read as a folder, every image
keeps the label id the built-in set gives it, so a generator trained on either scores against the other.

    python benchmarks/export_images.py fashion-mnist data/fashion-mnist-32          # 60k + 10k, padded to 32 px
    python benchmarks/export_images.py skimage data/skimage-32 --train 20000 --test 2000
    python benchmarks/export_images.py procedural data/shapes-32 --train 20000 --test 2000

Fashion-MNIST's 28x28 images are padded with 2 black pixels a side (not resized); the photo crops and shapes
are drawn at (or resized and centre-cropped to) ``--size``, exactly as artok's loader would.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from artok.data import FashionMNIST, ImageTransform, ProceduralShapes, SkimagePhotos, tensor_to_uint8


def fit(image: Image.Image, size: int) -> Image.Image:
    """What artok's own loader makes of the image (``ImageTransform`` with ``pad_small``: a smaller image
    padded with black to size x size, centred; a larger one resized and centre-cropped), as a PIL image."""
    tensor = ImageTransform(size, crop="center", pad_small=True)(image.convert("RGB"))
    return Image.fromarray(tensor_to_uint8(tensor[None])[0])


def source(name: str, split: str, count: int, size: int, seed: int):
    if name == "fashion-mnist":
        return FashionMNIST(split=split, download=False), FashionMNIST.classes
    split_seed = seed + (0 if split == "train" else 1)  # the built-in sets' own train/test seeds
    if name == "skimage":
        ds = SkimagePhotos(num_samples=count, min_side=size, seed=split_seed)
        return ds, ds.classes
    if name == "procedural":
        return ProceduralShapes(num_samples=count, image_size=size, seed=split_seed), ProceduralShapes.classes
    raise SystemExit(f"unknown dataset '{name}': fashion-mnist, skimage or procedural")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=("fashion-mnist", "skimage", "procedural"))
    p.add_argument("out")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train", type=int, default=20000, help="training images (generated sets)")
    p.add_argument("--test", type=int, default=2000, help="test images (generated sets)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for split, count in (("train", args.train), ("test", args.test)):
        ds, classes = source(args.dataset, split, count, args.size, args.seed)
        # numbered, so that a folder reader's sorted order (ImageFolder's) gives the dataset's own label ids
        names = [f"{k:02d}-" + c.replace("/", "-").replace(" ", "-") for k, c in enumerate(classes)]
        for name in names:
            (Path(args.out) / split / name).mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(len(ds)), desc=f"{args.dataset} {split}", unit="img"):
            image, label = ds[i]
            fit(image, args.size).save(Path(args.out) / split / names[label] / f"{i:06d}.png")
    print(f"wrote {args.out}/train and {args.out}/test")


if __name__ == "__main__":
    main()
