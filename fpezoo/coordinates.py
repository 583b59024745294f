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


def angle_difference(angle, reference):
    """``angle - reference`` in degrees, wrapped into ``[-180, 180)`` (arrays broadcast)."""
    return (np.asarray(angle, dtype="float64") - reference + 180.0) % 360.0 - 180.0


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


# Face crops: one 2x3 affine transform from image pixels to crop pixels.

# Below this scale factor a warp first shrinks the image by averaging pixel blocks,
# since bilinear sampling alone aliases when it skips source pixels.
_MIN_WARP_SCALE = 0.5


def _as_3x3(transform):
    return np.vstack([np.asarray(transform, dtype="float64").reshape(2, 3), (0.0, 0.0, 1.0)])


def resize_transform(src_hw, dst_hw):
    """The 2x3 form of :func:`fpezoo.coordinates.rescale_points` (a resize)."""
    origin = rescale_points(np.zeros(2), src_hw, dst_hw)
    unit = rescale_points(np.ones(2), src_hw, dst_hw) - origin
    return np.array([[unit[0], 0.0, origin[0]], [0.0, unit[1], origin[1]]], dtype="float64")


def compose(outer, inner):
    """The 2x3 transform applying ``inner`` then ``outer``."""
    return (_as_3x3(outer) @ _as_3x3(inner))[:2]


def invert_transform(transform):
    """The inverse of a 2x3 affine transform."""
    matrix = _as_3x3(transform)
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError(
            f"The transform is not invertible. Received: transform={np.asarray(transform).tolist()}")
    return np.linalg.inv(matrix)[:2]


def transform_points(points, transform):
    """Applies a 2x3 affine transform to ``(..., 2)`` points."""
    transform = np.asarray(transform, dtype="float64").reshape(2, 3)
    points = np.asarray(points, dtype="float64")
    return points @ transform[:, :2].T + transform[:, 2]


def transform_scale(transform):
    """How a 2x3 affine (similarity) transform scales lengths, hence depth: ``sqrt(|det|)``."""
    transform = np.asarray(transform, dtype="float64")
    return float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))


def invert_points(points, transform):
    """Maps points from the crop back to the original image (inverse of ``transform``).

    Args:
        points: ``(..., 2)`` points in the pixels of the crop (model input).
        transform: the 2x3 image-to-crop transform of :func:`crop_face`.

    Returns:
        float64 ``(..., 2)`` points in original-image pixels.
    """
    return transform_points(points, invert_transform(transform))


def _check_output_size(output_size):
    output_size = tuple(int(v) for v in output_size)
    if len(output_size) != 2 or min(output_size) < 1:
        raise ValueError(f"output_size must be (height, width) >= 1. Received: output_size={output_size}")
    return output_size


def crop_transform(box, output_size, enlarge=1.0, jitter=0.0, rng=None):
    """The 2x3 transform from image pixels to a square face crop.

    The crop is the square of side ``enlarge * max(box width, box height)``
    centred on the box, resized to ``output_size``. With ``jitter > 0`` the
    centre moves by up to ``jitter`` of the side along each axis and the side
    changes by up to ``jitter`` of itself (uniform draws from ``rng``). A crop
    of the whole image (box ``(0, 0, W, H)``, square) is exactly
    :func:`fpezoo.coordinates.rescale_points`.

    Args:
        box: ``(x_min, y_min, x_max, y_max)`` in pixel-corner units.
        output_size: ``(height, width)`` of the crop.
        enlarge: factor applied to the box's longer side.
        jitter: relative random shift and zoom (training only).
        rng: ``numpy.random.Generator`` (required when ``jitter > 0``).

    Returns:
        float64 ``(2, 3)`` array.
    """
    output_size = _check_output_size(output_size)
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    if not (x_max > x_min and y_max > y_min and np.isfinite([x_min, y_min, x_max, y_max]).all()):
        raise ValueError(f"A face box needs x_max > x_min and y_max > y_min. Received: box={box}")
    if not enlarge > 0:
        raise ValueError(f"enlarge must be positive. Received: enlarge={enlarge}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1). Received: jitter={jitter}")
    center_x, center_y = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
    side = max(x_max - x_min, y_max - y_min) * enlarge
    if jitter > 0:
        if rng is None:
            raise ValueError("A jittered crop needs a random generator. Received: rng=None")
        center_x += rng.uniform(-jitter, jitter) * side
        center_y += rng.uniform(-jitter, jitter) * side
        side *= rng.uniform(1.0 - jitter, 1.0 + jitter)
    out_height, out_width = output_size
    # Corner units u map to (u - crop origin) * k; pixel centres sit at u - 0.5.
    scale_x, scale_y = out_width / side, out_height / side
    return np.array(
        [[scale_x, 0.0, (0.5 - center_x + side / 2.0) * scale_x - 0.5],
         [0.0, scale_y, (0.5 - center_y + side / 2.0) * scale_y - 0.5]]
    )


def warp_block_size(transform):
    """The side of the pixel blocks :func:`warp` averages first for a transform (1: none)."""
    transform = np.asarray(transform, dtype="float64").reshape(2, 3)
    scale = np.sqrt(abs(np.linalg.det(transform[:, :2])))
    return int(1.0 / scale) if scale < _MIN_WARP_SCALE else 1


def warp(image, transform, output_size):
    """Warps ``image`` with a 2x3 image-to-output transform (bilinear, black outside).

    Reductions below 1/2 first average n x n pixel blocks (an exact resize,
    folded into the transform), so small crops of large photos do not alias.
    """
    import cv2

    output_size = _check_output_size(output_size)
    transform = np.asarray(transform, dtype="float64")
    height, width = image.shape[:2]
    factor = warp_block_size(transform)
    if factor > 1:
        # Average n x n blocks (exact for an integer factor: pad to a multiple of n with
        # the black of the border), leaving a bilinear reduction of at most 2.
        padded_hw = (-(-height // factor) * factor, -(-width // factor) * factor)
        if padded_hw != (height, width):
            image = cv2.copyMakeBorder(image, 0, padded_hw[0] - height, 0, padded_hw[1] - width,
                                       cv2.BORDER_CONSTANT, value=0).reshape(padded_hw + image.shape[2:])
        small_hw = (padded_hw[0] // factor, padded_hw[1] // factor)
        image = cv2.resize(image, small_hw[::-1], interpolation=cv2.INTER_AREA).reshape(
            small_hw + image.shape[2:])
        transform = compose(transform, invert_transform(resize_transform(padded_hw, small_hw)))
    out_height, out_width = output_size
    warped = cv2.warpAffine(
        image, transform, (out_width, out_height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return warped.reshape(output_size + image.shape[2:])


def crop_face(image, box, output_size, enlarge=1.0, jitter=0.0, rng=None):
    """Crops a square face region and resizes it to ``output_size``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        box: face box ``(x_min, y_min, x_max, y_max)`` in pixel-corner units;
            parts outside the image come out black.
        output_size: ``(height, width)``.
        enlarge, jitter, rng: see :func:`crop_transform`.

    Returns:
        ``(crop, transform)``: the crop and the 2x3 image-to-crop transform
        (map predictions back with :func:`invert_points`).
    """
    transform = crop_transform(box, output_size, enlarge, jitter, rng)
    return warp(image, transform, output_size), transform
