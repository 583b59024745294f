"""Tests for FAN (face-alignment's stacked hourglasses, 2D and 3D)."""

import keras
import numpy as np
import pytest

from fpezoo.coordinates import rescale_points
from fpezoo.data.readers import read_aflw_crops
from fpezoo.layers import HeatmapArgmax
from fpezoo.losses import AdaptiveWingLoss
from fpezoo.models import fan as fan_module
from fpezoo.models.common import KEYPOINT_HEAD
from fpezoo.models.fan import (
    FAN,
    AppendDepth,
    GaussianHeatmaps,
    heatmap_training_model,
)
from fpezoo.schemes import convert_keypoints

# CPU-light configuration used by most tests: one stack, width 16, 128 input.
TINY = {"num_stacks": 1, "width": 16, "input_size": 128}
TINY_DEPTH = {"depth_blocks": (1, 1, 1, 1), "depth_width": 8}


def _faces(count, size=128, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _block(i, o):
    """ConvBlock parameters: three 3x3 convs, three BNs (scale, offset), projection."""
    half, quarter = o // 2, o // 4
    convs = 9 * (i * half + half * quarter + quarter * quarter)
    norms = 2 * (i + half + quarter)
    projection = (2 * i + i * o) if i != o else 0
    return convs + norms + projection


def _expected_fan_params(num_stacks, width, keypoints):
    stem = (7 * 7 * 3 * 64 + 64) + 2 * 64 + _block(64, 128) + _block(128, 128) + _block(128, width)
    stack = 14 * _block(width, width) + (width * width + width) + 2 * width + (width * keypoints + keypoints)
    between = (width * width + width) + (keypoints * width + width)
    return stem + num_stacks * stack + (num_stacks - 1) * between


def test_parameter_arithmetic_of_the_docstring():
    assert _block(256, 256) == 406_400
    assert _expected_fan_params(1, 256, 68) == 6_249_668
    assert _expected_fan_params(4, 256, 68) == 23_820_176


@pytest.mark.parametrize("num_stacks", [1, 4])
def test_full_fan_parameter_count(num_stacks):
    model = FAN(num_stacks=num_stacks)
    assert _trainable(model) == _expected_fan_params(num_stacks, 256, 68)


def test_light_fan_parameter_count_and_heatmap_size():
    model = FAN(num_keypoints=21, num_stacks=2, width=32, input_size=128)
    assert _trainable(model) == _expected_fan_params(2, 32, 21)
    heatmaps = heatmap_training_model(model).outputs
    assert [tuple(h.shape) for h in heatmaps] == [(None, 32, 32, 21)] * 2
    # 14 ConvBlocks per stack (13 in the hourglass) and 3 in the stem.
    assert sum(layer.name.endswith("_concat") for layer in model.layers) == 3 + 2 * 14


def _conv_same(x, kernel):
    """Stride-1 'same' convolution of (H, W, I) by an odd (k, k, I, O) kernel, in NumPy."""
    k = kernel.shape[0]
    padded = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    height, width = x.shape[:2]
    return sum(np.einsum("hwi,io->hwo", padded[dy:dy + height, dx:dx + width], kernel[dy, dx])
               for dy in range(k) for dx in range(k))


def test_conv_block_is_face_alignments_pre_activation_block():
    rng = np.random.default_rng(4)
    inputs = keras.Input((5, 6, 8))
    block = keras.Model(inputs, fan_module._conv_block(inputs, 16, "block"))
    for layer in block.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(size=channels),
                               rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)])
    x = rng.normal(size=(5, 6, 8)).astype("float32")

    def bn_relu_conv(values, prefix):
        gamma, beta, mean, variance = block.get_layer(f"{prefix}_bn").get_weights()
        normalised = (values - mean) / np.sqrt(variance + 1e-5) * gamma + beta
        return _conv_same(np.maximum(normalised, 0), block.get_layer(f"{prefix}_conv").get_weights()[0])

    out1 = bn_relu_conv(x, "block_1")  # 8 -> 8 (out / 2)
    out2 = bn_relu_conv(out1, "block_2")  # 8 -> 4 (out / 4)
    out3 = bn_relu_conv(out2, "block_3")  # 4 -> 4
    expected = np.concatenate([out1, out2, out3], axis=-1) + bn_relu_conv(x, "block_down")
    assert [out1.shape[-1], out2.shape[-1], out3.shape[-1]] == [8, 4, 4]
    assert not any(getattr(layer, "use_bias", False) for layer in block.layers)
    np.testing.assert_allclose(block(x[None])[0], expected, atol=1e-4)


