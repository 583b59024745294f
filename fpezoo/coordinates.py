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
