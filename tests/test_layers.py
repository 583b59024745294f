"""Tests for the shared preprocessing and decoding layers (fpezoo.layers)."""

import cv2
import keras
import numpy as np
import pytest

from fpezoo.coordinates import rescale_points
from fpezoo.layers import (
    FacePreprocessing,
    HeatmapArgmax,
    RegressionDecoder,
    RescaleKeypoints,
    SoftArgmax,
)


def _fan_get_preds_fromhm(heatmaps_nkhw):
    """face-alignment's get_preds_fromhm loop (channels-first), kept literal.

    Returns FAN's coordinates, which are pixel-corner based (ours + 0.5).
    """
    batch, count, height, width = heatmaps_nkhw.shape
    flat = heatmaps_nkhw.reshape(batch, count, height * width)
    idx = np.argmax(flat, axis=-1) + 1
    preds = np.repeat(idx[..., None], 2, axis=-1).astype(np.float32)
    preds[:, :, 0] = (preds[:, :, 0] - 1) % width + 1
    preds[:, :, 1] = np.floor((preds[:, :, 1] - 1) / width) + 1
    for i in range(batch):
        for j in range(count):
            hm = heatmaps_nkhw[i, j]
            px, py = int(preds[i, j, 0]) - 1, int(preds[i, j, 1]) - 1
            if 0 < px < width - 1 and 0 < py < height - 1:
                diff = np.array([hm[py, px + 1] - hm[py, px - 1], hm[py + 1, px] - hm[py - 1, px]])
                preds[i, j] += np.sign(diff) * 0.25
    preds -= 0.5
    return preds, flat.max(axis=-1)


def _softargmax_reference(heatmaps, beta):
    batch, height, width, count = heatmaps.shape
    logits = heatmaps.transpose(0, 3, 1, 2).reshape(batch, count, -1).astype(np.float64)
    logits = beta * (logits - logits.max(axis=-1, keepdims=True))
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    rows, cols = np.divmod(np.arange(height * width), width)
    return np.stack([probs @ cols, probs @ rows], axis=-1), probs.max(axis=-1)


def test_soft_argmax_matches_reference_on_non_square_heatmaps():
    rng = np.random.default_rng(0)
    heatmaps = rng.normal(size=(3, 7, 11, 5)).astype("float32") * 4
    keypoints, confidence = SoftArgmax(beta=1.5)(heatmaps)
    expected_points, expected_conf = _softargmax_reference(heatmaps, 1.5)
    np.testing.assert_allclose(keypoints, expected_points, atol=1e-4)
    np.testing.assert_allclose(confidence, expected_conf, rtol=1e-5)


def test_soft_argmax_sharp_peak_lands_on_pixel_centre():
    heatmaps = np.zeros((1, 20, 30, 2), "float32")
    heatmaps[0, 3, 17, 0] = 1000.0  # row 3, column 17
    heatmaps[0, 12, 2, 1] = 1000.0
    keypoints, confidence = SoftArgmax(beta=1.0)(heatmaps)
    np.testing.assert_allclose(keypoints[0], [[17, 3], [2, 12]], atol=1e-4)
    np.testing.assert_allclose(confidence[0], [1, 1], atol=1e-4)


def test_soft_argmax_rejects_non_positive_beta():
    with pytest.raises(ValueError, match="Received: beta=0"):
        SoftArgmax(beta=0)