def test_keypoints_are_the_decoded_last_stack_heatmaps():
    model = FAN(**TINY)
    faces = _faces(2)
    keypoints, confidence = model(faces)
    heatmaps = heatmap_training_model(model)(faces)  # one stack: a single tensor
    expected_points, expected_confidence = HeatmapArgmax()(heatmaps)
    expected = rescale_points(keras.ops.convert_to_numpy(expected_points), (32, 32), (128, 128))
    np.testing.assert_allclose(keypoints, expected, atol=1e-4)
    np.testing.assert_allclose(confidence, expected_confidence, atol=1e-6)
    assert keypoints.shape == (2, 68, 2) and confidence.shape == (2, 68)


def test_preprocessing_accepts_any_size_and_returns_input_pixels():
    model = FAN(include_preprocessing=True, input_shape=(200, 160, 3), **TINY)
    keypoints, _ = model(_faces(1, size=200)[:, :, :160])
    keypoints = keras.ops.convert_to_numpy(keypoints)
    assert keypoints.shape == (1, 68, 2)
    assert keypoints[..., 0].max() < 160 and keypoints[..., 1].max() < 200
    assert keypoints.min() > -1


def test_three_dimensional_fan_keeps_the_2d_points():
    flat = FAN(**TINY)
    solid = FAN(dimensions=3, **TINY, **TINY_DEPTH)
    for layer in flat.layers:
        if layer.weights:
            solid.get_layer(layer.name).set_weights(layer.get_weights())
    faces = _faces(2, seed=3)
    points_2d, confidence_2d = flat(faces)
    points_3d, confidence_3d = solid(faces)
    assert points_3d.shape == (2, 68, 3)
    np.testing.assert_allclose(points_3d[..., :2], points_2d, atol=1e-5)
    np.testing.assert_allclose(confidence_3d, confidence_2d, atol=1e-6)
    assert np.isfinite(keras.ops.convert_to_numpy(points_3d)).all()


def test_depth_network_sees_the_keypoint_heatmaps():
    model = FAN(dimensions=3, **TINY, **TINY_DEPTH)
    depth_input = keras.Model(model.input, model.get_layer("depth_input").output)(_faces(1))
    depth_input = keras.ops.convert_to_numpy(depth_input)
    assert depth_input.shape == (1, 128, 128, 3 + 68)
    assert depth_input[..., :3].max() <= 1.0  # the [0, 1] RGB crop
    assert depth_input[..., 3:].max(axis=(1, 2)) == pytest.approx(np.ones((1, 68)), abs=0.2)


def test_gaussian_heatmaps_peak_at_the_points():
    layer = GaussianHeatmaps((9, 12), sigma=2.0)
    heatmaps = keras.ops.convert_to_numpy(layer(np.array([[[3.0, 5.0], [10.0, 1.0]]], "float32")))
    assert heatmaps.shape == (1, 9, 12, 2)
    assert heatmaps[0, 5, 3, 0] == pytest.approx(1.0)
    assert heatmaps[0, 1, 10, 1] == pytest.approx(1.0)
    assert heatmaps[0, 5, 5, 0] == pytest.approx(np.exp(-4 / 8))
    assert GaussianHeatmaps.from_config(layer.get_config()).sigma == 2.0


def test_append_depth_scales_z_like_x():
    keypoints = np.zeros((1, 2, 2), "float32")
    depth = np.array([[1.0, -2.0]], "float32")
    reference = np.zeros((1, 512, 256, 3), "float32")
    joined = AppendDepth((128, 128))(keypoints, depth, reference)
    np.testing.assert_allclose(joined[..., 2], [[2.0, -4.0]])
    np.testing.assert_allclose(AppendDepth((128, 128))(keypoints, depth)[..., 2], depth)


def test_keras_round_trip_without_custom_objects(tmp_path):
    model = FAN(dimensions=3, include_preprocessing=True, **TINY, **TINY_DEPTH)
    faces = _faces(1, size=100)
    path = tmp_path / "fan3d.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    for expected, actual in zip(model(faces), restored(faces)):
        np.testing.assert_allclose(expected, actual, atol=1e-5)


