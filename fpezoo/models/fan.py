"""FAN, the stacked-hourglass Face Alignment Network, in 2D and 3D.

Face-alignment's architecture (Bulat & Tzimiropoulos, "How far are we from solving
the 2D & 3D Face Alignment problem?", ICCV 2017, https://arxiv.org/abs/1703.07332;
code: github.com/1adrianb/face-alignment), channels-last, with PyTorch's padding
(explicit zero padding before strided convolutions) and batch-norm constants:

* **ConvBlock** ``(in -> out)`` (Bulat & Tzimiropoulos, "Binarized Convolutional
  Landmark Localizers", ICCV 2017): pre-activation BN, ReLU, conv 3x3 to
  ``out/2``; BN, ReLU, conv 3x3 to ``out/4``; BN, ReLU, conv 3x3 to ``out/4``;
  the three outputs concatenated (``out`` channels) plus the input, projected by
  BN, ReLU, conv 1x1 when ``in != out``. No biases.
* **HourGlass** of depth 4 on ``width`` channels: at each level an upper branch
  (a block) and a lower branch (average-pool 2, block, the next level or, at the
  bottom, one more block, block, nearest upsampling x2), added: 13 blocks.
* **stem**: conv 7x7 stride 2 to 64 (with bias), BN, ReLU, ConvBlock 64->128,
  average-pool 2, ConvBlock 128->128, ConvBlock 128->``width``: a quarter of the
  input size (64x64 for a 256 input, 32x32 for 128).
* **each stack**: hourglass, ConvBlock, conv 1x1 ``width`` (bias) + BN + ReLU,
  conv 1x1 to K heatmaps (bias). Between stacks, the features (conv 1x1) and the
  heatmaps (conv 1x1 ``K -> width``) are projected and added to the stack's
  input.

The last stack's heatmaps are decoded by :class:`fpezoo.layers.HeatmapArgmax`
(argmax, quarter-pixel shift toward the higher neighbour, confidence = heatmap
maximum) and mapped to input-tensor pixels by
:class:`fpezoo.layers.RescaleKeypoints`.

Parameter count (trainable: convolutions plus batch-norm scales and offsets,
i.e. PyTorch's ``model.parameters()``), with ``w = width``, ``K`` keypoints and
``S`` stacks; ``block(i, o)`` = ``9 (i o/2 + o/2 o/4 + o/4 o/4) + 2 (i + o/2 + o/4)
+ [i != o] (2 i + i o)``:

* stem: ``(7*7*3*64 + 64) + 2*64 + block(64, 128) + block(128, 128) + block(128, w)``
* each stack: ``14 block(w, w) + (w*w + w) + 2w + (w*K + K)``
* between stacks (``S - 1`` times): ``(w*w + w) + (K*w + w)``

For ``w = 256, K = 68``: block(256, 256) = 406,400; stem 476,288; a stack
5,773,380; between stacks 83,456. One stack: **6,249,668**; four stacks
(face-alignment's 2D-FAN-4): **23,820,176** trainable parameters. Batch-norm
moving statistics add ``2 x`` the batch-norm channels as non-trainable values.

**3D** (``dimensions=3``): face-alignment's depth network, a ResNet with
bottleneck blocks (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016; ResNet-152's ``(3, 8, 36, 3)`` blocks by default, ``depth_blocks``
for lighter ones), takes the RGB crop concatenated with one Gaussian heatmap
(sigma 2 input pixels, peak 1) per 2D keypoint and regresses one depth value per
keypoint, in input pixels like x and y (face-alignment's convention). The 2D
keypoints come from the argmax (no gradient flows into the 2D network).

**Training on heatmaps.** The argmax keypoints have no gradient, so fine-tune
FAN through :func:`heatmap_training_model` and
:class:`fpezoo.losses.AdaptiveWingLoss`::

    model = fpezoo.FAN(num_stacks=1, width=64, input_size=128)
    trainer = heatmap_training_model(model)   # outputs: each stack's heatmaps
    trainer.compile(optimizer="adam",
                    loss=[fpezoo.losses.AdaptiveWingLoss(input_size=(128, 128))] * 1)
    trainer.fit(images, [labels] * 1)          # labels: (N, K, 3) input pixels
    keypoints, confidence = model(images)      # same weights, now trained

Every stack's heatmaps are supervised (intermediate supervision, as in the
paper).
"""

