"""Tests for the FPENet builder (fpezoo.models.fpenet)."""

import keras
import numpy as np
import pytest

from fpezoo.coordinates import rescale_points
from fpezoo.layers import FacePreprocessing
from fpezoo.models.common import LandmarkModel
from fpezoo.models.fpenet import FPENet

FACES = np.random.default_rng(0).uniform(0, 255, (2, 80, 80, 1)).astype("float32")


def _trainable(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


@pytest.mark.parametrize(
    "variant, num_keypoints, expected",
    [("base", 80, 576_144), ("release", 80, 510_608), ("public", 80, 571_984),
     ("base_5x5", 80, 1_096_272), ("base", 68, 575_364)],
)
def test_trainable_parameters_equal_tao(variant, num_keypoints, expected):
    # TAO's FpeNetBaseModel test counts all parameters, trainable plus its
    # soft-argmax index grids (2 x 80 x 80 = 12,800): 588,944 (base),
    # 523,408 (UpSampling2D), 1,109,072 (5x5), 588,164 (68 points).
    model = FPENet(num_keypoints=num_keypoints, variant=variant)
    assert _trainable(model) == expected
    assert isinstance(model, LandmarkModel)


def test_layer_names_are_stable_and_head_is_last_conv():
    model = FPENet(width=8)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["images", "encoder1_conv", "encoder1_pool"]
    for name in ["trunk_conv1", "trunk_conv2", "trunk_conv3", "decoder4_upsample",
                 "decoder4_concat", "decoder4_conv1", "decoder4_conv2", "extra_conv"]:
        assert name in names
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions[-1].name == "keypoint_head"
    assert convolutions[-1].activation is keras.activations.linear
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 17  # as TAO's test
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_outputs_shapes_and_ranges():
    model = FPENet(num_keypoints=80, width=8)
    keypoints, confidence = model(FACES)
    assert keypoints.shape == (2, 80, 2) and confidence.shape == (2, 80)
    assert np.all((np.asarray(keypoints) >= 0) & (np.asarray(keypoints) <= 79))
    assert np.all((np.asarray(confidence) > 0) & (np.asarray(confidence) <= 1))


def _zero_head(model):
    head = model.get_layer("keypoint_head")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    return model


@pytest.mark.parametrize("heatmap_size", [80, 40])
def test_flat_heatmaps_give_the_image_centre(heatmap_size):
    # A constant heatmap puts the keypoint at the mean pixel position: the image
    # centre in pixel-centre coordinates, (79 / 2, 79 / 2), whatever the heatmap size.
    model = _zero_head(FPENet(num_keypoints=3, width=4, heatmap_size=heatmap_size))
    assert model.get_layer("keypoint_head").output.shape[1] == heatmap_size
    keypoints, confidence = model(FACES)
    np.testing.assert_allclose(keypoints, 39.5, atol=1e-4)
    np.testing.assert_allclose(confidence, 1 / heatmap_size**2, rtol=1e-4)
    rgb = np.zeros((1, 120, 160, 3), np.uint8)
    model = _zero_head(FPENet(num_keypoints=3, width=4, heatmap_size=heatmap_size,
                              include_preprocessing=True))
    np.testing.assert_allclose(model(rgb)[0][0], [[79.5, 59.5]] * 3, atol=1e-4)


def test_preprocessing_model_returns_keypoints_in_input_pixels():
    plain = FPENet(num_keypoints=5, width=4)
    wrapped = FPENet(num_keypoints=5, width=4, include_preprocessing=True, input_color="bgr")
    for layer in plain.layers:
        if layer.weights:
            wrapped.get_layer(layer.name).set_weights(layer.get_weights())
    images = np.random.default_rng(1).integers(0, 256, (2, 100, 140, 3), dtype=np.uint8)
    network_input = FacePreprocessing((80, 80), input_color="bgr")(images)
    expected = rescale_points(np.asarray(plain(network_input)[0]), (80, 80), (100, 140))
    keypoints, confidence = wrapped(images)
    np.testing.assert_allclose(keypoints, expected, atol=1e-3)
    np.testing.assert_allclose(confidence, plain(network_input)[1], rtol=1e-5)
    gray = FPENet(num_keypoints=5, width=4, include_preprocessing=True, input_shape=(64, 64, 1))
    assert gray(images[..., :1][:, :64, :64])[0].shape == (2, 5, 2)


def test_input_tensor_and_other_sizes():
    images = keras.Input((96, 112, 1), name="faces")
    model = FPENet(num_keypoints=4, input_tensor=images, width=4)
    assert model.inputs[0] is images
    assert model(np.zeros((1, 96, 112, 1), "float32"))[0].shape == (1, 4, 2)


def test_keras_round_trip(tmp_path):
    model = FPENet(num_keypoints=6, width=4, heatmap_size=40, include_preprocessing=True,
                   variant="release", beta=0.5)
    images = np.random.default_rng(2).integers(0, 256, (2, 90, 70, 3), dtype=np.uint8)
    path = tmp_path / "fpenet.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert isinstance(restored, LandmarkModel)
    for expected, actual in zip(model(images), restored(images)):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(actual))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_keypoints": 0}, "Received: num_keypoints=0"),
     ({"num_keypoints": -3}, "Received: num_keypoints=-3"),
     ({"num_keypoints": 2.0}, "Received: num_keypoints=2.0"),
     ({"input_shape": (80, 80)}, r"rank 3.*Received: input_shape=\(80, 80\)"),
     ({"input_shape": (1, 80, 80, 1)}, r"rank 3.*Received: input_shape=\(1, 80, 80, 1\)"),
     ({"input_shape": (80, 80, 3)}, r"1 channel.*Received: input_shape=\(80, 80, 3\)"),
     ({"input_shape": (80, 80, 2), "include_preprocessing": True}, r"1 or 3 channel.*Received"),
     ({"input_shape": (72, 80, 1)}, r"multiples of 16.*Received: input_shape=\(72, 80, 1\)"),
     ({"input_tensor": keras.Input((80, 80))}, r"Received: input_tensor.shape=\(None, 80, 80\)"),
     ({"variant": "large"}, "Received: variant='large'"),
     ({"width": 0}, "Received: width=0"),
     ({"heatmap_size": 20}, "Received: heatmap_size=20"),
     ({"input_color": "rgb"}, "Received: input_color='rgb'"),
     ({"include_preprocessing": True, "input_color": "grayscale"}, "Received: input_color='grayscale'"),
     ({"beta": 0}, "Received: beta=0")],
)
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FPENet(**{"width": 4, **kwargs})


@pytest.mark.parametrize(
    "batch, message",
    [(np.zeros((80, 80, 1), "float32"), r"add a batch axis.*Received: inputs.shape=\(\d+, 80, 1\)"),
     (np.zeros((1, 80, 80, 3), "float32"), r"1 channel.*Received: inputs.shape=\(1, 80, 80, 3\)")],
)
def test_call_with_wrong_rank_or_channels(batch, message):
    model = FPENet(width=4)
    with pytest.raises(ValueError, match=message):
        model(batch)
    with pytest.raises(ValueError, match=message):
        model.predict(batch, verbose=0)
