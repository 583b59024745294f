"""Pieces shared by every model builder.

Every builder in ``fpezoo.models`` follows the keras.applications pattern::

    model = Builder(num_keypoints=..., weights=None, input_shape=None,
                    input_tensor=None, include_preprocessing=..., name=..., sha256=None)

and returns a :class:`LandmarkModel` whose outputs are
``[keypoints (N, K, 2) in input-tensor pixels, confidence (N, K)]``. The helpers
below hold the parts every builder shares: argument checks, the registered
weights' architecture (:func:`registered_weights_builder`), the image input,
and the final model with its weights.

Every family names the layer that predicts one channel (or value pair) per
keypoint :data:`KEYPOINT_HEAD` (and any other layer whose shapes depend on the
keypoint count ``keypoint_head_<something>``): :mod:`fpezoo.weights` starts
those fresh when weights trained for another keypoint count are loaded.
"""

import functools
import inspect
import os

import keras

from fpezoo.layers import FacePreprocessing
from fpezoo.weights import KEYPOINT_HEAD, load_weights, registered_arguments

__all__ = ["KEYPOINT_HEAD", "LandmarkModel", "build_landmark_model", "image_input",
           "registered_weights_builder", "resolve_input_color", "resolve_network_input",
           "validate_num_keypoints", "validate_weights_argument"]


@keras.saving.register_keras_serializable(package="fpezoo")
class LandmarkModel(keras.Model):
    """A functional model returning ``[keypoints, confidence]``.

    Its losses and metrics apply to the keypoints output, so a single loss works
    in ``compile``, as it does for a one-output model::

        model.compile(optimizer="adam", loss=fpezoo.losses.WingLoss())
        model.fit(images, labels)   # labels: (N, K, 3) = x, y, visibility

    The confidence output carries no loss: it is derived from the same heatmaps
    (or fixed) and is for the user, as in TAO's FPENet.
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        _check_image_batch(self.inputs, inputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, _keypoints_output(y_pred), sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, _keypoints_output(y_pred), sample_weight)


def _check_image_batch(model_inputs, inputs):
    """Clear errors for an image batch of the wrong rank or channel count."""
    if len(model_inputs) != 1 or not hasattr(inputs, "shape"):
        return
    expected = tuple(model_inputs[0].shape)
    received = tuple(inputs.shape)
    if len(received) != len(expected):
        raise ValueError(
            f"This model takes a batch of images of shape {expected} (batch first; add a batch "
            f"axis for a single image). Received: inputs.shape={received}"
        )
    if expected[-1] is not None and received[-1] is not None and received[-1] != expected[-1]:
        raise ValueError(
            f"This model takes images with {expected[-1]} channel(s), shape {expected}. "
            f"Received: inputs.shape={received}"
        )


def _keypoints_output(y_pred):
    if isinstance(y_pred, (list, tuple)):
        return y_pred[0]
    return y_pred


def validate_num_keypoints(num_keypoints):
    """Checks that ``num_keypoints`` is a positive integer and returns it."""
    if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints < 1:
        raise ValueError(
            "`num_keypoints` must be a positive integer. "
            f"Received: num_keypoints={num_keypoints!r}"
        )
    return num_keypoints


def validate_weights_argument(weights, sha256=None):
    """Checks that ``weights`` is None, a registered name or a file path.

    Args:
        weights: the builder's ``weights`` argument.
        sha256: the builder's ``sha256`` argument, which needs ``weights``.

    Returns:
        ``weights``.

    Raises:
        TypeError: ``weights`` has another type.
        ValueError: ``sha256`` without ``weights``.
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "`weights` must be None, a registered weights name or a path to a "
            f"`.weights.h5` file. Received: weights={weights!r}"
        )
    if weights is None and sha256 is not None:
        raise ValueError(
            "`sha256` checks the weights file that `weights` names; without weights there is no "
            f"file to check. Received: sha256={sha256!r}, weights=None"
        )
    return weights


