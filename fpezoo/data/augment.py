"""Keypoint-aware augmentation of face crops.

Geometry (rotation, scale, translation, horizontal flip) is a random 2x3 affine
matrix in crop pixels that the pipeline composes with the crop transform, so a
training crop is warped once from the original image, with one matrix moving
both the image and its points (no second interpolation, no black corners where
the photo has context). A flip also permutes the points with the scheme's
``flip_permutation`` (``fpezoo.schemes.flip_keypoints``): the image-left eye
corner of the flipped face is the former image-right one.

Photometric changes (brightness, contrast, gamma, blur, noise) are
albumentations 2 transforms. A random occlusion patch hides part of the face and
marks the points it covers invisible, as TAO FPENet's occlusion augmentation
does, so that the loss learns nothing from points it cannot see.
"""

import math
import random
import threading

import albumentations as A
import cv2
import numpy as np

from fpezoo import schemes


def affine_matrix(rotation_degrees=0.0, scale=1.0, translation=(0.0, 0.0), center=(0.0, 0.0)):
    """The 2x3 matrix rotating and scaling about ``center``, then translating.

    Positive angles turn the image counter-clockwise as displayed (y down).
    """
    angle = math.radians(rotation_degrees)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    cx, cy = center
    return np.array(
        [[cos, sin, cx - cos * cx - sin * cy + translation[0]],
         [-sin, cos, cy + sin * cx - cos * cy + translation[1]]],
        dtype="float64",
    )


def horizontal_flip(image, keypoints, visibility, scheme):
    """Mirrors an image and its keypoints, renaming points with the scheme's permutation.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        keypoints: ``(K, 2)`` pixel coordinates.
        visibility: ``(K,)`` visibility.
        scheme: scheme name or ``KeypointScheme`` with K points.

    Returns:
        ``(image, keypoints, visibility)`` of the mirrored face.
    """
    height, width = image.shape[:2]
    keypoints, visibility = schemes.flip_keypoints(keypoints, visibility, scheme, width)
    flipped = cv2.flip(np.ascontiguousarray(image), 1).reshape(image.shape)
    return flipped, keypoints, visibility


def covered_points(keypoints, patch):
    """Which points lie in the pixels of ``patch = (x0, y0, x1, y1)`` (integer corners).

    A point covers the pixel whose centre is nearest to it (pixel-centre
    convention), so point ``(x, y)`` is under the patch when
    ``x0 <= x + 0.5 < x1`` and ``y0 <= y + 0.5 < y1``.
    """
    x0, y0, x1, y1 = patch
    shifted = np.asarray(keypoints, dtype="float64") + 0.5
    return (
        (shifted[:, 0] >= x0) & (shifted[:, 0] < x1) & (shifted[:, 1] >= y0) & (shifted[:, 1] < y1)
    )


