"""FPENet, TAO's facial landmark estimator, in Keras 3.

A Recombinator Network (Honari et al., CVPR 2016; the FPENet variant of Honari
et al., CVPR 2018, appendix) with a soft-argmax head, built as TAO's
``FpeNetModel`` builds it (channels-last here):

* encoder: four blocks of [conv 3x3, ReLU], each output kept as a skip, then
  max-pool 2 (80 -> 40 -> 20 -> 10 -> 5);
* trunk at 5x5: conv 3x3, conv 3x3, conv 1x1;
* decoder: four blocks of [upsample x2 (``Conv2DTranspose`` 2x2 stride 2 without
  bias, or ``UpSampling2D``), concatenate with the matching skip, conv 3x3
  (5x5 in ``base_5x5``), conv 1x1];
* optional extra conv 1x1, then the linear conv 1x1 ``keypoint_head`` giving one
  heatmap per keypoint, decoded by :class:`fpezoo.layers.SoftArgmax`.

All convolutions are 'same', with bias and ReLU, without batch norm. TAO's
variants:

============  ===================  ==============  ============  =====================
variant       upsampling           extra conv 1x1  decoder conv  trainable params (80)
============  ===================  ==============  ============  =====================
base          Conv2DTranspose      yes             3x3           576,144
release       UpSampling2D         yes             3x3           510,608
public        Conv2DTranspose      no              3x3           571,984
base_5x5      Conv2DTranspose      no              5x5           1,096,272
============  ===================  ==============  ============  =====================
"""

import keras
import numpy as np

from fpezoo.layers import RescaleKeypoints, SoftArgmax
from fpezoo.models.common import (
    KEYPOINT_HEAD,
    build_landmark_model,
    registered_weights_builder,
    resolve_network_input,
    validate_num_keypoints,
)

# variant -> (upsampling layer, extra 1x1 conv, decoder kernel size), as TAO's
# FpeNetBaseModel types FpeNet_base, FpeNet_release, FpeNet_public,
# FpeNet_base_5x5_conv.
VARIANTS = {
    "base": ("transpose", True, 3),
    "release": ("upsampling", True, 3),
    "public": ("transpose", False, 3),
    "base_5x5": ("transpose", False, 5),
}
NETWORK_SIZE = (80, 80)
NUM_BLOCKS = 4