import keras
from keras import ops

from fpezoo.layers import HeatmapArgmax, RescaleKeypoints
from fpezoo.losses import gaussian_heatmaps
from fpezoo.models.common import (
    KEYPOINT_HEAD,
    build_landmark_model,
    registered_weights_builder,
    resolve_network_input,
    validate_num_keypoints,
)

INPUT_SIZES = (256, 128)
HOURGLASS_DEPTH = 4
STEM_CHANNELS = 64
# PyTorch BatchNorm2d defaults (face-alignment is a PyTorch model).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9
# face-alignment's ResNetDepth: ResNet-152 layout, sigma-2 heatmaps.
DEPTH_BLOCKS = (3, 8, 36, 3)
DEPTH_WIDTH = 64
DEPTH_SIGMA = 2.0
BOTTLENECK_EXPANSION = 4
# face-alignment pools its 8x8 last depth feature map with AvgPool2d(7).
DEPTH_POOL = 7


@keras.saving.register_keras_serializable(package="fpezoo")
class GaussianHeatmaps(keras.layers.Layer):
    """Renders one Gaussian heatmap (peak 1) per keypoint, the 3D network's input.

    Uses :func:`fpezoo.losses.gaussian_heatmaps` over the whole image at sub-pixel
    positions; face-alignment draws the same Gaussian in a ``6 sigma + 1`` window
    around the rounded point (values outside that window are below 0.012).
    Gradients do not flow into the keypoints.

    Args:
        size: ``(height, width)`` of the heatmaps (the points' pixel grid).
        sigma: standard deviation in pixels.
        **kwargs: standard layer arguments.

    Call arguments:
        keypoints: ``(N, K, 2)`` in the heatmaps' pixels.

    Returns:
        ``(N, height, width, K)`` heatmaps.
    """

    def __init__(self, size, sigma=DEPTH_SIGMA, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = _size_pair(size)
        if not float(sigma) > 0:
            raise ValueError(f"`sigma` must be positive. Received: sigma={sigma!r}")
        self.sigma = float(sigma)

    def call(self, keypoints):
        keypoints = ops.stop_gradient(ops.cast(keypoints, self.compute_dtype))
        return gaussian_heatmaps(keypoints, self.size, self.sigma)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, sigma=self.sigma)
        return config


