"""Tests for RetailLandmarks5 (landmarks-regression-retail-0009 in Keras)."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

from fpezoo.coordinates import rescale_points
from fpezoo.data.readers import find_off_face_rows, read_mtfl
from fpezoo.losses import L1Loss
from fpezoo.models.common import KEYPOINT_HEAD
from fpezoo.models.retail import RetailLandmarks5, UnitConfidence

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _forward_time_module():
    spec = importlib.util.spec_from_file_location(
        "forward_time", PROJECT_ROOT / "benchmarks" / "forward_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _faces(count, size=48, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def test_parameter_count_matches_the_official_bin():
    model = RetailLandmarks5()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # 762,464 bytes of float32 in the official .bin = 190,616 values.
    assert trainable == 762_464 // 4 == 190_616
    # Moving mean and variance of the 3+16+32+64+64+128+128+256 = 691 BN channels.
    assert model.count_params() == 190_616 + 2 * 691


def test_flops_match_the_published_figure():
    flops = _forward_time_module().model_flops(RetailLandmarks5())
    assert flops == 2 * 10_339_456  # the module docstring's layer-by-layer count
    assert flops / 1e9 == pytest.approx(0.021, abs=0.0005)


def test_every_prelu_has_one_slope():
    model = RetailLandmarks5()
    prelus = [layer for layer in model.layers if isinstance(layer, keras.layers.PReLU)]
    assert len(prelus) == 8
    assert all(int(np.prod(layer.weights[0].shape)) == 1 for layer in prelus)


def test_outputs_are_in_input_pixels_with_unit_confidence():
    model = RetailLandmarks5()
    keypoints, confidence = model(_faces(3))
    assert keypoints.shape == (3, 5, 2) and confidence.shape == (3, 5)
    keypoints = keras.ops.convert_to_numpy(keypoints)
    # The sigmoid keeps "centres"-decoded points between the first and last pixel centres.
    assert keypoints.min() >= 0.0 and keypoints.max() <= 47.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(confidence), 1.0)


def test_decoder_conventions_map_the_same_values_differently():
    corners = RetailLandmarks5(convention="corners")
    centres = RetailLandmarks5(convention="centres")
    centres.set_weights(corners.get_weights())
    faces = _faces(2)
    values = keras.Model(corners.input, corners.get_layer("values").output)(faces)
    values = keras.ops.convert_to_numpy(values).reshape(2, 5, 2)
    np.testing.assert_allclose(corners(faces)[0], values * 48 - 0.5, atol=1e-4)
    np.testing.assert_allclose(centres(faces)[0], values * 47, atol=1e-4)


def test_preprocessing_model_maps_back_to_input_pixels():
    plain = RetailLandmarks5()
    wrapped = RetailLandmarks5(include_preprocessing=True, input_shape=(96, 96, 3))
    for layer in plain.layers:
        if layer.weights:
            wrapped.get_layer(layer.name).set_weights(layer.get_weights())
    rgb = _faces(2, size=96, seed=1)
    # 96 -> 48 bilinear with half-pixel centres is the mean of each 2x2 block.
    bgr_48 = rgb[:, :, :, ::-1].reshape(2, 48, 2, 48, 2, 3).mean(axis=(2, 4))
    expected = rescale_points(keras.ops.convert_to_numpy(plain(bgr_48)[0]), (48, 48), (96, 96))
    np.testing.assert_allclose(wrapped(rgb)[0], expected, atol=1e-3)


def test_keras_round_trip_without_custom_objects(tmp_path):
    model = RetailLandmarks5(include_preprocessing=True)
    faces = _faces(2, size=64)
    path = tmp_path / "retail.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    for expected, actual in zip(model(faces), restored(faces)):
        np.testing.assert_allclose(expected, actual, atol=1e-6)


def test_other_keypoint_count_keeps_the_trunk(tmp_path):
    original = RetailLandmarks5()
    path = tmp_path / "retail5.weights.h5"
    original.save_weights(path)
    with pytest.warns(UserWarning, match=KEYPOINT_HEAD):
        seven = RetailLandmarks5(num_keypoints=7, weights=path)
    for layer in seven.layers:
        if layer.weights and layer.name != KEYPOINT_HEAD:
            for expected, actual in zip(original.get_layer(layer.name).get_weights(),
                                        layer.get_weights()):
                np.testing.assert_array_equal(expected, actual)
    assert seven.get_layer(KEYPOINT_HEAD).get_weights()[0].shape == (1, 1, 64, 14)
    assert seven(_faces(1))[0].shape == (1, 7, 2)


def test_unit_confidence_config_round_trip():
    layer = UnitConfidence(name="c")
    assert UnitConfidence.from_config(layer.get_config()).name == "c"


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_keypoints": 0}, "num_keypoints=0"),
     ({"input_shape": (64, 64, 3)}, r"input_shape=\(64, 64, 3\)"),
     ({"input_shape": (48, 48, 1)}, r"input_shape=\(48, 48, 1\)"),
     ({"input_color": "bgr"}, "input_color='bgr'"),
     ({"include_preprocessing": True, "input_color": "grayscale"}, "input_color='grayscale'"),
     ({"convention": "middle"}, "convention='middle'")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetailLandmarks5(**kwargs)


def _mtfl_train_faces(folder, count):
    """RGB 80x80 crops and (N, 5, 3) labels of the first MTFL train faces, off-face rows dropped."""
    records = read_mtfl(folder / "train.txt")[: count + count // 2]
    off_face = set(find_off_face_rows(records).all.tolist())
    kept = [record for index, record in enumerate(records) if index not in off_face][:count]
    images = np.array([record.load_image("rgb") for record in kept], "float32")
    labels = np.array([np.concatenate([r.keypoints, r.visibility[:, None]], axis=-1) for r in kept])
    return images, labels.astype("float32")


@pytest.mark.slow
def test_fit_on_mtfl_lowers_the_loss(shared_data):
    images, labels = _mtfl_train_faces(shared_data / "mtfl", 320)
    assert len(images) == 320
    keras.utils.set_random_seed(0)
    model = RetailLandmarks5(include_preprocessing=True, input_shape=(80, 80, 3))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=L1Loss())
    before = model.evaluate(images, labels, verbose=0)
    model.fit(images, labels, batch_size=32, epochs=8, verbose=0)
    after = model.evaluate(images, labels, verbose=0)
    assert after < 0.7 * before, (before, after)
