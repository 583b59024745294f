"""Robust image loading for the predictor and the ``fpezoo predict`` command.

Every image becomes a ``(H, W, 3)`` uint8 RGB array, whatever it started as: a
file (JPEG, PNG, BMP, TIFF, WebP... through Pillow, upright according to its
EXIF orientation), a Pillow image, or a NumPy array (grayscale, RGB, BGR with
``bgr=True``, RGBA). Unreadable input raises a clear error that names the file
and the problem.

Whole 8-bit RGB and grayscale JPEG files are decoded by OpenCV, several times
faster than by Pillow (see the README's Speed section), and turned upright by
the EXIF orientation Pillow reads from the header, as ``ImageOps.exif_transpose``
turns them; every other file, and any file OpenCV cannot decode, goes through
Pillow.

Pixel values become 8-bit by one rule (:func:`to_uint8`): 16-bit data (16-bit
grayscale PNG or TIFF, uint16 arrays) is divided by 257, float data on the
0-1 scale (no value above 1) is multiplied by 255, other float data is taken on
the 0-255 scale.
"""

import contextlib
import errno
import os
import pathlib

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# The colour orders of images and model inputs, named the same everywhere.
COLORS = ("grayscale", "rgb", "bgr")

# Pillow refuses images above ~179 Mpixel as decompression bombs; the predictor
# accepts up to this many pixels (a 20000x20000 photo: 400 Mpixel, 1.2 GB RGB).
DEFAULT_MAX_PIXELS = 500_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
# What turns an image stored with each EXIF orientation upright, as
# ImageOps.exif_transpose does: 2 mirror, 3 half turn, 4 flip, 5 transpose,
# 6 quarter turn clockwise, 7 transverse, 8 quarter turn counter-clockwise.
_EXIF_UPRIGHT = {
    2: lambda array: cv2.flip(array, 1),
    3: lambda array: cv2.rotate(array, cv2.ROTATE_180),
    4: lambda array: cv2.flip(array, 0),
    5: cv2.transpose,
    6: lambda array: cv2.rotate(array, cv2.ROTATE_90_CLOCKWISE),
    7: lambda array: cv2.flip(cv2.transpose(array), -1),
    8: lambda array: cv2.rotate(array, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded (empty, truncated, not an image)."""


def load_image(source, bgr=False, max_pixels=DEFAULT_MAX_PIXELS):
    """Loads an image as an upright ``(H, W, 3)`` uint8 RGB array.

    Args:
        source: a file path, a ``PIL.Image.Image`` or a NumPy array of shape
            ``(H, W)``, ``(H, W, 1)`` (grayscale), ``(H, W, 3)`` (RGB, or BGR
            with ``bgr=True``) or ``(H, W, 4)`` (RGBA; alpha is dropped).
            Arrays are uint8, uint16 (16-bit) or float (on the 0-1 or the
            0-255 scale, see :func:`to_uint8`).
        bgr: the 3- or 4-channel array is in OpenCV's BGR(A) order.
        max_pixels: larger files raise an error instead of being decoded.

    Returns:
        The RGB array (for a uint8 RGB array input, the array itself).

    Raises:
        FileNotFoundError: the path does not exist.
        PermissionError: the file cannot be read (permission denied).
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
                fast = _decode_jpeg_with_opencv(image, path)
                if fast is not None:
                    return fast
                image.load()
                return _pil_to_rgb(ImageOps.exif_transpose(image))
        except PermissionError:
            raise PermissionError(
                errno.EACCES, f"Cannot read the image file (permission denied). Received: path={str(path)!r}"
            ) from None
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


def _decode_jpeg_with_opencv(image, path):
    """The JPEG file decoded by OpenCV and turned upright, or None for Pillow to decode it.

    Only whole 8-bit RGB or grayscale JPEG files qualify: the bytes must end
    with the end-of-image marker (a truncated file goes to Pillow, which
    reports it), and OpenCV's result must have the size Pillow read in the
    header. Other files (CMYK, MPO, PNG...) return None.

    Args:
        image: the file opened by Pillow (its header read, not decoded).
        path: the file's path.

    Returns:
        The ``(H, W, 3)`` uint8 RGB array, or None.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    data = path.read_bytes()
    if not data.endswith(b"\xff\xd9"):
        return None
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    if array is None or array.shape[:2] != (image.height, image.width):
        return None
    upright = _EXIF_UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
    return array if upright is None else upright(array)


def _pil_to_rgb(image):
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16/32-bit grayscale, float
        array = np.asarray(image)
        if image.mode == "I":  # 32-bit integers: Pillow's mode for some 16-bit files
            array = np.clip(array, 0, 65535).astype(np.uint16)
        return _array_to_rgb(array, bgr=False)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def to_uint8(array):
    """The 8-bit values of an image array.

    Args:
        array: uint8 (returned as it is), uint16 (16-bit: divided by 257, so
            65535 becomes 255) or float: on the 0-1 scale when no value exceeds
            1 (multiplied by 255), else on the 0-255 scale; NaN becomes 0 and
            values are clipped to 0-255.

    Returns:
        The uint8 array.

    Raises:
        TypeError: any other dtype.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            "Image arrays must be uint8, uint16, or float on the 0-1 or 0-255 scale. "
            f"Received: image.dtype={array.dtype}"
        )
    array = np.nan_to_num(array.astype("float64"))
    if array.size and array.max() <= 1.0:
        array = array * 255.0
    return np.clip(array, 0, 255).round().astype(np.uint8)


def _array_to_rgb(array, bgr):
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise ValueError(
            "Image arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) with H, W >= 1. "
            f"Received: image.shape={array.shape}"
        )
    array = to_uint8(array)
    if array.shape[2] == 1:
        return np.broadcast_to(array, array.shape[:2] + (3,))
    array = array[..., :3]
    return array[..., ::-1] if bgr else array
