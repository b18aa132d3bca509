"""Built-in datasets that work offline, for demos, tests and CPU benchmarks.

- ``FashionMNIST``: the real labelled dataset, read from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), a folder you name, or torchvision's download when online.
- ``SkimagePhotos``: random crops of the photos bundled with scikit-image (optional dependency); the label
  is the photo.
- ``ProceduralShapes``: ten classes of anti-aliased shapes and textures, drawn from the sample index alone;
  needs nothing. Two styles: "scattered" (any colours on gradient backgrounds, anywhere; data source
  ``procedural``) and "centred" (named colours on flat backgrounds, near the centre; ``procedural-centred``).
  ``caption(i)`` names the colour and the shape ("a red circle", "blue vertical stripes") for
  text-conditioned training.
"""
from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from artok.data.images import load_image

# ---------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------------------

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not → uint8 array."""
    data = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    magic, = struct.unpack(">I", data[:4])
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_fashion_file(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / f"{stem}.gz", folder / stem, folder / "FashionMNIST" / "raw" / f"{stem}.gz",
                          folder / "FashionMNIST" / "raw" / stem):
            if candidate.is_file():
                return candidate
    return None


def fashion_mnist_available(path: str | Path | None = None) -> bool:
    folders = ([Path(path)] if path else []) + [DEBIAN_FASHION_MNIST]
    return all(_find_fashion_file(folders, stem) for stem in _FASHION_FILES["train"])


class FashionMNIST(Dataset):
    """Fashion-MNIST (Xiao et al., 2017): 28×28 grayscale clothes in 10 classes, returned as RGB.

    Looks in ``path``, then in Debian's package folder; when neither has the files and ``download`` is
    true, torchvision downloads them into ``path`` (default ``~/.cache/artok/fashion-mnist``).
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, path: str | Path | None = None, *, split: str = "train", download: bool = True) -> None:
        if split not in _FASHION_FILES:
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got '{split}'")
        folders = ([Path(path).expanduser()] if path else []) + [DEBIAN_FASHION_MNIST]
        image_stem, label_stem = _FASHION_FILES[split]
        images, labels = _find_fashion_file(folders, image_stem), _find_fashion_file(folders, label_stem)
        if images is None or labels is None:
            if not download:
                raise FileNotFoundError(self._missing_message(folders))
            root = Path(path).expanduser() if path else Path.home() / ".cache" / "artok" / "fashion-mnist"
            try:
                import torchvision

                torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
            except Exception as e:
                raise FileNotFoundError(f"{self._missing_message(folders)}; downloading with torchvision into "
                                        f"{root} failed too ({type(e).__name__}: {e})") from None
            images, labels = _find_fashion_file([root], image_stem), _find_fashion_file([root], label_stem)
        self.images, self.labels = _read_idx(images), _read_idx(labels).astype(np.int64)
        self.source = str(images.parent)

    @staticmethod
    def _missing_message(folders: list[Path]) -> str:
        return (f"Fashion-MNIST files not found in {', '.join(map(str, folders))}: install Debian's package "
                f"(`apt-get install dataset-fashion-mnist`), or pass a folder holding "
                f"train-images-idx3-ubyte.gz, or let torchvision download it on a machine with internet")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="L").convert("RGB"), int(self.labels[index])

    def name(self, index: int) -> str:
        return f"fashion-mnist[{index}]"

    def caption(self, index: int) -> str:
        return f"a photo of a {self.classes[int(self.labels[index])].lower()}"


# ---------------------------------------------------------------------------------------------------------
# scikit-image's bundled photos, as random crops
# ---------------------------------------------------------------------------------------------------------

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "retina.jpg", "rocket.jpg", "camera.png", "coins.png", "moon.png",
                  "brick.png", "grass.png", "gravel.png")


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the 'skimage' dataset needs scikit-image: pip install scikit-image "
                                  "(or pip install 'artok[data]')")
    return Path(spec.origin).parent / "data"


