"""Robust image loading for the predictor and the ``fpezoo predict`` command.

Every image becomes a ``(H, W, 3)`` uint8 RGB array, whatever it started as: a
file (JPEG, PNG, BMP, TIFF, WebP... through Pillow, upright according to its
EXIF orientation), a Pillow image, or a NumPy array (grayscale, RGB, BGR with
``bgr=True``, RGBA). Unreadable input raises a clear error that names the file
and the problem.
"""

import contextlib
import os
import pathlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow refuses images above ~179 Mpixel as decompression bombs; the predictor
# accepts up to this many pixels (a 20000x20000 photo: 400 Mpixel, 1.2 GB RGB).
DEFAULT_MAX_PIXELS = 500_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded (empty, truncated, not an image)."""


def load_image(source, bgr=False, max_pixels=DEFAULT_MAX_PIXELS):
    """Loads an image as an upright ``(H, W, 3)`` uint8 RGB array.

    Args:
        source: a file path, a ``PIL.Image.Image`` or a NumPy array of shape
            ``(H, W)``, ``(H, W, 1)`` (grayscale), ``(H, W, 3)`` (RGB, or BGR
            with ``bgr=True``) or ``(H, W, 4)`` (RGBA; alpha is dropped).
            Arrays are uint8, or float on the 0-255 scale.
        bgr: the 3- or 4-channel array is in OpenCV's BGR(A) order.
        max_pixels: larger files raise an error instead of being decoded.

    Returns:
        The RGB array (for a uint8 RGB array input, the array itself).

    Raises:
        FileNotFoundError: the path does not exist.
        ImageReadError: the file is empty, truncated, not an image, or too large.
        ValueError, TypeError: an array of an unsupported shape or dtype.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_file(pathlib.Path(source), max_pixels)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(ImageOps.exif_transpose(source))
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, bgr)
    raise TypeError(
        "An image must be a file path, a PIL image or a NumPy array. "
        f"Received: image={type(source).__name__}"
    )


@contextlib.contextmanager
def _pixel_limit(max_pixels):
    """Replaces Pillow's decompression-bomb limit by ``max_pixels`` (checked by us)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _load_file(path, max_pixels):
    if not path.exists():
        raise FileNotFoundError(f"Image file not found. Received: path={str(path)!r}")
    if path.is_dir():
        raise ImageReadError(f"Expected an image file, got a folder. Received: path={str(path)!r}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"Image file is empty (0 bytes). Received: path={str(path)!r}")
    with _pixel_limit(max_pixels):
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"Image is {width}x{height} ({width * height} pixels), above the limit of "
                        f"{max_pixels} pixels (raise `max_pixels` to read it). Received: path={str(path)!r}"
                    )
                image.load()
                return _pil_to_rgb(ImageOps.exif_transpose(image))
        except UnidentifiedImageError:
            raise ImageReadError(
                f"File is not an image Pillow can read. Received: path={str(path)!r}"
            ) from None
        except (OSError, SyntaxError, ValueError) as error:
            if isinstance(error, ImageReadError):
                raise
            raise ImageReadError(
                f"Image file is truncated or corrupt ({error}). Received: path={str(path)!r}"
            ) from None


def _pil_to_rgb(image):
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _array_to_rgb(array, bgr):
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                "Image arrays must be uint8, or float on the 0-255 scale. "
                f"Received: image.dtype={array.dtype}"
            )
        array = np.clip(np.nan_to_num(array), 0, 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise ValueError(
            "Image arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) with H, W >= 1. "
            f"Received: image.shape={array.shape}"
        )
    if array.shape[2] == 1:
        return np.broadcast_to(array, array.shape[:2] + (3,))
    array = array[..., :3]
    return array[..., ::-1] if bgr else array