def registered_weights_builder(builder):
    """Decorates a model builder so that registered weights carry their architecture.

    When ``weights`` is a registered name, the arguments the caller did not pass
    come from the name's registered config, and passed arguments that
    contradict it fail before anything is built (see
    :func:`fpezoo.weights.registered_arguments`)::

        fpezoo.FPENet(weights="fpenet68_w32")                   # width 32, 40x40 heatmaps
        fpezoo.FPENet(num_keypoints=80, weights="fpenet68_w32")  # same trunk, new 80-point head
        fpezoo.FPENet(width=64, weights="fpenet68_w32")          # ValueError: ... width=32

    The weights argument is type-checked first (:func:`validate_weights_argument`).

    Args:
        builder: a builder taking ``weights`` and ``sha256`` keyword arguments.

    Returns:
        The builder with the same signature and docstring.
    """
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        validate_weights_argument(arguments.get("weights"), arguments.get("sha256"))
        return builder(**registered_arguments(build, arguments))

    return build


def image_input(input_shape=None, input_tensor=None, default_shape=(80, 80, 1),
                allowed_channels=(1,), fixed_size=None, size_multiple=1, dtype=None):
    """Resolves the model's image input in the keras.applications style.

    Args:
        input_shape: ``(height, width, channels)`` without the batch axis, or None
            for ``default_shape`` (or the shape of ``input_tensor``).
        input_tensor: optional Keras tensor (e.g. the output of ``keras.Input`` or
            of another layer) to use as the image input.
        default_shape: shape used when neither argument gives one.
        allowed_channels: channel counts the model accepts.
        fixed_size: ``(height, width)`` the model requires, or None.
        size_multiple: height and width must be multiples of this (when known).
        dtype: dtype of a newly created input (None: the float policy).

    Returns:
        ``(model_inputs, images)``: what to pass as the model's ``inputs`` and the
        image tensor to build the network on.

    Raises:
        ValueError: when the shape has the wrong rank, channel count or size.
    """
    if input_tensor is not None:
        tensor_shape = tuple(input_tensor.shape)
        if len(tensor_shape) != 4:
            raise ValueError(
                "`input_tensor` must be a batch of images (batch, height, width, channels). "
                f"Received: input_tensor.shape={tensor_shape}"
            )
        if input_shape is not None and tuple(input_shape) != tensor_shape[1:]:
            raise ValueError(
                "`input_shape` and `input_tensor` disagree. "
                f"Received: input_shape={tuple(input_shape)}, input_tensor.shape={tensor_shape}"
            )
        shape = tensor_shape[1:]
    else:
        shape = default_shape if input_shape is None else input_shape
    shape = _check_image_shape(shape, allowed_channels, fixed_size, size_multiple)
    if input_tensor is None:
        images = keras.Input(shape=shape, dtype=dtype, name="images")
        return images, images
    if not keras.backend.is_keras_tensor(input_tensor):
        images = keras.Input(tensor=input_tensor, shape=shape)
        return images, images
    sources = keras.utils.get_source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def resolve_network_input(input_shape, input_tensor, include_preprocessing, input_color,
                          network_size, network_color, scale=1.0, fixed_size=True, size_multiple=1):
    """The model's image input and the tensor its network starts from.

    With ``include_preprocessing`` the model takes raw 0-255 crops of any size
    with 1 or 3 channels, and a :class:`~fpezoo.layers.FacePreprocessing` layer
    (named ``"preprocessing"``) resizes them to ``network_size``, converts them to
    ``network_color`` and multiplies them by ``scale``. Without it the model takes
    the network's own images: ``network_color`` channels, ``network_size``
    (or, with ``fixed_size=False``, any multiple of ``size_multiple``), multiplied
    by ``scale`` in a ``Rescaling`` layer named ``"input_scale"`` when it is not 1.

    Args:
        input_shape: as in :func:`image_input`.
        input_tensor: as in :func:`image_input`.
        include_preprocessing: whether the model takes raw crops.
        input_color: colour order of the raw crops (:func:`resolve_input_color`);
            only with ``include_preprocessing``.
        network_size: ``(height, width)`` the network takes.
        network_color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``: what the network takes.
        scale: multiplier of the network's 0-255 input.
        fixed_size: without preprocessing, whether the input must be ``network_size``.
        size_multiple: without preprocessing, what height and width must be multiples of.

    Returns:
        ``(model_inputs, images, network_input)``: the model's ``inputs``, the image
        tensor they give, and the tensor to build the network on.

    Raises:
        ValueError: for ``input_color`` without preprocessing, and as :func:`image_input`.
    """
    if include_preprocessing:
        inputs, images = image_input(input_shape, input_tensor, default_shape=(None, None, 3),
                                     allowed_channels=(1, 3))
        color = resolve_input_color(images.shape[-1], input_color)
        preprocessing = FacePreprocessing(network_size, input_color=color,
                                          output_color=network_color, scale=scale,
                                          name="preprocessing")
        return inputs, images, preprocessing(images)
    if input_color is not None:
        raise ValueError(
            "`input_color` applies only with include_preprocessing=True (the network itself "
            f"takes {network_color}). Received: input_color={input_color!r}"
        )
    channels = 1 if network_color == "grayscale" else 3
    inputs, images = image_input(input_shape, input_tensor,
                                 default_shape=tuple(network_size) + (channels,),
                                 allowed_channels=(channels,),
                                 fixed_size=tuple(network_size) if fixed_size else None,
                                 size_multiple=size_multiple)
    if scale == 1.0:
        return inputs, images, images
    return inputs, images, keras.layers.Rescaling(scale, name="input_scale")(images)