def test_heatmap_argmax_matches_face_alignment():
    rng = np.random.default_rng(1)
    heatmaps = rng.normal(size=(4, 9, 9, 6)).astype("float32")
    # Maxima on the borders and in corners get no shift; a tie gets none.
    heatmaps[0, 0, 4, 0] = heatmaps[1, 4, 8, 1] = heatmaps[2, 8, 8, 2] = 10
    heatmaps[3, 4, 4, 3] = 10
    heatmaps[3, 4, 3, 3] = heatmaps[3, 4, 5, 3] = 5
    keypoints, confidence = HeatmapArgmax()(heatmaps)
    fan_points, fan_scores = _fan_get_preds_fromhm(heatmaps.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(np.asarray(keypoints) + 0.5, fan_points, atol=1e-6)
    np.testing.assert_allclose(confidence, fan_scores)
    assert tuple(np.asarray(keypoints)[3, 3]) == (4.0, 4.0 + 0.25 * np.sign(
        heatmaps[3, 5, 4, 3] - heatmaps[3, 3, 4, 3]))


def test_heatmap_argmax_non_square():
    heatmaps = np.zeros((1, 6, 10, 1), "float32")
    heatmaps[0, 2, 7, 0] = 3
    heatmaps[0, 2, 8, 0] = 1  # right neighbour higher: +0.25 in x
    heatmaps[0, 1, 7, 0] = 1  # upper neighbour higher: -0.25 in y
    keypoints, confidence = HeatmapArgmax()(heatmaps)
    np.testing.assert_allclose(keypoints[0, 0], [7.25, 1.75])
    np.testing.assert_allclose(confidence[0, 0], 3)


@pytest.mark.parametrize(
    "convention, expected",
    [("corners", [[-0.5, -0.5], [47.5, 23.5], [23.5, 11.5]]),
     ("centres", [[0, 0], [47, 23], [23.5, 11.5]]),
     ("indices", [[0, 0], [48, 24], [24, 12]])],
)
def test_regression_decoder_conventions(convention, expected):
    values = np.array([[0, 0, 1, 1, 0.5, 0.5]], "float32")
    keypoints = RegressionDecoder(output_size=(24, 48), convention=convention)(values)
    np.testing.assert_allclose(keypoints[0], expected, atol=1e-5)


def test_regression_decoder_errors():
    with pytest.raises(ValueError, match="Received: convention='middle'"):
        RegressionDecoder((48, 48), convention="middle")
    with pytest.raises(ValueError, match=r"Received: input_shape=\(None, 9\)"):
        RegressionDecoder((48, 48))(keras.Input((9,)))


def test_rescale_keypoints_static_and_from_reference():
    points = np.array([[[0, 0], [39, 19.5]]], "float32")
    static = RescaleKeypoints((40, 40), (80, 160))(points)
    np.testing.assert_allclose(static, rescale_points(points, (40, 40), (80, 160)), atol=1e-6)
    reference = np.zeros((1, 80, 160, 3), "uint8")
    dynamic = RescaleKeypoints((40, 40))(points, reference)
    np.testing.assert_allclose(dynamic, static, atol=1e-6)
    # Inside a model with an unknown input size, the size is read at run time.
    images = keras.Input((None, None, 3))
    keypoints = keras.Input((2, 2))
    model = keras.Model([keypoints, images], RescaleKeypoints((40, 40))(keypoints, images))
    np.testing.assert_allclose(model([points, reference]), static, atol=1e-6)
    with pytest.raises(ValueError, match="Received: reference=None"):
        RescaleKeypoints((40, 40))(points)


def test_face_preprocessing_matches_opencv_gray_and_resizes():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)
    gray = FacePreprocessing((80, 80), input_color="rgb", output_color="grayscale")(rgb)
    expected = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in rgb])[..., None]
    assert gray.dtype == "float32"
    np.testing.assert_allclose(gray, expected, atol=0.51)  # OpenCV rounds to uint8
    bgr_gray = FacePreprocessing((80, 80), input_color="bgr")(rgb[..., ::-1].copy())
    np.testing.assert_allclose(bgr_gray, gray, atol=1e-3)
    scaled = FacePreprocessing((40, 20), input_color="rgb", output_color="bgr",
                               scale=1 / 255, offset=-0.5)(rgb)
    assert scaled.shape == (2, 40, 20, 3)
    constant = np.full((1, 33, 47, 1), 255, np.uint8)
    out = FacePreprocessing((80, 80), input_color="grayscale", output_color="rgb",
                            scale=2.0, offset=1.0)(constant)
    assert out.shape == (1, 80, 80, 3)
    np.testing.assert_allclose(out, 511.0, atol=1e-3)


