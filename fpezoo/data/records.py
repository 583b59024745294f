"""One labelled face: the record type every reader returns and the pipeline consumes.

Coordinates follow ``docs/DESIGN.md``: keypoints are ``(x, y)`` pixels with the
centre of the top-left pixel at ``(0, 0)``; a face box is
``(x_min, y_min, x_max, y_max)`` in pixel-corner units.
"""

import dataclasses
import hashlib
import os
import pathlib
import types

import cv2
import numpy as np

from fpezoo.imageio import COLORS, ImageReadError



@dataclasses.dataclass(frozen=True, eq=False)
class LandmarkRecord:
    """A face image (loaded lazily) with its keypoints.

    Attributes:
        image: path of the image file (read only when needed), or the image as
            a NumPy array ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB uint8.
        keypoints: float32 ``(K, 2)`` pixel coordinates in the image; NaN where
            a point is not labelled.
        visibility: float32 ``(K,)`` in {0, 1}; 0 = occluded or unlabelled (no
            loss, no metric).
        box: face box ``(x_min, y_min, x_max, y_max)`` in pixel-corner units, or
            None when the image itself is the face crop (the loose crops of
            MTFL and AFLW): the pipeline then crops the whole image.
        scheme: keypoint scheme name (a key of ``fpezoo.schemes.SCHEMES``, or a
            dataset's own name such as ``"cofw29"`` for layouts fpezoo does not
            define).
        source: short name of the data set the face comes from.
        metadata: read-only extra fields (yaw, teacher confidence, the file and
            entry the record was read from, ...).
    """

    image: object
    keypoints: np.ndarray
    visibility: np.ndarray
    box: tuple
    scheme: str
    source: str
    metadata: types.MappingProxyType = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        keypoints = np.asarray(self.keypoints, dtype="float32")
        if keypoints.ndim != 2 or keypoints.shape[1] != 2:
            raise ValueError(
                f"Keypoints must have shape (K, 2) (record from {self._origin()}). "
                f"Received: keypoints.shape={keypoints.shape}"
            )
        visibility = np.asarray(self.visibility, dtype="float32")
        if visibility.shape != keypoints.shape[:1]:
            raise ValueError(
                f"Visibility must have shape ({keypoints.shape[0]},) to match the keypoints "
                f"(record from {self._origin()}). Received: visibility.shape={visibility.shape}"
            )
        if not np.isin(visibility, (0.0, 1.0)).all():
            raise ValueError(
                f"Visibility values must be 0 or 1 (record from {self._origin()}). "
                f"Received: visibility={np.unique(visibility).tolist()}"
            )
        if not np.isfinite(keypoints[visibility > 0]).all():
            raise ValueError(
                f"Visible keypoints must be finite (record from {self._origin()}). "
                f"Received: keypoints={keypoints.tolist()}"
            )
        box = self.box
        if box is not None:
            box = tuple(float(v) for v in np.asarray(box, dtype="float64").reshape(-1))
            if len(box) != 4 or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(
                    "A face box must be four finite numbers (x_min, y_min, x_max, y_max) with "
                    f"x_max > x_min and y_max > y_min (record from {self._origin()}). "
                    f"Received: box={self.box}"
                )
        image = self.image
        if isinstance(image, (str, os.PathLike)):
            image = pathlib.Path(image)
        elif not isinstance(image, np.ndarray):
            raise TypeError(
                "A record's image must be a file path or a NumPy array. "
                f"Received: image={type(image).__name__}"
            )
        keypoints.setflags(write=False)
        visibility.setflags(write=False)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "visibility", visibility)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))

    def _origin(self):
        origin = dict(self.metadata).get("origin")
        if origin:
            return origin
        return "an array" if isinstance(self.image, np.ndarray) else str(self.image)

    @property
    def num_keypoints(self):
        """The number of points K."""
        return self.keypoints.shape[0]

    def landmark_box(self):
        """The box ``(x_min, y_min, x_max, y_max)`` of the visible keypoints.

        Raises:
            ValueError: when no keypoint is visible.
        """
        return landmark_box(self.keypoints, self.visibility)

    def load_image(self, color="rgb"):
        """The image as a uint8 array.

        Args:
            color: ``"grayscale"`` gives ``(H, W, 1)``; ``"rgb"`` or ``"bgr"``
                give ``(H, W, 3)`` in that channel order.

        Raises:
            FileNotFoundError: the image file does not exist.
            ImageReadError: the file cannot be decoded.
        """
        if color not in COLORS:
            raise ValueError(f"Unknown color; expected one of {COLORS}. Received: color={color!r}")
        if isinstance(self.image, np.ndarray):
            return convert_color(self.image, "rgb", color)
        return read_image(self.image, color)