class SkimagePhotos(Dataset):
    """``num_samples`` square crops of scikit-image's bundled photos; label = photo index.

    Crop i is drawn from the generator seeded with (seed, i): a photo, a side between ``min_side`` and the
    photo's shorter side, and a position. The same index always gives the same crop.
    """

    def __init__(self, *, num_samples: int = 10000, min_side: int = 32, seed: int = 0) -> None:
        folder = skimage_data_dir()
        self.photos, self.classes = [], []
        for name in SKIMAGE_PHOTOS:
            if (folder / name).is_file():
                self.photos.append(load_image(folder / name))
                self.classes.append(name.split(".")[0])
        if not self.photos:
            raise FileNotFoundError(f"no bundled photos found in {folder}")
        self.num_samples, self.min_side, self.seed = num_samples, min_side, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        rng = np.random.default_rng((self.seed, index))
        label = int(rng.integers(len(self.photos)))
        photo = self.photos[label]
        w, h = photo.size
        side = int(rng.integers(min(self.min_side, w, h), min(w, h) + 1))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        return photo.crop((left, top, left + side, top + side)), label

    def name(self, index: int) -> str:
        return f"skimage[{index}]"

    def caption(self, index: int) -> str:
        label = int(np.random.default_rng((self.seed, index)).integers(len(self.photos)))  # as __getitem__ draws it
        return f"a crop of {self.classes[label].replace('_', ' ')}"


# ---------------------------------------------------------------------------------------------------------
# Procedural shapes
# ---------------------------------------------------------------------------------------------------------

PROCEDURAL_CLASSES = ("circle", "square", "triangle", "ring", "cross", "horizontal stripes", "vertical stripes",
                      "checkerboard", "diagonal stripes", "diamond")
SUPERSAMPLING = 4  # drawn at 4× and downsampled with a Lanczos filter for anti-aliased edges
# the thinnest features, in px at the output size, so that a class survives small sizes (at 16 px the stripes
# would otherwise come down to 1.3 px, the rings to 1 px); from 32 px up the drawing is unchanged by them
MIN_RING_WIDTH, MIN_STRIPE = 2.0, 2.5


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _contrasting(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    for _ in range(16):
        colour = _colour(rng)
        if np.abs(np.array(colour) - background).sum() > 200:
            return colour
    return tuple(int(255 - c) for c in background)


# the names captions use for a shape's colour: the nearest of these in RGB
COLOUR_NAMES = {"red": (220, 40, 40), "orange": (240, 140, 30), "yellow": (235, 225, 50), "green": (50, 170, 60),
                "cyan": (60, 210, 220), "blue": (40, 70, 220), "purple": (140, 60, 190), "pink": (240, 130, 190),
                "white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128), "brown": (130, 80, 40)}


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int, int]]:
    """The first draws of a scattered shape: gradient ends a, b, its angle, and the contrasting foreground."""
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    b = a + (b - a) * 0.5  # a gentle gradient: the shape stays the subject
    angle = rng.uniform(0, 2 * np.pi)
    return a, b, angle, _contrasting(rng, (a + b) / 2)


# The two drawings of the shapes. "scattered": any colours on a gradient background, anywhere in the image (the
# hard set: colour takes most of a small tokenizer's code, and a shape's place is part of what a generator must
# draw). "centred": one of eight named colours on one of six dark flat backgrounds, larger and near the centre,
# as object-centric datasets are (what the quickstart's 10-minute demo trains on: issue 17's research table in
# the README measured 51.5% sample class accuracy on the scattered shapes and 99.5% on these, three seeds each).
SHAPE_STYLES = ("scattered", "centred")
STYLE_SOURCES = {"scattered": "procedural", "centred": "procedural-centred"}  # the data source of each style
CENTRED_COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
CENTRED_BACKGROUNDS = ((20, 20, 30), (60, 60, 70), (30, 50, 90), (90, 40, 40), (40, 80, 50), (110, 100, 90))
CENTRED_JITTER = 0.08  # the centre moves at most this fraction of the size each way


def _check_style(style: str) -> None:
    if style not in SHAPE_STYLES:
        raise ValueError(f"unknown shape style '{style}'; choose one of {', '.join(SHAPE_STYLES)}")


def _foreground(rng: np.random.Generator, style: str) -> tuple:
    """The first draws of a shape in ``style``: (background image maker, foreground colour)."""
    if style == "centred":
        background = CENTRED_BACKGROUNDS[int(rng.integers(len(CENTRED_BACKGROUNDS)))]
        fg = COLOUR_NAMES[CENTRED_COLOURS[int(rng.integers(len(CENTRED_COLOURS)))]]
        return (lambda big: Image.new("RGB", (big, big), background)), fg
    a, b, angle, fg = _palette(rng)
    return (lambda big: _gradient(big, a, b, angle)), fg


