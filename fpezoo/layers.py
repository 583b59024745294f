"""Preprocessing and decoding layers shared by every fpezoo model family.

All layers follow the coordinate contract of ``docs/DESIGN.md``: keypoints are
``(x, y)`` pixels with the centre of the top-left pixel at ``(0, 0)``.

* :class:`FacePreprocessing` turns any image batch (any size, any dtype, RGB, BGR
  or grayscale) into the float32 tensor a network expects.
* :class:`SoftArgmax` decodes heatmaps by their expected position (TAO FPENet).
* :class:`HeatmapArgmax` decodes heatmaps by their maximum with FAN's quarter-pixel
  refinement.
* :class:`RegressionDecoder` turns normalised ``[0, 1]`` outputs into pixels.
* :class:`RescaleKeypoints` maps keypoints from one pixel grid (a heatmap, the
  network input) to another (the model's input tensor).

The decoding layers compute in float32 by default, also under a mixed-precision
policy, because their sums over thousands of heatmap pixels lose too much in
float16.
"""

import keras
from keras import ops

from fpezoo.coordinates import rescale_points
from fpezoo.imageio import COLORS

COLOR_CHANNELS = {"grayscale": 1, "rgb": 3, "bgr": 3}
# ITU-R BT.601 luma, as OpenCV's COLOR_RGB2GRAY (the data pipeline uses OpenCV).
LUMA_WEIGHTS_RGB = (0.299, 0.587, 0.114)
REGRESSION_CONVENTIONS = ("corners", "centres", "indices")