def test_face_preprocessing_errors():
    with pytest.raises(ValueError, match="needs 3 channel"):
        FacePreprocessing((80, 80), input_color="rgb")(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match=r"Received: input_shape=\(8, 8, 3\)"):
        FacePreprocessing((80, 80), input_color="rgb")(np.zeros((8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="Received: input_color='hsv'"):
        FacePreprocessing((80, 80), input_color="hsv")
    with pytest.raises(ValueError, match=r"Received: output_size=\(80, 0\)"):
        FacePreprocessing((80, 0))


def test_decoders_compute_in_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        heatmaps = np.random.default_rng(3).normal(size=(1, 80, 80, 3)).astype("float16")
        keypoints, confidence = SoftArgmax(beta=1.0)(heatmaps)
        assert keypoints.dtype == "float32" and confidence.dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


def test_keras_round_trip_safe_mode_without_custom_objects(tmp_path):
    images = keras.Input((None, None, 3), dtype="uint8")
    x = FacePreprocessing((16, 16), input_color="bgr", output_color="grayscale",
                          scale=1 / 255, offset=-0.5, name="pre")(images)
    heatmaps = keras.layers.Conv2D(4, 3, padding="same")(x)
    soft_points, soft_conf = SoftArgmax(beta=3.0)(heatmaps)
    hard_points, hard_conf = HeatmapArgmax()(heatmaps)
    soft_points = RescaleKeypoints((16, 16))(soft_points, images)
    regressed = RegressionDecoder((16, 16), convention="centres")(
        keras.layers.Dense(8, activation="sigmoid")(keras.layers.Flatten()(x)))
    fixed = RescaleKeypoints((16, 16), (32, 32))(regressed)
    model = keras.Model(images, [soft_points, soft_conf, hard_points, hard_conf, fixed])
    data = np.random.default_rng(4).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    before = model(data)
    path = tmp_path / "layers.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    for expected, actual in zip(before, restored(data)):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(actual))
    assert restored.get_layer("pre").get_config() == model.get_layer("pre").get_config()


@pytest.mark.parametrize(
    "layer",
    [FacePreprocessing((40, 30), "rgb", "bgr", 0.5, 1.0, antialias=True), SoftArgmax(beta=0.25),
     HeatmapArgmax(), RegressionDecoder((48, 48), convention="indices"),
     RescaleKeypoints((40, 40), (80, 80))],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_is_complete(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"fpezoo>{type(layer).__name__}"


def test_layers_export_to_onnx():
    # HeatmapArgmax avoids ops.argmax, whose TensorFlow lowering (Bitcast) ONNX lacks.
    tf2onnx = pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    import tensorflow as tf

    images = keras.Input((None, None, 3))
    x = FacePreprocessing((16, 16), input_color="rgb", output_color="grayscale")(images)
    heatmaps = keras.layers.Conv2D(3, 3, padding="same")(x)
    soft_points, soft_conf = SoftArgmax(beta=0.5)(heatmaps)
    hard_points, hard_conf = HeatmapArgmax()(heatmaps)
    regressed = RegressionDecoder((16, 16))(keras.layers.Dense(6)(keras.layers.Flatten()(x)))
    outputs = [RescaleKeypoints((16, 16))(soft_points, images), soft_conf, hard_points, hard_conf,
               regressed]
    model = keras.Model(images, outputs)
    data = np.random.default_rng(5).uniform(0, 255, (2, 24, 20, 3)).astype("float32")
    function = tf.function(lambda batch: model(batch, training=False))
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=(tf.TensorSpec((None, None, None, 3), tf.float32),), opset=17)
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    results = session.run(None, {session.get_inputs()[0].name: data})
    for actual, expected in zip(results, model(data)):
        np.testing.assert_allclose(actual, expected, atol=1e-3, rtol=1e-4)