@pytest.mark.parametrize(
    "config, fresh",
    [(TINY, [KEYPOINT_HEAD]),
     ({**TINY, "num_stacks": 2},
      [f"{KEYPOINT_HEAD}_stack1", f"{KEYPOINT_HEAD}_stack1_projection", KEYPOINT_HEAD]),
     ({**TINY, **TINY_DEPTH, "dimensions": 3},
      [KEYPOINT_HEAD, f"{KEYPOINT_HEAD}_depth_stem", f"{KEYPOINT_HEAD}_depth"])],
    ids=["one_stack", "two_stacks", "3d"],
)
def test_other_keypoint_count_keeps_the_trunk(tmp_path, config, fresh):
    original = FAN(**config)
    path = tmp_path / "fan68.weights.h5"
    original.save_weights(path)
    with pytest.warns(UserWarning, match=KEYPOINT_HEAD) as warned:
        smaller = FAN(num_keypoints=21, weights=path, **config)
    assert all(name in str(warned[0].message) for name in fresh)
    for layer in smaller.layers:
        if layer.weights and layer.name not in fresh:
            for expected, actual in zip(original.get_layer(layer.name).get_weights(),
                                        layer.get_weights()):
                np.testing.assert_array_equal(expected, actual)
    assert smaller(_faces(1))[0].shape == (1, 21, config.get("dimensions", 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_keypoints": -1}, "num_keypoints=-1"),
     ({"num_stacks": 5}, "num_stacks=5"),
     ({"width": 30}, "width=30"),
     ({"input_size": 200}, "input_size=200"),
     ({"dimensions": 4}, "dimensions=4"),
     ({"dimensions": 3, "depth_blocks": (1, 2)}, r"depth_blocks=\(1, 2\)"),
     ({"dimensions": 3, "depth_width": 0}, "depth_width=0"),
     ({"input_shape": (256, 256, 3)}, r"input_shape=\(256, 256, 3\)"),
     ({"input_color": "rgb"}, "input_color='rgb'")],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=message):
        FAN(**arguments)


def test_heatmap_training_updates_the_fan_through_every_stack():
    model = FAN(num_stacks=2, width=8, input_size=128)
    trainer = heatmap_training_model(model)
    assert [tensor.shape[1:] for tensor in trainer.outputs] == [(32, 32, 68)] * 2
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True,
                    loss=[AdaptiveWingLoss(input_size=(128, 128))] * 2)
    labels = np.concatenate([np.random.default_rng(1).uniform(20, 100, (2, 68, 2)),
                             np.ones((2, 68, 1))], axis=-1).astype("float32")
    heads = [KEYPOINT_HEAD + "_stack1", KEYPOINT_HEAD, "stem_conv"]
    before = [model.get_layer(name).get_weights()[0].copy() for name in heads]
    trainer.train_on_batch(_faces(2), [labels, labels])
    for name, old in zip(heads, before):
        assert not np.allclose(model.get_layer(name).get_weights()[0], old), name


def test_heatmap_training_model_needs_a_fan():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="mlp")
    with pytest.raises(ValueError, match="Received: model='mlp'"):
        heatmap_training_model(other)


def _aflw_faces(folder, count):
    """The first ``count`` AFLW crops (120x120 RGB) with their 21 points as iBUG-68 labels."""
    records = read_aflw_crops(folder)[:count]
    images = np.array([record.load_image("rgb") for record in records], "float32")
    points, visible = convert_keypoints(np.stack([r.keypoints for r in records]),
                                        np.stack([r.visibility for r in records]),
                                        "aflw21", "ibug68")
    labels = np.concatenate([np.nan_to_num(points), visible[..., None]], axis=-1)
    return images, labels.astype("float32")


@pytest.mark.slow
def test_heatmap_fine_tuning_on_aflw_lowers_the_loss(shared_data):
    images, labels = _aflw_faces(shared_data / "aflw-crops", 32)
    assert images.shape == (32, 120, 120, 3) and labels[..., 2].sum(axis=1).min() > 0
    keras.utils.set_random_seed(0)
    model = FAN(num_stacks=1, width=16, input_size=128, include_preprocessing=True,
                input_shape=(120, 120, 3))
    trainer = heatmap_training_model(model)
    trainer.compile(optimizer=keras.optimizers.Adam(2e-3),
                    loss=[AdaptiveWingLoss(input_size=(120, 120))], run_eagerly=True)
    before = trainer.evaluate(images, [labels], verbose=0)
    trainer.fit(images, [labels], batch_size=8, epochs=2, verbose=0)
    after = trainer.evaluate(images, [labels], verbose=0)
    assert after < 0.5 * before, (before, after)