@keras.saving.register_keras_serializable(package="fpezoo")
class AppendDepth(keras.layers.Layer):
    """Joins 2D keypoints and depths into ``(N, K, 3)``, depth scaled like x.

    The depth network predicts z in the pixels of its ``source_size`` input; when
    the keypoints were mapped to another grid (a resizing preprocessing layer), z
    is scaled by the same width ratio so that x, y and z share one unit.

    Args:
        source_size: ``(height, width)`` of the grid z is in.
        **kwargs: standard layer arguments.

    Call arguments:
        keypoints: ``(N, K, 2)`` in the target grid.
        depth: ``(N, K)`` in ``source_size`` pixels.
        reference: optional ``(N, H, W, C)`` images of the target grid (None:
            the target grid is ``source_size``).
    """

    def __init__(self, source_size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.source_size = _size_pair(source_size)

    def call(self, keypoints, depth, reference=None):
        depth = ops.cast(depth, self.compute_dtype)
        if reference is not None:
            target_width = ops.cast(ops.shape(reference)[2], self.compute_dtype)
            depth = depth * (target_width / self.source_size[1])
        return ops.concatenate([ops.cast(keypoints, self.compute_dtype), depth[..., None]], axis=-1)

    def compute_output_shape(self, keypoints_shape, depth_shape=None, reference_shape=None):
        return (*keypoints_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(source_size=self.source_size)
        return config


def _size_pair(value):
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`size` must be (height, width). Received: size={value!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"`size` must be (height, width). Received: size={value!r}")
    return height, width


@registered_weights_builder
def FAN(num_keypoints=68, weights=None, input_shape=None, input_tensor=None, num_stacks=4,
        width=256, input_size=256, dimensions=2, depth_blocks=DEPTH_BLOCKS,
        depth_width=DEPTH_WIDTH, include_preprocessing=False, input_color=None, name="fan",
        sha256=None):
    """Builds face-alignment's FAN (see the module docstring).

    Reference: Bulat & Tzimiropoulos, "How far are we from solving the 2D & 3D
    Face Alignment problem? (and a dataset of 230,000 3D facial landmarks)",
    ICCV 2017 (https://arxiv.org/abs/1703.07332).

    Args:
        num_keypoints: number of keypoints K (face-alignment: 68, iBUG order).
        weights: None, a registered weights name or a ``.weights.h5`` path. A
            registered name carries its architecture: the arguments not passed
            take its registered values (``weights="fan68_1x128"`` alone builds 1
            stack of width 64 on 128x128), and a passed one that contradicts
            them fails. Weights for another keypoint count load into every layer
            except the heatmap heads (``keypoint_head``; with several stacks or
            in 3D also the other ``keypoint_head_*`` layers).
        input_shape: ``(height, width, channels)``. Without preprocessing:
            ``(input_size, input_size, 3)``, RGB 0-255 (the network divides by
            255 as face-alignment's input). With preprocessing: any size, 1 or 3
            channels, default ``(None, None, 3)``.
        input_tensor: optional Keras tensor to build the model on.
        num_stacks: hourglass stacks, 1 to 4 (face-alignment: 4).
        width: channels of the hourglasses (face-alignment: 256); a positive
            multiple of 4, e.g. 64 or 128 for CPU.
        input_size: network input size, 256 (face-alignment) or 128 (4x fewer
            FLOPs, 32x32 heatmaps).
        dimensions: 2, or 3 to add the depth network and return ``(N, K, 3)``.
        depth_blocks: bottleneck blocks of the depth network's four stages
            (face-alignment: ``(3, 8, 36, 3)``, ResNet-152; ``(3, 4, 6, 3)`` is
            ResNet-50; ``(1, 1, 1, 1)`` a CPU-light one).
        depth_width: channels of the depth network's stem and first stage
            (face-alignment: 64; the stages use 1x, 2x, 4x, 8x, times 4 at the
            bottleneck outputs).
        include_preprocessing: prepend :class:`fpezoo.layers.FacePreprocessing`,
            so the model takes 0-255 crops of any size and returns keypoints in
            that input's pixels.
        input_color: with preprocessing, ``"rgb"`` (default) or ``"bgr"`` for
            3-channel inputs; 1-channel inputs are grayscale.
        name: model name.
        sha256: optional hex SHA-256 digest (64 digits) the weights file must
            have, e.g. for a file loaded by path.

    Returns:
        A :class:`fpezoo.models.common.LandmarkModel` returning ``[keypoints
        (N, K, dimensions), confidence (N, K)]`` in input-tensor pixels.

    Raises:
        ValueError: for a bad argument (the message ends with ``Received: ...``).
    """
    validate_num_keypoints(num_keypoints)
    _check_options(num_stacks, width, input_size, dimensions, depth_blocks, depth_width)
    network_size = (input_size, input_size)
    inputs, images, network_input = resolve_network_input(
        input_shape, input_tensor, include_preprocessing, input_color, network_size, "rgb",
        scale=1 / 255)

    heatmaps = _stacked_hourglasses(network_input, num_keypoints, num_stacks, width)
    keypoints, confidence = HeatmapArgmax(name="heatmap_argmax")(heatmaps)
    heatmap_size = tuple(heatmaps.shape[1:3])
    network_keypoints = RescaleKeypoints(heatmap_size, network_size,
                                         name="heatmap_to_network")(keypoints)
    if include_preprocessing:
        keypoints = RescaleKeypoints(network_size, name="rescale_keypoints")(
            network_keypoints, images)
    else:
        keypoints = network_keypoints
    if dimensions == 3:
        depth = _depth_network(network_input, network_keypoints, num_keypoints, depth_blocks,
                               depth_width)
        keypoints = AppendDepth(network_size, name="keypoints_3d")(
            keypoints, depth, images if include_preprocessing else None)
    return build_landmark_model(inputs, [keypoints, confidence], name=name, weights=weights,
                                sha256=sha256)


def _check_options(num_stacks, width, input_size, dimensions, depth_blocks, depth_width):
    if isinstance(num_stacks, bool) or num_stacks not in (1, 2, 3, 4):
        raise ValueError(f"`num_stacks` must be 1, 2, 3 or 4. Received: num_stacks={num_stacks!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 4 or width % 4:
        raise ValueError(f"`width` must be a positive multiple of 4. Received: width={width!r}")
    if input_size not in INPUT_SIZES:
        raise ValueError(f"`input_size` must be 256 or 128. Received: input_size={input_size!r}")
    if dimensions not in (2, 3):
        raise ValueError(f"`dimensions` must be 2 or 3. Received: dimensions={dimensions!r}")
    if dimensions == 3:
        try:
            valid = len(depth_blocks) == 4 and all(int(b) == b and b >= 1 for b in depth_blocks)
        except TypeError:
            valid = False
        if not valid:
            raise ValueError("`depth_blocks` must be four positive block counts such as "
                             f"(3, 8, 36, 3). Received: depth_blocks={depth_blocks!r}")
        if isinstance(depth_width, bool) or not isinstance(depth_width, int) or depth_width < 1:
            raise ValueError("`depth_width` must be a positive integer. "
                             f"Received: depth_width={depth_width!r}")


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON,
                                           momentum=BATCH_NORM_MOMENTUM, name=name)


def _bn_relu_conv(x, filters, kernel_size, name):
    x = _batch_norm(f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                               name=f"{name}_conv")(x)


def _conv_block(x, filters, name):
    """face-alignment's ConvBlock: hierarchical, parallel and multi-scale."""
    out1 = _bn_relu_conv(x, filters // 2, 3, f"{name}_1")
    out2 = _bn_relu_conv(out1, filters // 4, 3, f"{name}_2")
    out3 = _bn_relu_conv(out2, filters // 4, 3, f"{name}_3")
    out = keras.layers.Concatenate(name=f"{name}_concat")([out1, out2, out3])
    residual = x if x.shape[-1] == filters else _bn_relu_conv(x, filters, 1, f"{name}_down")
    return keras.layers.Add(name=f"{name}_add")([out, residual])


def _hourglass(x, level, width, name):
    upper = _conv_block(x, width, f"{name}_b1_{level}")
    lower = keras.layers.AveragePooling2D(2, name=f"{name}_pool_{level}")(x)
    lower = _conv_block(lower, width, f"{name}_b2_{level}")
    if level > 1:
        lower = _hourglass(lower, level - 1, width, name)
    else:
        lower = _conv_block(lower, width, f"{name}_b2_plus_{level}")
    lower = _conv_block(lower, width, f"{name}_b3_{level}")
    lower = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up_{level}")(lower)
    return keras.layers.Add(name=f"{name}_add_{level}")([upper, lower])


def _conv1x1(x, filters, name):
    return keras.layers.Conv2D(filters, 1, name=name)(x)


def _stacked_hourglasses(images, num_keypoints, num_stacks, width):
    """Stem and stacks: [0, 1] RGB images -> the last stack's (N, h, w, K) heatmaps."""
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(images)
    x = keras.layers.Conv2D(STEM_CHANNELS, 7, strides=2, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = _conv_block(x, 2 * STEM_CHANNELS, "stem_block1")
    x = keras.layers.AveragePooling2D(2, name="stem_pool")(x)
    x = _conv_block(x, 2 * STEM_CHANNELS, "stem_block2")
    previous = _conv_block(x, width, "stem_block3")
    for stack in range(1, num_stacks + 1):
        last = stack == num_stacks
        prefix = f"stack{stack}"
        features = _hourglass(previous, HOURGLASS_DEPTH, width, f"{prefix}_hourglass")
        features = _conv_block(features, width, f"{prefix}_block")
        features = _conv1x1(features, width, f"{prefix}_conv")
        features = _batch_norm(f"{prefix}_bn")(features)
        features = keras.layers.ReLU(name=f"{prefix}_relu")(features)
        head_name = KEYPOINT_HEAD if last else f"{KEYPOINT_HEAD}_{prefix}"
        heatmaps = _conv1x1(features, num_keypoints, head_name)
        if not last:
            projected_features = _conv1x1(features, width, f"{prefix}_feature_projection")
            projected_heatmaps = _conv1x1(heatmaps, width, f"{KEYPOINT_HEAD}_{prefix}_projection")
            previous = keras.layers.Add(name=f"{prefix}_merge")(
                [previous, projected_features, projected_heatmaps])
    return heatmaps


def heatmap_layer_names(model):
    """Names of the layers giving each stack's heatmaps, first stack first."""
    names = [layer.name for layer in model.layers
             if layer.name.startswith(f"{KEYPOINT_HEAD}_stack") and
             not layer.name.endswith("_projection")]
    return names + [KEYPOINT_HEAD]


def heatmap_training_model(model, keypoints=False):
    """A model sharing ``model``'s layers whose outputs are every stack's heatmaps.

    Training it (e.g. with :class:`fpezoo.losses.AdaptiveWingLoss`, one loss per
    stack) trains the FAN itself, whose argmax keypoints have no gradient. See
    the module docstring for an example.

    Args:
        model: a model built by :func:`FAN`.
        keypoints: also return ``model``'s decoded keypoints as a last output,
            named ``"keypoints"``, e.g. for an NME metric (compile it with no
            loss: ``None`` in the loss list).

    Returns:
        A ``keras.Model`` with ``model``'s input whose outputs are the
        ``num_stacks`` heatmap tensors ``(N, input_size / 4, input_size / 4, K)``
        (Keras returns a single tensor, not a list, for one stack without
        ``keypoints``), then the keypoints when asked.

    Raises:
        ValueError: when ``model`` has no FAN heatmap head.
    """
    try:
        outputs = [model.get_layer(name).output for name in heatmap_layer_names(model)]
    except ValueError:
        raise ValueError(
            f"heatmap_training_model needs a model built by fpezoo.FAN (with a "
            f"'{KEYPOINT_HEAD}' layer). Received: model={model.name!r}"
        ) from None
    if keypoints:
        outputs.append(keras.layers.Identity(name="keypoints")(model.outputs[0]))
    return keras.Model(model.input, outputs, name=f"{model.name}_heatmaps")


def _bottleneck(x, filters, strides, name):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as torchvision and face-alignment."""
    out_channels = filters * BOTTLENECK_EXPANSION
    residual = x
    if strides != 1 or x.shape[-1] != out_channels:
        residual = keras.layers.Conv2D(out_channels, 1, strides=strides, use_bias=False,
                                       name=f"{name}_down_conv")(x)
        residual = _batch_norm(f"{name}_down_bn")(residual)
    out = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv1")(x)
    out = _batch_norm(f"{name}_bn1")(out)
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    if strides != 1:
        out = keras.layers.ZeroPadding2D(1, name=f"{name}_pad2")(out)
    out = keras.layers.Conv2D(filters, 3, strides=strides, use_bias=False,
                              padding="same" if strides == 1 else "valid", name=f"{name}_conv2")(out)
    out = _batch_norm(f"{name}_bn2")(out)
    out = keras.layers.ReLU(name=f"{name}_relu2")(out)
    out = keras.layers.Conv2D(out_channels, 1, use_bias=False, name=f"{name}_conv3")(out)
    out = _batch_norm(f"{name}_bn3")(out)
    out = keras.layers.Add(name=f"{name}_add")([out, residual])
    return keras.layers.ReLU(name=f"{name}_relu3")(out)


def _depth_network(images, keypoints, num_keypoints, depth_blocks, depth_width):
    """face-alignment's ResNetDepth: image + keypoint heatmaps -> (N, K) depths."""
    size = tuple(images.shape[1:3])
    heatmaps = GaussianHeatmaps(size, DEPTH_SIGMA, name="depth_heatmaps")(keypoints)
    x = keras.layers.Concatenate(name="depth_input")([images, heatmaps])
    x = keras.layers.ZeroPadding2D(3, name="depth_stem_pad")(x)
    # Its input channels (3 + K) depend on the keypoint count, hence the head prefix.
    x = keras.layers.Conv2D(depth_width, 7, strides=2, use_bias=False,
                            name=f"{KEYPOINT_HEAD}_depth_stem")(x)
    x = _batch_norm("depth_stem_bn")(x)
    x = keras.layers.ReLU(name="depth_stem_relu")(x)
    # Zero padding equals PyTorch's -inf padding here: the input is non-negative.
    x = keras.layers.ZeroPadding2D(1, name="depth_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="depth_pool")(x)
    for stage, blocks in enumerate(depth_blocks):
        for block in range(int(blocks)):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, depth_width * 2**stage, strides, f"depth{stage + 1}_{block + 1}")
    if x.shape[1] >= DEPTH_POOL:
        # face-alignment's AvgPool2d(7): the top-left 7x7 window of the 8x8 map.
        x = keras.layers.AveragePooling2D(DEPTH_POOL, name="depth_avg_pool")(x)
        x = keras.layers.Flatten(name="depth_flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="depth_avg_pool")(x)
    return keras.layers.Dense(num_keypoints, name=f"{KEYPOINT_HEAD}_depth")(x)


def _is_depth_layer(name):
    return name.startswith("depth") or name.startswith(f"{KEYPOINT_HEAD}_depth")


def depth_network_layers(model):
    """The layers of a 3D FAN's depth network (``depth*`` and ``keypoint_head_depth*``).

    Raises:
        ValueError: ``model`` has no depth network (a 2D model).
    """
    layers = [layer for layer in model.layers if _is_depth_layer(layer.name)]
    if not any(layer.weights for layer in layers):
        raise ValueError(
            "The model has no depth network: build it with fpezoo.FAN(dimensions=3). "
            f"Received: model={model.name!r}"
        )
    return layers


def freeze_all_but_depth(model):
    """Freezes every layer of a 3D FAN except its depth network; returns the frozen count.

    The frozen batch norms run in inference mode, so training the depth network
    leaves the 2D network (and its 2D accuracy) exactly as it was, as
    face-alignment trained its depth network on top of a fixed 2D FAN.
    """
    depth = {id(layer) for layer in depth_network_layers(model)}
    frozen = 0
    for layer in model.layers:
        if id(layer) not in depth and layer.weights:
            layer.trainable = False
            frozen += 1
    return frozen


def copy_2d_weights(source, model):
    """Copies a 2D FAN's weights into the 3D FAN of the same architecture.

    Every layer of ``source`` with weights is set in ``model`` under the same
    name; the depth network keeps its (fresh) weights.

    Args:
        source: a FAN with ``dimensions=2``.
        model: a FAN with ``dimensions=3``, the same keypoint count, stacks,
            width and input size.

    Raises:
        ValueError: ``model`` lacks a layer of ``source`` or its shapes differ.
    """
    depth_network_layers(model)  # a 3D model
    for layer in source.layers:
        if not layer.weights:
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            raise ValueError(
                f"The 3D model lacks the 2D model's layer {layer.name!r}: build it with the same "
                f"num_keypoints, num_stacks, width and input_size. Received: model={model.name!r}"
            ) from None
        expected = [tuple(w.shape) for w in target.weights]
        found = [tuple(w.shape) for w in layer.weights]
        if expected != found:
            raise ValueError(
                f"Layer {layer.name!r} has shapes {found} in the 2D model and {expected} in the "
                f"3D one: build it with the same architecture. Received: model={model.name!r}"
            )
        target.set_weights(layer.get_weights())