@registered_weights_builder
def FPENet(num_keypoints=68, weights=None, input_shape=None, input_tensor=None, variant="base",
           width=64, heatmap_size=None, beta=0.01, include_preprocessing=False, input_color=None,
           name="fpenet", sha256=None):
    """Builds TAO's FPENet facial landmark estimator.

    Reference: Honari, Molchanov, Tyree, Vincent, Pal, Kautz, "Improving Landmark
    Localization with Semi-Supervised Learning", CVPR 2018
    (https://arxiv.org/abs/1709.01591); NVIDIA TAO Toolkit's FPENet.

    Args:
        num_keypoints: number of keypoints K (68, 80 and 104 are TAO's schemes;
            any positive count works).
        weights: None (random initialisation), a name from the weights registry
            (sha256-checked; :func:`fpezoo.list_pretrained`) or a path to a
            ``.weights.h5`` file. A registered name carries its architecture: the
            arguments not passed take its registered values (``weights=
            "fpenet68_w32"`` alone builds width 32 with 40x40 heatmaps), and a
            passed one that contradicts them fails. Weights trained for another
            keypoint count load into every layer but ``keypoint_head``, with a
            warning naming the layers that start fresh.
        input_shape: ``(height, width, channels)``. Without preprocessing:
            grayscale, height and width multiples of 16, default ``(80, 80, 1)``.
            With preprocessing: any size, 1 or 3 channels, default
            ``(None, None, 3)``.
        input_tensor: optional Keras tensor to build the model on.
        variant: ``"base"``, ``"release"``, ``"public"`` or ``"base_5x5"`` (see
            the module docstring).
        width: filters of every convolution (TAO: 64); 32 or 16 give lighter CPU
            models.
        heatmap_size: height of the heatmaps: the network's input height
            (default, 80 for TAO's input) or half of it (40), which skips the
            last decoder block (about two thirds of the computation) while
            soft-argmax stays sub-pixel.
        beta: soft-argmax inverse temperature (TAO's default 0.01).
        include_preprocessing: prepend :class:`fpezoo.layers.FacePreprocessing`,
            so the model takes raw 0-255 images of any size (resized to 80x80 and
            converted to grayscale) and returns keypoints in that input's pixels.
        input_color: with preprocessing, ``"rgb"`` or ``"bgr"`` for 3-channel
            inputs (default ``"rgb"``); 1-channel inputs are grayscale.
        name: model name.
        sha256: optional hex SHA-256 digest (64 digits) the weights file must
            have, e.g. for a file loaded by path.

    Returns:
        A :class:`fpezoo.models.common.LandmarkModel` taking raw 0-255 grayscale
        face crops (N, H, W, 1) and returning ``[keypoints (N, K, 2), confidence
        (N, K)]``, keypoints in input-tensor pixels (pixel-centre convention).

    Raises:
        ValueError: for a bad argument (the message ends with ``Received: ...``),
            an argument contradicting registered weights, or a weights file that
            is damaged, of another model or not of the given ``sha256``.

    Example::

        model = FPENet(num_keypoints=80)                 # TAO base: 576,144 parameters
        pretrained = FPENet(weights="fpenet68_w32")      # width 32, 40x40 heatmaps, as registered
        keypoints, confidence = model(crops)             # crops: (N, 80, 80, 1), 0-255
        light = FPENet(width=16, heatmap_size=40, include_preprocessing=True)
        keypoints, _ = light(rgb_faces)                  # any size; keypoints in its pixels
    """
    validate_num_keypoints(num_keypoints)
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {tuple(VARIANTS)}. Received: variant={variant!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"`width` must be a positive integer. Received: width={width!r}")

    inputs, images, network_input = resolve_network_input(
        input_shape, input_tensor, include_preprocessing, input_color, NETWORK_SIZE, "grayscale",
        fixed_size=False, size_multiple=2**NUM_BLOCKS)

    network_size = tuple(network_input.shape[1:3])
    decoder_blocks = _decoder_blocks(network_size[0], heatmap_size)
    heatmaps = _recombinator_heatmaps(network_input, num_keypoints, variant, width, decoder_blocks)
    keypoints, confidence = SoftArgmax(beta=beta, name="soft_argmax")(heatmaps)
    heatmap_grid = tuple(heatmaps.shape[1:3])
    if include_preprocessing:
        keypoints = RescaleKeypoints(heatmap_grid, name="rescale_keypoints")(keypoints, images)
    elif heatmap_grid != network_size:
        keypoints = RescaleKeypoints(heatmap_grid, network_size, name="rescale_keypoints")(keypoints)
    return build_landmark_model(inputs, [keypoints, confidence], name=name, weights=weights,
                                sha256=sha256)


def _decoder_blocks(network_height, heatmap_size):
    """Number of decoder blocks that give heatmaps of ``heatmap_size``."""
    if heatmap_size is None or heatmap_size == network_height:
        return NUM_BLOCKS
    if heatmap_size * 2 == network_height:
        return NUM_BLOCKS - 1
    raise ValueError(
        f"`heatmap_size` must be the network's input height ({network_height}) or half of it "
        f"({network_height // 2}). Received: heatmap_size={heatmap_size!r}"
    )


def _conv(x, filters, kernel_size, name, activation="relu"):
    return keras.layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                               name=name)(x)