def resolve_input_color(channels, input_color):
    """The colour order of raw images with ``channels`` channels.

    Args:
        channels: channel count of the raw images (1, 3 or 4).
        input_color: ``"grayscale"`` for 1 channel, ``"rgb"`` or ``"bgr"`` otherwise;
            None picks ``"grayscale"`` or ``"rgb"``.

    Returns:
        The colour name.
    """
    if channels == 1:
        allowed, default = ("grayscale",), "grayscale"
    else:
        allowed, default = ("rgb", "bgr"), "rgb"
    color = default if input_color is None else input_color
    if color not in allowed:
        raise ValueError(
            f"Images with {channels} channel(s) can be {' or '.join(allowed)}. "
            f"Received: input_color={input_color!r}"
        )
    return color


def _check_image_shape(shape, allowed_channels, fixed_size, size_multiple):
    try:
        shape = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={shape!r}"
        ) from None
    if len(shape) != 3:
        raise ValueError(
            "`input_shape` must have rank 3, (height, width, channels), without the batch "
            f"axis. Received: input_shape={shape}"
        )
    if shape[2] not in allowed_channels:
        raise ValueError(
            f"This model takes images with {' or '.join(map(str, allowed_channels))} "
            f"channel(s). Received: input_shape={shape}"
        )
    if fixed_size is not None and shape[:2] != tuple(fixed_size):
        raise ValueError(
            f"This model takes {fixed_size[0]}x{fixed_size[1]} images (use "
            "include_preprocessing=True to accept any size). "
            f"Received: input_shape={shape}"
        )
    for size in shape[:2]:
        if size is not None and (size < 1 or size % size_multiple):
            raise ValueError(
                f"Image height and width must be positive multiples of {size_multiple} "
                f"for this model. Received: input_shape={shape}"
            )
    return shape


def build_landmark_model(inputs, outputs, name, weights=None, sha256=None):
    """Creates the :class:`LandmarkModel` and loads ``weights`` into it.

    Args:
        inputs: the model's input tensor(s).
        outputs: ``[keypoints, confidence]``.
        name: model name.
        weights: None, a registered weights name or a ``.weights.h5`` path; see
            :func:`fpezoo.weights.load_weights` (partial loading when the
            keypoint count differs).
        sha256: optional hex SHA-256 digest the weights file must have.

    Returns:
        The model.
    """
    model = LandmarkModel(inputs=inputs, outputs=outputs, name=name)
    if weights is not None:
        load_weights(model, weights, sha256=sha256)
    return model
