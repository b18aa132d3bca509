"""Robust image decoding: every file becomes an 8-bit RGB ``PIL.Image`` or a ``BadImageError``.

Real image folders hold CMYK JPEGs, 16-bit PNGs, grayscale and palette images, RGBA with transparency,
EXIF-rotated photos, truncated downloads and files that are not images at all. ``load_image`` converts
what can be converted and raises ``BadImageError`` (with the reason) for the rest, so a dataset can skip
the file and report it instead of crashing mid-epoch.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white, as browsers show them


class BadImageError(ValueError):
    """A file that cannot be decoded as an image (corrupt, truncated, empty, not an image)."""


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images → 8-bit grayscale, scaling the full range of the type."""
    array = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and array.max(initial=0) <= 65535):
        array = array.astype(np.float64) / 65535.0
    elif image.mode == "I":
        array = array.astype(np.float64) / float(np.iinfo(np.int32).max)
    else:  # "F": assume [0, 1] floats, as scientific TIFFs usually are
        array = array.astype(np.float64)
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image → 8-bit RGB: EXIF orientation applied, alpha composited on white, CMYK/16-bit converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(source: str | Path | bytes, *, name: str | None = None) -> Image.Image:
    """Decode a file path or encoded bytes into an 8-bit RGB image, or raise ``BadImageError``.

    Decoding is forced (``load()``) so that truncated files fail here, not later inside a transform.
    """
    name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>")
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise BadImageError(f"{name}: empty file")
            handle = io.BytesIO(source)
        else:
            path = Path(source)
            if path.stat().st_size == 0:
                raise BadImageError(f"{name}: empty file")
            handle = path.open("rb")
        with handle, warnings.catch_warnings():
            # PIL warns (and may later fail) on truncated or decompression-bomb-sized files; make both errors
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                image.load()
                rgb = to_rgb(image)
                rgb.load()
        if rgb.width < 1 or rgb.height < 1:
            raise BadImageError(f"{name}: image has no pixels ({rgb.width}x{rgb.height})")
        return rgb
    except BadImageError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for broken files
        raise BadImageError(f"{name}: {type(e).__name__}: {e}") from None