def _pair(value, arg_name):
    """Validates a ``(height, width)`` pair of positive integers."""
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{arg_name}` must be a (height, width) pair of positive integers. "
            f"Received: {arg_name}={value!r}"
        ) from None
    if height < 1 or width < 1 or (height, width) != tuple(value):
        raise ValueError(
            f"`{arg_name}` must be a (height, width) pair of positive integers. "
            f"Received: {arg_name}={value!r}"
        )
    return height, width


def _check_choice(value, choices, arg_name):
    if value not in choices:
        raise ValueError(f"`{arg_name}` must be one of {choices}. Received: {arg_name}={value!r}")
    return value


def _float32_by_default(kwargs):
    kwargs.setdefault("dtype", "float32")
    return kwargs


@keras.saving.register_keras_serializable(package="fpezoo")
class FacePreprocessing(keras.layers.Layer):
    """Resizes, colour-converts and scales a batch of face crops.

    Any input height, width and dtype (``uint8`` images of 0..255 included) become
    ``float32`` of shape ``(N, *output_size, channels of output_color)``, computed
    as ``resized * scale + offset``. Resizing is bilinear with half-pixel centres
    (``tf.image.resize``), the mapping that
    :func:`fpezoo.coordinates.rescale_points` inverts. Colour conversion to
    grayscale uses the BT.601 luma weights of OpenCV's ``COLOR_RGB2GRAY``;
    grayscale to colour repeats the channel.

    Args:
        output_size: ``(height, width)`` the network expects.
        input_color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``: channel layout of
            the input (1, 3 or 3 channels).
        output_color: channel layout the network expects.
        scale: multiplier applied after resizing (e.g. ``1 / 255``).
        offset: added after scaling (e.g. ``-0.5``).
        antialias: low-pass filter when shrinking (better quality for large
            downscales, but not every exporter supports it).
        **kwargs: standard layer arguments (``name``, ``dtype``...).
    """

    def __init__(self, output_size=(80, 80), input_color="grayscale", output_color="grayscale",
                 scale=1.0, offset=0.0, antialias=False, **kwargs):
        super().__init__(**_float32_by_default(kwargs))
        self.output_size = _pair(output_size, "output_size")
        self.input_color = _check_choice(input_color, COLORS, "input_color")
        self.output_color = _check_choice(output_color, COLORS, "output_color")
        self.scale = float(scale)
        self.offset = float(offset)
        self.antialias = bool(antialias)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "FacePreprocessing expects images of shape (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        expected = COLOR_CHANNELS[self.input_color]
        if input_shape[-1] is not None and input_shape[-1] != expected:
            raise ValueError(
                f"input_color={self.input_color!r} needs {expected} channel(s), but the images "
                f"have {input_shape[-1]}. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, images):
        images = ops.cast(images, "float32")
        if tuple(images.shape[1:3]) != self.output_size:
            images = ops.image.resize(
                images, self.output_size, interpolation="bilinear", antialias=self.antialias
            )
        images = self._convert_color(images)
        if self.scale != 1.0:
            images = images * self.scale
        if self.offset != 0.0:
            images = images + self.offset
        return images

    def _convert_color(self, images):
        source, target = self.input_color, self.output_color
        if source == target:
            return images
        if target == "grayscale":
            weights = LUMA_WEIGHTS_RGB if source == "rgb" else LUMA_WEIGHTS_RGB[::-1]
            return ops.sum(images * ops.convert_to_tensor(weights, "float32"), axis=-1, keepdims=True)
        if source == "grayscale":
            return ops.repeat(images, 3, axis=-1)
        return ops.flip(images, axis=-1)  # rgb <-> bgr

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, COLOR_CHANNELS[self.output_color])

    def get_config(self):
        config = super().get_config()
        config.update(
            output_size=self.output_size, input_color=self.input_color,
            output_color=self.output_color, scale=self.scale, offset=self.offset,
            antialias=self.antialias,
        )
        return config


@keras.saving.register_keras_serializable(package="fpezoo")
class SoftArgmax(keras.layers.Layer):
    """Soft-argmax decoding of heatmaps, as in TAO's FPENet.

    Each heatmap ``h`` becomes a probability map ``p = softmax(beta * (h - max h))``
    over its pixels; the keypoint is the expected ``(column, row)`` under ``p`` and
    the confidence is ``max p``. Differentiable, and sub-pixel accurate.

    Reference: Honari et al., "Improving Landmark Localization with
    Semi-Supervised Learning", CVPR 2018 (https://arxiv.org/abs/1709.01591).

    Args:
        beta: inverse temperature of the softmax (TAO's ``beta``).
        **kwargs: standard layer arguments.

    Call arguments:
        heatmaps: ``(N, H, W, K)``.

    Returns:
        ``[keypoints (N, K, 2) in heatmap pixels, confidence (N, K)]``.
    """

    def __init__(self, beta=0.1, **kwargs):
        super().__init__(**_float32_by_default(kwargs))
        if not float(beta) > 0:
            raise ValueError(f"`beta` must be positive. Received: beta={beta!r}")
        self.beta = float(beta)

    def call(self, heatmaps):
        heatmaps = ops.cast(heatmaps, self.compute_dtype)
        peak = ops.max(heatmaps, axis=(1, 2), keepdims=True)
        weights = ops.exp(self.beta * (heatmaps - peak))
        total = ops.sum(weights, axis=(1, 2))  # (N, K), >= 1 since the peak weighs 1
        column_mass = ops.sum(weights, axis=1)  # (N, W, K)
        row_mass = ops.sum(weights, axis=2)  # (N, H, K)
        columns = ops.arange(ops.shape(heatmaps)[2], dtype=self.compute_dtype)
        rows = ops.arange(ops.shape(heatmaps)[1], dtype=self.compute_dtype)
        x = ops.sum(column_mass * columns[None, :, None], axis=1) / total
        y = ops.sum(row_mass * rows[None, :, None], axis=1) / total
        keypoints = ops.stack([x, y], axis=-1)
        confidence = 1.0 / total  # the peak's probability
        return [keypoints, confidence]

    def compute_output_shape(self, input_shape):
        batch, keypoints = input_shape[0], input_shape[-1]
        return [(batch, keypoints, 2), (batch, keypoints)]

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta)
        return config


@keras.saving.register_keras_serializable(package="fpezoo")
class HeatmapArgmax(keras.layers.Layer):
    """Argmax decoding of heatmaps with FAN's quarter-pixel refinement.

    Matches ``get_preds_fromhm`` of face-alignment (Bulat & Tzimiropoulos): take
    the heatmap's maximum pixel and, when it is not on the border, move a quarter
    pixel in x towards the higher of its left and right neighbours and in y
    towards the higher of its upper and lower neighbours (no move on a tie). The
    confidence is the heatmap's maximum value. face-alignment reports pixel-corner
    coordinates, i.e. this layer's output plus 0.5.

    Reference: Bulat & Tzimiropoulos, "How far are we from solving the 2D & 3D
    Face Alignment problem?", ICCV 2017 (https://arxiv.org/abs/1703.07332).

    Call arguments:
        heatmaps: ``(N, H, W, K)``.

    Returns:
        ``[keypoints (N, K, 2) in heatmap pixels, confidence (N, K)]``.
    """

    def __init__(self, **kwargs):
        super().__init__(**_float32_by_default(kwargs))

    def call(self, heatmaps):
        heatmaps = ops.cast(heatmaps, self.compute_dtype)
        shape = ops.shape(heatmaps)
        height, width, count = shape[1], shape[2], shape[3]
        flat = ops.reshape(heatmaps, (-1, height * width, count))
        confidence = ops.max(flat, axis=1)  # (N, K)
        # First position of the maximum, as np.argmax. Written with min/where
        # because ops.argmax's TensorFlow lowering uses Bitcast, which ONNX lacks.
        positions = ops.arange(height * width, dtype="int32")[None, :, None]
        index = ops.min(
            ops.where(flat == confidence[:, None, :], positions, height * width), axis=1
        )
        column = index % width
        row = index // width

        def value_at(offset):
            neighbour = ops.clip(index + offset, 0, height * width - 1)
            return ops.take_along_axis(flat, neighbour[:, None, :], axis=1)[:, 0, :]

        inside = (column > 0) & (column < width - 1) & (row > 0) & (row < height - 1)
        shift_x = 0.25 * ops.sign(value_at(1) - value_at(-1))
        shift_y = 0.25 * ops.sign(value_at(width) - value_at(-width))
        zero = ops.zeros_like(shift_x)
        x = ops.cast(column, self.compute_dtype) + ops.where(inside, shift_x, zero)
        y = ops.cast(row, self.compute_dtype) + ops.where(inside, shift_y, zero)
        return [ops.stack([x, y], axis=-1), confidence]

    def compute_output_shape(self, input_shape):
        batch, keypoints = input_shape[0], input_shape[-1]
        return [(batch, keypoints, 2), (batch, keypoints)]


@keras.saving.register_keras_serializable(package="fpezoo")
class RegressionDecoder(keras.layers.Layer):
    """Turns regressed ``(x0, y0, x1, y1, ...)`` values in ``[0, 1]`` into pixels.

    ``convention`` says what 0 and 1 meant to the model's training labels, on an
    image of ``output_size``:

    * ``"corners"`` (default): 0 and 1 are the image's outer edges (labels were
      pixel-corner coordinates divided by the size): ``x = v * W - 0.5``.
    * ``"centres"``: 0 and 1 are the centres of the first and last pixels:
      ``x = v * (W - 1)``.
    * ``"indices"``: labels were pixel-centre coordinates divided by the size:
      ``x = v * W``.

    The OpenVINO landmarks-regression-retail-0009 model fits ``"centres"`` best
    (measured in ``fpezoo.models.retail``, which sets it).

    Args:
        output_size: ``(height, width)`` of the image the values refer to.
        convention: ``"corners"``, ``"centres"`` or ``"indices"``.
        **kwargs: standard layer arguments.

    Call arguments:
        values: ``(N, 2K)``.

    Returns:
        keypoints ``(N, K, 2)`` in pixels of ``output_size``.
    """

    def __init__(self, output_size, convention="corners", **kwargs):
        super().__init__(**_float32_by_default(kwargs))
        self.output_size = _pair(output_size, "output_size")
        self.convention = _check_choice(convention, REGRESSION_CONVENTIONS, "convention")

    def build(self, input_shape):
        if len(input_shape) != 2 or (input_shape[-1] is not None and input_shape[-1] % 2):
            raise ValueError(
                "RegressionDecoder expects (batch, 2 * num_keypoints) values. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, values):
        values = ops.reshape(ops.cast(values, self.compute_dtype), (-1, values.shape[-1] // 2, 2))
        height, width = self.output_size
        size = ops.convert_to_tensor([width, height], self.compute_dtype)
        if self.convention == "corners":
            return values * size - 0.5
        if self.convention == "centres":
            return values * (size - 1.0)
        return values * size

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] // 2, 2)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, convention=self.convention)
        return config


@keras.saving.register_keras_serializable(package="fpezoo")
class RescaleKeypoints(keras.layers.Layer):
    """Maps keypoints between two pixel grids of the same image region.

    Used after a decoder to bring keypoints from the heatmap (or network-input)
    grid to the grid of the model's input tensor, with
    :func:`fpezoo.coordinates.rescale_points`. The target grid is ``target_size``
    or, when that is None, the height and width of the ``reference`` image batch
    passed at call time (so a model with a resizing preprocessing layer accepts
    any input size).

    Args:
        source_size: ``(height, width)`` of the grid the keypoints are in.
        target_size: ``(height, width)`` to map them to, or None to read it from
            ``reference``.
        **kwargs: standard layer arguments.

    Call arguments:
        keypoints: ``(N, K, 2)``.
        reference: ``(N, H, W, C)`` images whose grid is the target; needed when
            ``target_size`` is None.
    """

    def __init__(self, source_size, target_size=None, **kwargs):
        super().__init__(**_float32_by_default(kwargs))
        self.source_size = _pair(source_size, "source_size")
        self.target_size = None if target_size is None else _pair(target_size, "target_size")

    def call(self, keypoints, reference=None):
        keypoints = ops.cast(keypoints, self.compute_dtype)
        if self.target_size is not None:
            target = self.target_size
        elif reference is None:
            raise ValueError(
                "RescaleKeypoints without `target_size` needs the `reference` images. "
                "Received: reference=None"
            )
        else:
            target = tuple(ops.shape(reference)[1:3])
        return rescale_points(keypoints, self.source_size, target)

    def compute_output_shape(self, keypoints_shape, reference_shape=None):
        return keypoints_shape

    def get_config(self):
        config = super().get_config()
        config.update(source_size=self.source_size, target_size=self.target_size)
        return config
