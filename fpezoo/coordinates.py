"""Coordinate conventions shared by every fpezoo module.

Keypoints are ``(x, y)`` pixels in the pixel-centre convention: the centre of the
top-left pixel is ``(0, 0)``, x grows to the right and y downwards. Face boxes are
``(x_min, y_min, x_max, y_max)`` in pixel-corner units, so the box of a whole
``W x H`` image is ``(0, 0, W, H)``.
"""

import numpy as np


def rescale_points(points, src_hw, dst_hw):
    """Maps points between two resolutions of the same image region.

    With pixel centres at integer coordinates, a resize from ``src_hw`` to
    ``dst_hw`` maps ``x`` to ``(x + 0.5) * dst_w / src_w - 0.5``. This is the
    mapping of half-pixel-centre resizing (``tf.image.resize``, OpenCV's
    ``INTER_LINEAR``), so points stay on the features they mark.

    Works on NumPy arrays and on backend tensors (Keras ops broadcasting rules).

    Args:
        points: array of shape ``(..., 2)`` holding ``(x, y)``.
        src_hw: ``(height, width)`` of the resolution the points are in.
        dst_hw: ``(height, width)`` of the resolution to map them to.

    Returns:
        The points in ``dst_hw`` pixels, same shape as ``points``.
    """
    scale = _xy_scale(src_hw, dst_hw)
    return (points + 0.5) * scale - 0.5


def _xy_scale(src_hw, dst_hw):
    src_h, src_w = src_hw
    dst_h, dst_w = dst_hw
    if isinstance(src_h, (int, float)) and isinstance(dst_h, (int, float)):
        return np.array([dst_w / src_w, dst_h / src_h], dtype="float32")
    # Backend tensors (dynamic image sizes inside a model).
    from keras import ops

    return ops.stack(
        [ops.cast(dst_w, "float32") / ops.cast(src_w, "float32"),
         ops.cast(dst_h, "float32") / ops.cast(src_h, "float32")]
    )


def rotation_transform(angle, centre):
    """The 2x3 affine matrix turning points by ``angle`` degrees about ``centre``.

    With y pointing down, a positive angle turns points clockwise on screen:
    ``p' = centre + R(angle) @ (p - centre)``, ``R = [[cos, -sin], [sin, cos]]``.
    The roll of a face (:func:`roll_from_eyes`) uses the same sign, so turning
    an image by ``-roll`` about a face's centre sets that face upright.

    Args:
        angle: degrees.
        centre: ``(x, y)`` in pixels.

    Returns:
        float64 ``(2, 3)`` array.
    """
    radians = np.radians(float(angle))
    cos, sin = np.cos(radians), np.sin(radians)
    rotation = np.array([[cos, -sin], [sin, cos]])
    centre = np.asarray(centre, dtype="float64").reshape(2)
    return np.hstack([rotation, (centre - rotation @ centre)[:, None]])


def quarter_turn_transform(turns, image_hw):
    """The 2x3 matrix from pixels of an image to pixels of ``np.rot90(image, turns)``.

    ``np.rot90`` turns an image counter-clockwise on screen by ``90 * turns``
    degrees; this maps pixel centres exactly (a ``W x H`` image becomes
    ``H x W`` for odd ``turns``).

    Args:
        turns: number of quarter turns (any integer; taken modulo 4).
        image_hw: ``(height, width)`` of the image before turning.

    Returns:
        float64 ``(2, 3)`` array.
    """
    height, width = image_hw
    turns = int(turns) % 4
    # One counter-clockwise quarter turn maps (x, y) to (y, W - 1 - x).
    matrix = np.eye(3)
    for _ in range(turns):
        step = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, width - 1.0], [0.0, 0.0, 1.0]])
        matrix = step @ matrix
        height, width = width, height
    return matrix[:2]


def roll_from_eyes(left_eye, right_eye, mouth=None):
    """In-plane rotation (roll) of a face from its eye centres (and mouth), in degrees.

    Without ``mouth`` it is the angle of the line from the left to the right eye.
    With the mouth centre it is the angle of the face's vertical axis, from the
    eyes' midpoint to the mouth, less 90 degrees: that axis stays reliable on
    profile faces, whose two eye points crowd together and whose eye line can
    point anywhere (on the first 200 AFLW2000-3D photos, turning BlazeFace's
    crops by the eye line instead cost the predictor 0.3 points of NME upright
    and 0.8 on photos turned by random angles; ``benchmarks/end_to_end.py``).

    Args:
        left_eye: ``(..., 2)`` centre of the eye that is on the image left when
            the face is upright.
        right_eye: ``(..., 2)`` centre of the other eye.
        mouth: optional ``(..., 2)`` mouth centre.

    Returns:
        Degrees in ``(-180, 180]``: 0 for an upright face, positive when the face
        is turned clockwise on screen (the image-right eye lower, the sign of
        :class:`fpezoo.geometry.HeadPose`'s roll), 180 for a face upside down.
    """
    left_eye = np.asarray(left_eye, dtype="float64")
    right_eye = np.asarray(right_eye, dtype="float64")
    if mouth is None:
        delta = right_eye - left_eye
        return np.degrees(np.arctan2(delta[..., 1], delta[..., 0]))
    down = np.asarray(mouth, dtype="float64") - (left_eye + right_eye) / 2
    # The vertical axis turned back by 90 degrees: (x, y) -> (y, -x).
    return np.degrees(np.arctan2(-down[..., 0], down[..., 1]))