def colour_name(rgb) -> str:
    """The nearest name of ``COLOUR_NAMES``."""
    rgb = np.asarray(rgb, float)
    return min(COLOUR_NAMES, key=lambda n: float(((np.asarray(COLOUR_NAMES[n]) - rgb) ** 2).sum()))


def shape_caption(label: int, rng: np.random.Generator, style: str = "scattered") -> str:
    """The caption of the shape ``draw_shape(label, size, rng, style)`` draws with a generator in the same
    state: its colour and name, "a red circle" or "blue vertical stripes"."""
    _check_style(style)
    colour, name = colour_name(_foreground(rng, style)[1]), PROCEDURAL_CLASSES[label]
    return f"{colour} {name}" if name.endswith("stripes") else f"a {colour} {name}"


def _gradient(size: int, a: np.ndarray, b: np.ndarray, angle: float) -> Image.Image:
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(angle) * xs + np.sin(angle) * ys)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    array = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    return Image.fromarray(array.round().astype(np.uint8), "RGB")


def draw_shape(label: int, size: int, rng: np.random.Generator, style: str = "scattered") -> Image.Image:
    """One procedural image of class ``label`` at ``size`` × ``size`` pixels, drawn in ``style``
    (``SHAPE_STYLES``)."""
    _check_style(style)
    big = size * SUPERSAMPLING
    background, fg = _foreground(rng, style)
    image = background(big)
    draw = ImageDraw.Draw(image)
    if style == "centred":
        r = rng.uniform(0.3, 0.42) * big
        jitter = CENTRED_JITTER * big
        cx, cy = big / 2 + rng.uniform(-jitter, jitter), big / 2 + rng.uniform(-jitter, jitter)
    else:
        r = rng.uniform(0.22, 0.4) * big
        cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
    name = PROCEDURAL_CLASSES[label]
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif name == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fg)
    elif name == "ring":
        width = max(r * 0.3, MIN_RING_WIDTH * SUPERSAMPLING)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fg, width=max(1, int(width)))
    elif name == "cross":
        t = r * 0.3
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fg)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fg)
    elif name == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg)
    else:
        period = max(big / rng.uniform(3, 6), 2 * MIN_STRIPE * SUPERSAMPLING)  # half a period: one stripe
        ys, xs = np.mgrid[0:big, 0:big]
        offset = rng.uniform(0, period)
        if name == "horizontal stripes":
            mask = ((ys + offset) // (period / 2)) % 2 == 0
        elif name == "vertical stripes":
            mask = ((xs + offset) // (period / 2)) % 2 == 0
        elif name == "diagonal stripes":
            mask = ((xs + ys + offset) // (period / 2 * 1.41)) % 2 == 0
        else:  # checkerboard
            mask = (((xs + offset) // (period / 2)) + ((ys + offset) // (period / 2))) % 2 == 0
        array = np.asarray(image).copy()
        array[mask] = fg
        image = Image.fromarray(array, "RGB")
    return image.resize((size, size), Image.LANCZOS)


class ProceduralShapes(Dataset):
    """``num_samples`` labelled images of ten shape and texture classes; sample i depends on (seed, i) only.
    ``style``: "scattered" (any colours on gradients, anywhere) or "centred" (palette colours on flat
    backgrounds, near the centre); see ``SHAPE_STYLES``."""

    classes = PROCEDURAL_CLASSES

    def __init__(self, *, num_samples: int = 10000, image_size: int = 32, seed: int = 0,
                 style: str = "scattered") -> None:
        _check_style(style)
        self.num_samples, self.image_size, self.seed, self.style = num_samples, image_size, seed, style

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} outside the {self.num_samples} procedural samples")
        label = index % len(PROCEDURAL_CLASSES)
        return draw_shape(label, self.image_size, np.random.default_rng((self.seed, index)), self.style), label

    def name(self, index: int) -> str:
        return f"{STYLE_SOURCES[self.style]}[{index}]"

    def caption(self, index: int) -> str:
        """"a red circle", "blue vertical stripes": the colour and the shape of sample ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} outside the {self.num_samples} procedural samples")
        return shape_caption(index % len(PROCEDURAL_CLASSES), np.random.default_rng((self.seed, index)), self.style)