def occlude(image, keypoints, visibility, patch, fill):
    """Paints ``patch`` with ``fill`` and marks the points under it invisible.

    Args:
        image: ``(H, W, C)`` uint8 crop (not modified).
        keypoints: ``(K, 2)`` points in crop pixels.
        visibility: ``(K,)`` visibility.
        patch: ``(x0, y0, x1, y1)`` integer pixel corners.
        fill: the patch's grey level, or an array broadcastable to the patch.

    Returns:
        ``(image, visibility)``.
    """
    x0, y0, x1, y1 = (int(v) for v in patch)
    occluded = image.copy()
    occluded[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = fill
    visibility = np.where(covered_points(keypoints, patch), 0.0, visibility).astype("float32")
    return occluded, visibility


def mark_outside(keypoints, visibility, output_size):
    """Visibility 0 for points outside an image of ``output_size = (H, W)``."""
    height, width = output_size
    keypoints = np.asarray(keypoints)
    inside = (
        (keypoints[:, 0] >= -0.5) & (keypoints[:, 0] <= width - 0.5)
        & (keypoints[:, 1] >= -0.5) & (keypoints[:, 1] <= height - 0.5)
    )
    return np.where(inside, visibility, 0.0).astype("float32")


def upright_box_ratio(keypoints, visibility, rotation_degrees):
    """Longer side of the labelled points' box over that of the same points rotated.

    Zooming a rotated crop by this ratio gives its points' box the longer side
    it had upright. Fewer than two labelled points give 1.

    Args:
        keypoints: ``(K, 2)`` points.
        visibility: ``(K,)`` or None (all labelled).
        rotation_degrees: the rotation.
    """
    points = np.asarray(keypoints, dtype="float64")
    if visibility is not None:
        points = points[np.asarray(visibility) > 0]
    if len(points) < 2:
        return 1.0
    rotated = points @ affine_matrix(rotation_degrees)[:, :2].T
    upright_side = np.ptp(points, axis=0).max()
    rotated_side = np.ptp(rotated, axis=0).max()
    return float(upright_side / rotated_side) if rotated_side > 0 else 1.0


class FaceAugmenter:
    """Random augmentation of face crops for training.

    Args:
        rotation: maximum rotation in degrees (uniform in ``[-rotation, rotation]``).
        scale: maximum relative zoom (uniform in ``[1 - scale, 1 + scale]``).
        translation: maximum shift as a fraction of the crop size.
        flip_probability: probability of a horizontal flip.
        brightness: maximum brightness change (fraction of 255).
        contrast: maximum relative contrast change.
        gamma: maximum relative gamma change (gamma in ``[1 - gamma, 1 + gamma]``).
        blur_probability: probability of a Gaussian blur (sigma 0.5-1.5 px).
        noise_probability: probability of Gaussian noise (std 1-5 % of 255).
        occlusion_probability: probability of an occlusion patch.
        occlusion_size: ``(min, max)`` side of the patch as a fraction of the crop.
        full_turn_probability: probability that the rotation is drawn uniformly
            from the whole circle instead (faces lying down or upside down,
            which face crops rarely hold).
        frame_rotated_points: zoom each rotated crop so that the box of its
            rotated labelled points keeps the longer side of the upright box,
            as a crop framed on the landmark box of a rolled face shows it
            (a square turned by 45 degrees has a box 1.41 times as wide).
    """

    def __init__(
        self,
        rotation=15.0,
        scale=0.1,
        translation=0.05,
        flip_probability=0.5,
        brightness=0.2,
        contrast=0.2,
        gamma=0.2,
        blur_probability=0.1,
        noise_probability=0.1,
        occlusion_probability=0.2,
        occlusion_size=(0.15, 0.4),
        full_turn_probability=0.0,
        frame_rotated_points=False,
    ):
        for name, value in (
            ("flip_probability", flip_probability), ("blur_probability", blur_probability),
            ("noise_probability", noise_probability), ("occlusion_probability", occlusion_probability),
            ("full_turn_probability", full_turn_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]. Received: {name}={value}")
        for name, value in (("scale", scale), ("gamma", gamma), ("contrast", contrast)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1). Received: {name}={value}")
        occlusion_size = tuple(float(v) for v in occlusion_size)
        if len(occlusion_size) != 2 or not 0.0 < occlusion_size[0] <= occlusion_size[1] <= 1.0:
            raise ValueError(
                "occlusion_size must be (min, max) with 0 < min <= max <= 1. "
                f"Received: occlusion_size={occlusion_size}"
            )
        self.rotation = float(rotation)
        self.scale = float(scale)
        self.translation = float(translation)
        self.flip_probability = float(flip_probability)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = float(gamma)
        self.blur_probability = float(blur_probability)
        self.noise_probability = float(noise_probability)
        self.occlusion_probability = float(occlusion_probability)
        self.occlusion_size = occlusion_size
        self.full_turn_probability = float(full_turn_probability)
        self.frame_rotated_points = bool(frame_rotated_points)
        # One albumentations pipeline per thread: tf.data calls the augmenter from
        # several threads, and each call hands the pipeline it uses the caller's generator.
        self._local = threading.local()

    def get_config(self):
        """The constructor arguments (JSON-serialisable)."""
        return {
            "rotation": self.rotation, "scale": self.scale, "translation": self.translation,
            "flip_probability": self.flip_probability, "brightness": self.brightness,
            "contrast": self.contrast, "gamma": self.gamma,
            "blur_probability": self.blur_probability, "noise_probability": self.noise_probability,
            "occlusion_probability": self.occlusion_probability,
            "occlusion_size": list(self.occlusion_size),
            "full_turn_probability": self.full_turn_probability,
            "frame_rotated_points": self.frame_rotated_points,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds an augmenter from :meth:`get_config`."""
        return cls(**config)

    def sample_geometry(self, rng, output_size, keypoints=None, visibility=None):
        """A random ``(matrix, flip)``: 2x3 affine in crop pixels, and whether to mirror.

        The rotation and zoom turn about the crop centre.

        Args:
            rng: ``numpy.random.Generator``.
            output_size: ``(H, W)`` of the crop.
            keypoints: ``(K, 2)`` points in crop pixels; needed with
                ``frame_rotated_points``.
            visibility: ``(K,)``; only labelled points (> 0) frame the crop.

        Returns:
            ``(matrix, flip)``.
        """
        height, width = output_size
        center = ((width - 1) / 2.0, (height - 1) / 2.0)
        full_turn = self.full_turn_probability > 0 and rng.uniform() < self.full_turn_probability
        limit = 180.0 if full_turn else self.rotation
        rotation_degrees = rng.uniform(-limit, limit)
        zoom = rng.uniform(1.0 - self.scale, 1.0 + self.scale)
        if self.frame_rotated_points:
            if keypoints is None:
                raise ValueError("frame_rotated_points needs the crop's keypoints. Received: keypoints=None")
            zoom *= upright_box_ratio(keypoints, visibility, rotation_degrees)
        matrix = affine_matrix(
            rotation_degrees=rotation_degrees,
            scale=zoom,
            translation=(rng.uniform(-1, 1) * self.translation * width,
                         rng.uniform(-1, 1) * self.translation * height),
            center=center,
        )
        return matrix, bool(rng.uniform() < self.flip_probability)

    def _photometric_pipeline(self):
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = A.Compose([
                A.RandomBrightnessContrast(
                    brightness_limit=self.brightness, contrast_limit=self.contrast, p=0.8),
                A.RandomGamma(gamma_limit=(100 * (1 - self.gamma), 100 * (1 + self.gamma)), p=0.5),
                A.GaussianBlur(sigma_limit=(0.5, 1.5), p=self.blur_probability),
                A.GaussNoise(std_range=(0.01, 0.05), p=self.noise_probability),
            ])
            self._local.pipeline = pipeline
        return pipeline

    def photometric(self, image, rng):
        """Random brightness, contrast, gamma, blur and noise of a uint8 crop."""
        pipeline = self._photometric_pipeline()
        pipeline.set_random_state(rng, random.Random(int(rng.integers(2**62))))
        return pipeline(image=image)["image"]

    def sample_occlusion(self, rng, output_size):
        """A random ``(patch, fill)`` or None; ``patch = (x0, y0, x1, y1)`` integer corners."""
        if not rng.uniform() < self.occlusion_probability:
            return None
        height, width = output_size
        low, high = self.occlusion_size
        patch_width = max(1, int(round(rng.uniform(low, high) * width)))
        patch_height = max(1, int(round(rng.uniform(low, high) * height)))
        x0 = int(rng.integers(0, width - patch_width + 1))
        y0 = int(rng.integers(0, height - patch_height + 1))
        return (x0, y0, x0 + patch_width, y0 + patch_height), int(rng.integers(0, 256))

    def __call__(self, crop, keypoints, visibility, rng):
        """Photometric changes and occlusion of a crop (geometry is done by the pipeline).

        Args:
            crop: ``(H, W, C)`` uint8 crop.
            keypoints: ``(K, 2)`` points in crop pixels.
            visibility: ``(K,)``.
            rng: ``numpy.random.Generator``.

        Returns:
            ``(crop, visibility)``.
        """
        crop = self.photometric(crop, rng)
        occlusion = self.sample_occlusion(rng, crop.shape[:2])
        if occlusion is not None:
            crop, visibility = occlude(crop, keypoints, visibility, *occlusion)
        return crop, visibility