def _recombinator_heatmaps(images, num_keypoints, variant, width, decoder_blocks):
    """The Recombinator Network trunk and head: images -> (N, h, w, K) heatmaps."""
    upsampling, extra_conv, decoder_kernel = VARIANTS[variant]
    x = images
    skips = []
    for block in range(1, NUM_BLOCKS + 1):
        x = _conv(x, width, 3, f"encoder{block}_conv")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"encoder{block}_pool")(x)
    x = _conv(x, width, 3, "trunk_conv1")
    x = _conv(x, width, 3, "trunk_conv2")
    x = _conv(x, width, 1, "trunk_conv3")
    for block, skip in zip(range(1, decoder_blocks + 1), reversed(skips)):
        if upsampling == "transpose":
            x = keras.layers.Conv2DTranspose(width, 2, strides=2, use_bias=False,
                                             name=f"decoder{block}_upsample")(x)
        else:
            x = keras.layers.UpSampling2D(2, name=f"decoder{block}_upsample")(x)
        x = keras.layers.Concatenate(name=f"decoder{block}_concat")([x, skip])
        x = _conv(x, width, decoder_kernel, f"decoder{block}_conv1")
        x = _conv(x, width, 1, f"decoder{block}_conv2")
    if extra_conv:
        x = _conv(x, width, 1, "extra_conv")
    return _conv(x, num_keypoints, 1, KEYPOINT_HEAD, activation=None)


def copy_to_full_resolution_heatmaps(half, full):
    """Sets the weights of ``full`` so that it computes the keypoints of ``half``.

    ``half`` is a trained FPENet with half-size heatmaps (``heatmap_size=40``),
    ``full`` the same FPENet with heatmaps of its input size (TAO's layout): one
    decoder block more. Every layer of ``half`` is copied; the extra block starts
    as a nearest-neighbour upsampler of the block before it (Net2DeeperNet,
    Chen, Goodfellow and Shlens, "Net2Net: Accelerating Learning via Knowledge
    Transfer", ICLR 2016): its transposed convolution copies each channel to a
    2x2 block and its convolutions pass those channels through (their ReLUs see
    the non-negative output of a ReLU) with zero weight on the full-resolution
    skip channels, which training then learns to use. Soft-argmax of a heatmap
    upsampled so is the same point, so ``full`` starts with ``half``'s keypoints
    (to float rounding).

    Args:
        half: the trained FPENet with half-size heatmaps.
        full: an FPENet of the same arguments but ``heatmap_size``.

    Raises:
        ValueError: ``half`` has a layer that ``full`` lacks or shapes differently,
            or ``full``'s extra layers are not its last decoder block.
    """
    full_layers = {layer.name: layer for layer in full.layers}
    for layer in half.layers:
        if not layer.weights:
            continue
        match = full_layers.get(layer.name)
        if match is None or [w.shape for w in layer.weights] != [w.shape for w in match.weights]:
            raise ValueError(
                f"The two FPENets differ in more than the heatmap size: layer {layer.name!r} of the "
                f"half-resolution model has no match of the same shape. Received: layer={layer.name!r}")
        match.set_weights(layer.get_weights())
    half_names = {layer.name for layer in half.layers}
    extra_block = f"decoder{NUM_BLOCKS}_"
    extra = [layer for layer in full.layers if layer.name not in half_names]
    if not extra or any(not layer.name.startswith(extra_block) for layer in extra):
        raise ValueError(
            f"The full-resolution FPENet must add exactly decoder block {NUM_BLOCKS} to the "
            f"half-resolution one. Received: extra layers={[layer.name for layer in extra]}")
    for layer in extra:
        if not layer.weights:
            continue
        kernel = np.zeros(layer.weights[0].shape, dtype=layer.weights[0].dtype)
        channels = np.arange(layer.filters)
        if isinstance(layer, keras.layers.Conv2DTranspose):  # kernel (2, 2, out, in)
            kernel[:, :, channels, channels] = 1.0
        else:  # kernel (k, k, in, out); the upsampled channels come first in the concatenation
            centre = kernel.shape[0] // 2
            kernel[centre, centre, channels, channels] = 1.0
        layer.set_weights([kernel] + [np.zeros(w.shape, dtype=w.dtype) for w in layer.weights[1:]])
