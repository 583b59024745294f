"""The 5-point landmarks regressor of OpenVINO's landmarks-regression-retail-0009.

A small plain CNN (Open Model Zoo, Intel, Apache-2.0; "Smart Classroom" demo),
rebuilt layer for layer from its official IR, channels-last:

=====================================  ===========  ==========================
layers                                 output       trainable parameters
=====================================  ===========  ==========================
input batch norm                       48x48x3      6
conv 3x3 3->16, PReLU, max-pool 2, BN  24x24x16     432 + 16 + 1 + 32 = 481
conv 3x3 16->32, PReLU, max-pool, BN   12x12x32     4,608 + 32 + 1 + 64 = 4,705
conv 3x3 32->64, PReLU, max-pool, BN   6x6x64       18,432 + 64 + 1 + 128 = 18,625
conv 3x3 64->64, PReLU, BN             6x6x64       36,864 + 64 + 1 + 128 = 37,057
conv 3x3 64->128, PReLU, BN            6x6x128      73,728 + 128 + 1 + 256 = 74,113
depthwise conv 6x6 valid, PReLU, BN    1x1x128      4,608 + 128 + 1 + 256 = 4,993
conv 1x1 128->256, PReLU, BN           1x1x256      32,768 + 256 + 1 + 512 = 33,537
conv 1x1 256->64, PReLU                1x1x64       16,384 + 64 + 1 = 16,449
conv 1x1 64->10, sigmoid               1x1x10       640 + 10 = 650
=====================================  ===========  ==========================

Every convolution has a bias; every PReLU has a single shared slope; batch norms
follow PyTorch's (epsilon 1e-5, momentum 0.1). The trainable parameters total
**190,616**, the count of PyTorch's ``model.parameters()`` and of the 32-bit
values in the official ``.bin`` (762,464 bytes), where each batch norm is folded
into a multiply and an add. The batch norms' moving statistics add 1,382
non-trainable values (Keras counts them in ``count_params()``: 191,998).

Multiply-accumulates, counted layer by layer (output pixels x kernel size x
input channels x output channels): 995,328 + 2,654,208 + 2,654,208 + 1,327,104
+ 2,654,208 (3x3 convs) + 4,608 (depthwise) + 32,768 + 16,384 + 640 (1x1) =
10,339,456, i.e. 0.0207 GFLOPs at 2 FLOPs per multiply-accumulate (Open Model
Zoo: 0.021 GFLOPs).

:func:`import_openvino_retail` reads the official IR (``.xml`` + ``.bin``) with
the standard library and NumPy, and maps every constant onto this model.
"""

import pathlib
import xml.etree.ElementTree as ElementTree

import keras
import numpy as np
from keras import ops

from fpezoo.layers import RegressionDecoder, RescaleKeypoints
from fpezoo.models.common import (
    KEYPOINT_HEAD,
    build_landmark_model,
    registered_weights_builder,
    resolve_network_input,
    validate_num_keypoints,
)

NETWORK_SIZE = (48, 48)
# (filters, max-pool after the block) of the 3x3 convolution blocks.
CONV_BLOCKS = ((16, True), (32, True), (64, True), (64, False), (128, False))
# Filters of the 1x1 convolutions after the global depthwise convolution, and
# whether a batch norm follows them.
POINTWISE_BLOCKS = ((256, True), (64, False))
# PyTorch BatchNorm2d defaults (the model was trained in PyTorch).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9
# On the 2,995 MTFL test faces (80x80 crops resized to 48x48) the official
# model's [0, 1] outputs fit pixel-centre coordinates x = v * (W - 1) better than
# x = v * W - 0.5: eye-centre NME 0.1361 vs 0.1437
# (tests/test_openvino_import.py::test_official_weights_fit_the_centres_convention_best).
# The two differ by a 48/47 scale about the centre, so the margin is small.
OFFICIAL_CONVENTION = "centres"