def landmark_box(keypoints, visibility=None):
    """The tight box ``(x_min, y_min, x_max, y_max)`` of the visible, finite points.

    The box spans the point coordinates themselves, as the AFLW2000-3D (3DDFA)
    protocol takes it.

    Raises:
        ValueError: when no point is visible and finite.
    """
    keypoints = np.asarray(keypoints, dtype="float64")
    usable = np.isfinite(keypoints).all(axis=-1)
    if visibility is not None:
        usable &= np.asarray(visibility) > 0
    if not usable.any():
        raise ValueError(
            "Cannot take the box of the keypoints: no point is visible and finite. "
            f"Received: visibility={None if visibility is None else np.asarray(visibility).tolist()}"
        )
    points = keypoints[usable]
    x_min, y_min = points.min(axis=0)
    x_max, y_max = points.max(axis=0)
    return (float(x_min), float(y_min), float(x_max), float(y_max))


def with_landmark_boxes(records, scheme):
    """Records in ``scheme`` whose box is the box of their points.

    The crop rule of the ``retail5_mtfl`` weights (training in
    ``scripts/train_retail5.py`` and the MTFL ``"landmarks"`` framing): the
    face box is the tight box of the points
    (:func:`landmark_box`), which a crop then enlarges.
    Records of other schemes are converted to ``scheme``
    (:func:`fpezoo.schemes.convert_keypoints`); a record is kept only when all
    of ``scheme``'s points are visible (the rule needs the full box).

    Args:
        records: :class:`LandmarkRecord` list.
        scheme: the scheme whose points make the box (e.g. ``"five_point"``).

    Returns:
        ``(records, dropped)``: the framed records, all points visible, and
        how many records lacked one of the points.
    """
    from fpezoo import schemes

    num_keypoints = schemes.get_scheme(scheme).num_keypoints
    framed = []
    for record in records:
        keypoints, visibility = record.keypoints, record.visibility
        if record.scheme != scheme:
            keypoints, visibility = schemes.convert_keypoints(keypoints, visibility, record.scheme, scheme)
        if not (np.asarray(visibility) > 0).all() or not np.isfinite(keypoints).all():
            continue
        record = dataclasses.replace(record, keypoints=np.asarray(keypoints, dtype="float64"),
                                     visibility=np.ones(num_keypoints, dtype="float32"), scheme=scheme)
        framed.append(dataclasses.replace(record, box=record.landmark_box()))
    return framed, len(records) - len(framed)


def read_image(path, color="rgb"):
    """Reads an image file as uint8 ``(H, W, 1)`` grayscale or ``(H, W, 3)`` RGB/BGR.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: OpenCV cannot decode it.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image file not found. Received: path={str(path)!r}")
    flag = cv2.IMREAD_GRAYSCALE if color == "grayscale" else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ImageReadError(f"Cannot decode the image file. Received: path={str(path)!r}")
    if color == "grayscale":
        return image[..., None]
    return image[..., ::-1] if color == "rgb" else image


def convert_color(image, source, target):
    """Converts a uint8 image between ``"grayscale"``, ``"rgb"`` and ``"bgr"``.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` (grayscale) or ``(H, W, 3)`` array.
        source: colour order of ``image`` (ignored for one-channel images).
        target: colour order to return; grayscale is ``(H, W, 1)``.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(
            "Images must be (H, W), (H, W, 1) or (H, W, 3). " f"Received: image.shape={image.shape}"
        )
    if image.shape[2] == 1:
        return image if target == "grayscale" else np.repeat(image, 3, axis=2)
    if target == "grayscale":
        code = cv2.COLOR_RGB2GRAY if source == "rgb" else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(np.ascontiguousarray(image), code)[..., None]
    return image if source == target else image[..., ::-1]


def image_size(image):
    """``(height, width)`` of an image path (read from the file header) or array."""
    if isinstance(image, np.ndarray):
        return image.shape[:2]
    from PIL import Image

    path = pathlib.Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"Image file not found. Received: path={str(path)!r}")
    with Image.open(path) as opened:
        width, height = opened.size
    return height, width


def record_box(record, image=None):
    """A record's face box; the whole image for loose crops (``box`` None).

    Args:
        record: the record.
        image: the record's image if already loaded (saves reading the file header).
    """
    if record.box is not None:
        return record.box
    height, width = image.shape[:2] if image is not None else image_size(record.image)
    return (0.0, 0.0, float(width), float(height))


def in_validation_split(record, fraction, seed):
    """Whether a record's image belongs to the validation split.

    The decision hashes the image's folder and file name with the seed, so it
    is the same for every source that labels that image, on every machine.
    """
    if fraction <= 0:
        return False
    image = record.image
    if isinstance(image, np.ndarray):
        key = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    else:
        key = f"{image.parent.name}/{image.name}"
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction
