"""Tests of fpezoo.imageio's two ways of reading a file: OpenCV for JPEG, Pillow for the rest.

The reference is Pillow's path (``ImageOps.exif_transpose`` then RGB), which
``load_image`` took for every file before JPEG went through OpenCV. Fixtures
are asymmetric (a gradient and a bright corner block on a wider-than-tall
picture), so any wrong turn or mirror moves most pixels by far more than the
tolerance of JPEG decoders.
"""

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from fpezoo import imageio

# How far two JPEG decoders (Pillow's, OpenCV's libjpeg-turbo) may differ, in grey levels;
# they gave the same pixels on every AFLW2000-3D photo here.
JPEG_TOLERANCE = 8


def asymmetric_picture(height=40, width=60):
    rows, cols = np.mgrid[:height, :width]
    picture = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(rows, 60)], -1)
    picture[2:10, 3:15] = 255  # a block near the top-left corner
    return picture.astype(np.uint8)


def save_jpeg(path, picture, orientation=None, mode="RGB", **kwargs):
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    Image.fromarray(picture).convert(mode).save(path, exif=exif, quality=95, **kwargs)
    return path


def pillow_path(path):
    """What ``load_image`` returned for every file before OpenCV read JPEGs."""
    with Image.open(path) as image:
        return imageio._pil_to_rgb(ImageOps.exif_transpose(image))


@pytest.fixture
def imdecode_calls(monkeypatch):
    """Counts the files OpenCV decodes."""
    calls = []
    imdecode = imageio.cv2.imdecode

    def counting(*args):
        calls.append(args)
        return imdecode(*args)

    monkeypatch.setattr(imageio.cv2, "imdecode", counting)
    return calls


def assert_same_image(loaded, expected, tolerance):
    assert loaded.shape == expected.shape and loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - expected).max() <= tolerance


@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_rotated_jpeg_reads_as_pillow_reads_it(tmp_path, imdecode_calls, orientation):
    path = save_jpeg(tmp_path / "photo.jpg", asymmetric_picture(), orientation)
    loaded = imageio.load_image(path)
    assert len(imdecode_calls) == 1  # through OpenCV
    expected = pillow_path(path)
    assert loaded.shape == ((60, 40, 3) if orientation in (5, 6, 7, 8) else (40, 60, 3))
    assert_same_image(loaded, expected, JPEG_TOLERANCE)
    assert loaded.flags.c_contiguous


def test_sideways_photo_is_upright(tmp_path, imdecode_calls):
    upright = asymmetric_picture()
    path = save_jpeg(tmp_path / "sideways.jpg", np.rot90(upright), orientation=6)  # as a camera stores it
    loaded = imageio.load_image(path)
    assert loaded.shape == upright.shape
    assert np.abs(loaded.astype(int) - upright).mean() < 3  # JPEG's loss; far more when turned or mirrored
    assert len(imdecode_calls) == 1


def test_grayscale_jpeg_reads_as_pillow_reads_it(tmp_path, imdecode_calls):
    path = save_jpeg(tmp_path / "gray.jpg", asymmetric_picture(), orientation=8, mode="L")
    loaded = imageio.load_image(path)
    assert len(imdecode_calls) == 1
    assert_same_image(loaded, pillow_path(path), JPEG_TOLERANCE)
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])


def test_xmp_orientation_is_honoured_as_by_pillow(tmp_path, imdecode_calls):
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    path = save_jpeg(tmp_path / "xmp.jpg", asymmetric_picture(), xmp=xmp)
    expected = pillow_path(path)
    assert expected.shape == (60, 40, 3)  # Pillow turns it
    assert_same_image(imageio.load_image(path), expected, JPEG_TOLERANCE)
    assert len(imdecode_calls) == 1


@pytest.mark.parametrize("name, mode", [("cmyk.jpg", "CMYK"), ("photo.png", "RGB"), ("gray.png", "L"),
                                        ("alpha.png", "RGBA"), ("palette.png", "P")])
def test_other_files_go_through_pillow(tmp_path, imdecode_calls, name, mode):
    path = tmp_path / name
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(asymmetric_picture()).convert(mode).save(path, exif=exif)
    np.testing.assert_array_equal(imageio.load_image(path), pillow_path(path))
    assert not imdecode_calls


def test_jpeg_with_bytes_after_its_end_goes_through_pillow(tmp_path, imdecode_calls):
    path = save_jpeg(tmp_path / "tail.jpg", asymmetric_picture(), orientation=3)
    path.write_bytes(path.read_bytes() + b"extra data a camera appended")
    np.testing.assert_array_equal(imageio.load_image(path), pillow_path(path))
    assert not imdecode_calls


def test_jpeg_opencv_cannot_decode_goes_through_pillow(tmp_path, monkeypatch):
    path = save_jpeg(tmp_path / "photo.jpg", asymmetric_picture(), orientation=6)
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *args: None)
    np.testing.assert_array_equal(imageio.load_image(path), pillow_path(path))


def test_truncated_jpeg_keeps_its_error(tmp_path, imdecode_calls):
    path = save_jpeg(tmp_path / "cut.jpg", asymmetric_picture())
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(imageio.ImageReadError, match="truncated or corrupt.*Received: path=.*cut.jpg"):
        imageio.load_image(path)
    assert not imdecode_calls


def test_oversized_jpeg_is_refused_before_decoding(tmp_path, imdecode_calls):
    path = save_jpeg(tmp_path / "big.jpg", asymmetric_picture())
    with pytest.raises(imageio.ImageReadError, match="60x40 \\(2400 pixels\\), above the limit.*Received: path="):
        imageio.load_image(path, max_pixels=2000)
    assert not imdecode_calls