@keras.saving.register_keras_serializable(package="fpezoo")
class UnitConfidence(keras.layers.Layer):
    """Confidence of a direct regressor: 1 for every keypoint.

    A coordinate regressor has no per-point likelihood to report (unlike a
    heatmap's maximum), so the confidence output is a constant 1, which keeps the
    ``[keypoints, confidence]`` contract without inventing a score.

    Call arguments:
        keypoints: ``(N, K, 2)``.

    Returns:
        ``(N, K)`` ones.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, keypoints):
        return ops.ones_like(keypoints[..., 0], dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@registered_weights_builder
def RetailLandmarks5(num_keypoints=5, weights=None, input_shape=None, input_tensor=None,
                     include_preprocessing=False, input_color=None,
                     convention=OFFICIAL_CONVENTION, name="retail_landmarks5", sha256=None):
    """Builds the landmarks-regression-retail-0009 network (see the module docstring).

    Reference: Open Model Zoo, "landmarks-regression-retail-0009" (Intel,
    Apache-2.0), https://docs.openvino.ai/ (intel models); MTFL 5-point order:
    left eye centre, right eye centre, nose tip, left and right mouth corners
    (Zhang et al., "Facial Landmark Detection by Deep Multi-task Learning",
    ECCV 2014).

    Args:
        num_keypoints: number of keypoints K (the official model: 5). Another
            count changes only ``keypoint_head`` (2K outputs).
        weights: None, a registered weights name or a ``.weights.h5`` path. A
            registered name carries its builder arguments: the ones not passed
            take its registered values (``weights="retail5_mtfl"`` alone builds
            the model with preprocessing), and a passed one that contradicts
            them fails; another ``num_keypoints`` starts ``keypoint_head`` fresh,
            with a warning. The official weights come from
            :func:`import_openvino_retail`.
        input_shape: ``(height, width, channels)``. Without preprocessing it must
            be ``(48, 48, 3)`` (BGR, 0-255, as the official IR). With
            preprocessing: any size, 1 or 3 channels, default ``(None, None, 3)``.
        input_tensor: optional Keras tensor to build the model on.
        include_preprocessing: prepend :class:`fpezoo.layers.FacePreprocessing`,
            so the model takes 0-255 face crops of any size (resized to 48x48 and
            converted to BGR) and returns keypoints in that input's pixels.
        input_color: with preprocessing, ``"rgb"`` (default) or ``"bgr"`` for
            3-channel inputs; 1-channel inputs are grayscale.
        convention: how the sigmoid outputs map to pixels, see
            :class:`fpezoo.layers.RegressionDecoder` (default: the convention
            measured for the official weights).
        name: model name.
        sha256: optional hex SHA-256 digest (64 digits) the weights file must
            have, e.g. for a file loaded by path.

    Returns:
        A :class:`fpezoo.models.common.LandmarkModel` returning ``[keypoints
        (N, K, 2) in input-tensor pixels, confidence (N, K)]``; the confidence is
        1 for every point (:class:`UnitConfidence`).

    Raises:
        ValueError: for a bad argument (the message ends with ``Received: ...``).
    """
    validate_num_keypoints(num_keypoints)
    inputs, images, network_input = resolve_network_input(
        input_shape, input_tensor, include_preprocessing, input_color, NETWORK_SIZE, "bgr")

    values = _regressor(network_input, num_keypoints)
    keypoints = RegressionDecoder(NETWORK_SIZE, convention=convention, name="decoder")(values)
    if include_preprocessing:
        keypoints = RescaleKeypoints(NETWORK_SIZE, name="rescale_keypoints")(keypoints, images)
    confidence = UnitConfidence(name="confidence")(keypoints)
    return build_landmark_model(inputs, [keypoints, confidence], name=name, weights=weights,
                                sha256=sha256)


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON,
                                           momentum=BATCH_NORM_MOMENTUM, name=name)


def _prelu(name):
    # One slope shared by every position and channel, as PyTorch's nn.PReLU().
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                              shared_axes=[1, 2, 3], name=name)


def _regressor(images, num_keypoints):
    """The network: BGR 48x48 images -> (N, 2K) values in [0, 1]."""
    x = _batch_norm("input_bn")(images)
    for index, (filters, pool) in enumerate(CONV_BLOCKS, start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{index}")(x)
        x = _prelu(f"conv{index}_prelu")(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=f"conv{index}_pool")(x)
        x = _batch_norm(f"conv{index}_bn")(x)
    x = keras.layers.DepthwiseConv2D(x.shape[1:3], padding="valid", name="global_depthwise")(x)
    x = _prelu("global_depthwise_prelu")(x)
    x = _batch_norm("global_depthwise_bn")(x)
    for index, (filters, batch_norm) in enumerate(POINTWISE_BLOCKS, start=1):
        x = keras.layers.Conv2D(filters, 1, name=f"fc{index}")(x)
        x = _prelu(f"fc{index}_prelu")(x)
        if batch_norm:
            x = _batch_norm(f"fc{index}_bn")(x)
    x = keras.layers.Conv2D(2 * num_keypoints, 1, activation="sigmoid", name=KEYPOINT_HEAD)(x)
    return keras.layers.Flatten(name="values")(x)


# ---------------------------------------------------------------------------
# OpenVINO IR importer
# ---------------------------------------------------------------------------

IR_DTYPES = {"f32": "<f4", "f16": "<f2"}
# The op sequence of the official IR, with the constants each op takes.
LAYER_OPS = {
    keras.layers.BatchNormalization: ("Multiply", "Add"),
    keras.layers.Conv2D: ("Convolution", "Add"),
    keras.layers.DepthwiseConv2D: ("GroupConvolution", "Add"),
    keras.layers.PReLU: ("PReLU",),
}
# Ops without constants, skipped when matching.
PARAMETER_FREE_OPS = ("MaxPool", "Sigmoid")


def read_openvino_ir(xml_path, bin_path=None):
    """Reads the operations of a linear OpenVINO IR with their constants.

    Parses the IR's ``.xml`` with :mod:`xml.etree` and its ``.bin`` with NumPy;
    no OpenVINO installation is needed.

    Args:
        xml_path: path to the IR's ``.xml``.
        bin_path: path to its ``.bin``; default: the ``.xml`` path with ``.bin``.

    Returns:
        A list of ``(op_type, op_name, constants)`` from the input to the output,
        ``constants`` being the NumPy arrays of the op's constant inputs in port
        order. The first entry is the ``Parameter`` (its constant: the input
        shape as an array).

    Raises:
        FileNotFoundError: when a file is missing.
        ValueError: when the graph is not a single chain from one input to one
            output.
    """
    xml_path = pathlib.Path(xml_path)
    bin_path = xml_path.with_suffix(".bin") if bin_path is None else pathlib.Path(bin_path)
    for path in (xml_path, bin_path):
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO IR file not found. Received: path={str(path)!r}")
    root = ElementTree.parse(xml_path).getroot()
    blob = np.fromfile(bin_path, dtype=np.uint8)
    layers = {layer.get("id"): layer for layer in root.find("layers")}
    producers = {}  # (consumer id, port) -> producer id
    for edge in root.find("edges"):
        producers[(edge.get("to-layer"), int(edge.get("to-port")))] = edge.get("from-layer")

    def inputs_of(layer_id):
        ports = sorted(port for consumer, port in producers if consumer == layer_id)
        return [producers[(layer_id, port)] for port in ports]

    results = [lid for lid, layer in layers.items() if layer.get("type") == "Result"]
    if len(results) != 1:
        raise ValueError(
            "The importer expects an IR with a single output. "
            f"Received: xml_path={str(xml_path)!r} with {len(results)} outputs"
        )
    chain = []
    current = inputs_of(results[0])[0]
    while True:
        layer = layers[current]
        if layer.get("type") == "Parameter":
            shape = np.array([int(d) for d in layer.find("data").get("shape").split(",")])
            chain.append(("Parameter", layer.get("name"), [shape]))
            break
        data_inputs = [i for i in inputs_of(current) if layers[i].get("type") != "Const"]
        if len(data_inputs) != 1:
            raise ValueError(
                "The importer reads only single-chain IRs (each op fed by one tensor). "
                f"Received: op {layer.get('name')!r} ({layer.get('type')}) with "
                f"{len(data_inputs)} tensor inputs"
            )
        constants = [_read_constant(layers[i], blob) for i in inputs_of(current)
                     if layers[i].get("type") == "Const"]
        chain.append((layer.get("type"), layer.get("name"), constants))
        current = data_inputs[0]
    return chain[::-1]


def _read_constant(layer, blob):
    data = layer.find("data")
    element_type = data.get("element_type")
    if element_type not in IR_DTYPES:
        raise ValueError(
            f"Unsupported constant type in the IR (f32 and f16 are read). "
            f"Received: element_type={element_type!r} in constant {layer.get('name')!r}"
        )
    offset, size = int(data.get("offset")), int(data.get("size"))
    shape = tuple(int(d) for d in data.get("shape").split(",") if d.strip())
    values = blob[offset:offset + size].view(IR_DTYPES[element_type])
    return values.astype("float32").reshape(shape)


def load_openvino_retail_weights(model, xml_path, bin_path=None):
    """Copies the official IR's constants into a :func:`RetailLandmarks5` model.

    The IR folds each batch norm into ``x * m + a`` (per channel), so the Keras
    batch norm gets ``gamma = m``, ``beta = a``, moving mean 0 and moving
    variance ``1 - epsilon`` (dividing by ``sqrt(variance + epsilon) = 1``).
    The IR's first layer also reverses the colour channels: the converter folded
    that reversal into the input batch norm's and the first convolution's
    constants (the ``Gather`` constants), so they apply to the IR's own BGR input
    as stored, and are copied unchanged. Convolution kernels go from OIHW to
    HWIO; the depthwise ``(128, 1, 1, 6, 6)`` kernel becomes ``(6, 6, 128, 1)``.

    Args:
        model: a model built by :func:`RetailLandmarks5` with ``num_keypoints=5``.
        xml_path: the IR's ``.xml``.
        bin_path: the IR's ``.bin`` (default: next to the ``.xml``).

    Returns:
        ``model``, with the weights loaded.

    Raises:
        ValueError: when the IR's operations do not match the model's layers.
    """
    chain = read_openvino_ir(xml_path, bin_path)
    input_shape = tuple(int(d) for d in chain[0][2][0])
    if input_shape[1:] != (3,) + NETWORK_SIZE:
        raise ValueError(
            "The IR is not landmarks-regression-retail-0009: its input must be 1x3x48x48. "
            f"Received: input shape={input_shape}"
        )
    ops_with_constants = [op for op in chain[1:] if op[0] not in PARAMETER_FREE_OPS + ("Result",)]
    weighted_layers = [layer for layer in model.layers if layer.weights]
    position = 0
    for layer in weighted_layers:
        expected = LAYER_OPS.get(type(layer))
        if expected is None:
            raise ValueError(f"The importer cannot fill layer {layer.name!r} of type "
                             f"{type(layer).__name__}. Received: model={model.name!r}")
        found = ops_with_constants[position:position + len(expected)]
        if tuple(op[0] for op in found) != expected:
            raise ValueError(
                f"The IR's operations do not match layer {layer.name!r}: expected {expected}. "
                f"Received: IR ops={tuple(op[0] for op in found)} at "
                f"{[op[1] for op in found]}"
            )
        constants = [op[2][0] for op in found]
        layer.set_weights(_keras_weights(layer, constants))
        position += len(expected)
    if position != len(ops_with_constants):
        raise ValueError(
            "The IR has more weighted operations than the model has layers. "
            f"Received: IR ops left={[op[1] for op in ops_with_constants[position:]]}"
        )
    return model


def _keras_weights(layer, constants):
    """The IR constants of one layer, in the layout of ``layer.get_weights()``."""
    if isinstance(layer, keras.layers.BatchNormalization):
        scale, shift = (c.reshape(-1) for c in constants)
        return [scale, shift, np.zeros_like(scale),
                np.full_like(scale, 1.0 - layer.epsilon)]
    if isinstance(layer, keras.layers.PReLU):
        return [constants[0].reshape(layer.get_weights()[0].shape)]
    kernel, bias = constants
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # (groups, out per group, in per group, kh, kw) -> (kh, kw, groups, multiplier)
        kernel = kernel.transpose(3, 4, 0, 1, 2).reshape(layer.get_weights()[0].shape)
    else:
        kernel = kernel.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    expected = [w.shape for w in layer.get_weights()]
    converted = [kernel, bias.reshape(-1)]
    if [w.shape for w in converted] != expected:
        raise ValueError(
            f"IR constants do not fit layer {layer.name!r} (expected shapes {expected}). "
            f"Received: shapes={[w.shape for w in converted]}"
        )
    return converted


def import_openvino_retail(xml_path, bin_path=None, include_preprocessing=False,
                           input_color=None, name="retail_landmarks5"):
    """Builds :func:`RetailLandmarks5` with the official OpenVINO weights.

    Reads landmarks-regression-retail-0009's IR (``.xml`` + ``.bin``, e.g. from
    Open Model Zoo's ``omz_downloader``) without OpenVINO; the Keras model then
    reproduces OpenVINO's output (to within 1e-4 in normalised coordinates on
    MTFL faces, see ``tests/test_openvino_import.py``). Save it with
    ``model.save("retail.keras")`` or ``model.save_weights(...)``; the converted
    weights are made on the user's machine, under the model's Apache-2.0 terms.

    Args:
        xml_path: the IR's ``.xml``.
        bin_path: the IR's ``.bin`` (default: next to the ``.xml``).
        include_preprocessing, input_color, name: as :func:`RetailLandmarks5`.

    Returns:
        The Keras model with the official weights.
    """
    model = RetailLandmarks5(num_keypoints=5, include_preprocessing=include_preprocessing,
                             input_color=input_color, name=name)
    return load_openvino_retail_weights(model, xml_path, bin_path)
