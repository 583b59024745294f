"""Tests of fpezoo.losses: hand-computed values, visibility masking, region
weights, gradients, serialization, mixed precision and model.fit."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fpezoo import losses, metrics
from fpezoo.models.common import LandmarkModel


def three_point_labels():
    """One face: point 0 off by (1, -2), point 1 by (3, 0), point 2 invisible and unlabelled."""
    y_true = np.array([[[10.0, 10.0, 1.0], [20.0, 20.0, 1.0], [np.nan, np.nan, 0.0]]], "float32")
    y_pred = np.array([[[11.0, 8.0], [23.0, 20.0], [500.0, -500.0]]], "float32")
    return y_true, y_pred


def wing(x, w=10.0, eps=2.0):
    x = abs(x)
    return w * math.log(1 + x / eps) if x < w else x - (w - w * math.log(1 + w / eps))


@pytest.mark.parametrize(
    "loss, expected",
    [
        (losses.L1Loss(), (3.0 + 3.0) / 2),
        (losses.L2Loss(), (5.0 + 9.0) / 2),
        (losses.WingLoss(), (wing(1) + wing(2) + wing(3) + wing(0)) / 2),
        (losses.WingLoss(width=2.5, curvature=0.5),
         (wing(1, 2.5, 0.5) + wing(2, 2.5, 0.5) + wing(3, 2.5, 0.5)) / 2),
    ],
)
def test_hand_computed_values(loss, expected):
    y_true, y_pred = three_point_labels()
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)


def test_wing_loss_is_continuous_at_width():
    # wing(10) from both sides: 10 ln 6 (log part) and 10 - C (linear part) agree.
    loss = losses.WingLoss()
    y_true = np.array([[[0.0, 0.0, 1.0]]], "float32")
    below = float(loss(y_true, np.array([[[10.0 - 1e-3, 0.0]]], "float32")))
    above = float(loss(y_true, np.array([[[10.0 + 1e-3, 0.0]]], "float32")))
    assert below == pytest.approx(10 * math.log(6), abs=1e-2)
    assert above == pytest.approx(below, abs=2e-3)
    assert float(loss(y_true, np.array([[[14.0, 0.0]]], "float32"))) == pytest.approx(wing(14.0), rel=1e-6)


def test_faces_without_visible_points_give_zero_not_nan():
    y_true, y_pred = three_point_labels()
    hidden = y_true.copy()
    hidden[..., 2] = 0
    batch_true = np.concatenate([y_true, hidden])
    batch_pred = np.concatenate([y_pred, y_pred])
    for loss in (losses.L1Loss(), losses.L2Loss(), losses.WingLoss()):
        single = float(loss(y_true, y_pred))
        assert float(loss(batch_true, batch_pred)) == pytest.approx(single / 2)  # mean over faces
        assert float(loss(hidden, y_pred)) == 0.0


@pytest.mark.parametrize("loss", [losses.L1Loss(), losses.L2Loss(), losses.WingLoss()])
def test_gradients_are_finite_and_zero_on_invisible_points(loss):
    y_true, y_pred = three_point_labels()
    hidden = y_true.copy()
    hidden[..., 2] = 0
    for labels in (y_true, hidden):
        prediction = tf.Variable(y_pred)
        with tf.GradientTape() as tape:
            value = loss(labels, prediction)
        gradient = tape.gradient(value, prediction).numpy()
        assert np.all(np.isfinite(gradient))
        np.testing.assert_array_equal(gradient[0, 2], [0.0, 0.0])


def test_gradient_points_toward_the_label():
    y_true, y_pred = three_point_labels()
    prediction = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = losses.L2Loss()(y_true, prediction)
    gradient = tape.gradient(value, prediction).numpy()
    # d/dp of (dx^2 + dy^2) / 2 visible points = (p - g) for the single face.
    np.testing.assert_allclose(gradient[0, :2], [[1.0, -2.0], [3.0, 0.0]], rtol=1e-6)


def test_region_weights_follow_the_scheme():
    y_true = np.concatenate([np.zeros((1, 68, 2)), np.ones((1, 68, 1))], axis=-1).astype("float32")
    y_pred = np.zeros((1, 68, 2), "float32")
    y_pred[0, 36:48, 0] = 1.0  # only the 12 eye points are off, by 1 px
    unweighted = losses.L1Loss()(y_true, y_pred)
    assert float(unweighted) == pytest.approx(12 / 68)
    weighted = losses.L1Loss(scheme="ibug68", region_weights={"eyes": 3.0, "face": 1.0, "mouth": 1.0})
    assert float(weighted(y_true, y_pred)) == pytest.approx(12 * 3 / (12 * 3 + 56))
    # Scheme chosen by keypoint count; weights only matter relative to each other.
    inferred = losses.L1Loss(region_weights={"eyes": 0.6, "face": 0.2, "mouth": 0.2})
    assert float(inferred(y_true, y_pred)) == pytest.approx(12 * 3 / (12 * 3 + 56))


def test_float16_predictions():
    y_true, y_pred = three_point_labels()
    for loss in (losses.L1Loss(), losses.L2Loss(), losses.WingLoss()):
        value = loss(y_true, y_pred.astype("float16"))
        assert value.dtype == "float32"
        assert float(value) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-3)


@pytest.mark.parametrize(
    "loss",
    [
        losses.L1Loss(),
        losses.L2Loss(scheme="ibug68", region_weights={"eyes": 2.0}, name="l2", reduction="sum"),
        losses.WingLoss(width=5.0, curvature=1.0, scheme="tao80", region_weights={"pupil": 4.0}),
        losses.AdaptiveWingLoss(input_size=(80, 80), sigma=1.5, foreground_weight=5.0),
    ],
)
def test_serialization_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: losses.WingLoss(width=-1.0), "width=-1.0"),
        (lambda: losses.WingLoss(curvature=0), "curvature=0"),
        (lambda: losses.L1Loss(region_weights=[1, 2]), "region_weights=[1, 2]"),
        (lambda: losses.AdaptiveWingLoss(alpha=0.5), "alpha=0.5"),
        (lambda: losses.L2Loss(scheme="ibug68", region_weights={"eye": 2.0}), "{'eye': 2.0}"),
        (lambda: losses.AdaptiveWingLoss(input_size=(80,)), "input_size=(80,)"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises((ValueError, TypeError), match="Received: ") as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "y_true_shape, y_pred_shape, message",
    [
        ((2, 5, 2), (2, 5, 2), "y_true.shape=(2, 5, 2)"),
        ((2, 6, 3), (2, 5, 2), "y_true.shape=(2, 6, 3)"),
        ((2, 5, 3), (2, 5, 3), "y_pred.shape=(2, 5, 3)"),
    ],
)
def test_bad_shapes(y_true_shape, y_pred_shape, message):
    with pytest.raises(ValueError, match="Received: ") as info:
        losses.L1Loss()(np.ones(y_true_shape, "float32"), np.ones(y_pred_shape, "float32"))
    assert message in str(info.value)


def test_region_weights_with_mismatched_scheme():
    y_true = np.ones((1, 5, 3), "float32")
    with pytest.raises(ValueError, match="Received: scheme='ibug68'"):
        losses.L1Loss(scheme="ibug68", region_weights={"eyes": 2.0})(y_true, np.ones((1, 5, 2), "float32"))


# --- Adaptive Wing --------------------------------------------------------------

OMEGA, THETA, EPSILON, ALPHA = 14.0, 0.5, 1.0, 2.1


def awing_at_peak(difference):
    """The paper's formula for target y = 1 (exponent alpha - 1 = 1.1), by hand."""
    power = ALPHA - 1.0
    if difference < THETA:
        return OMEGA * math.log(1 + (difference / EPSILON) ** power)
    slope = OMEGA / (1 + (THETA / EPSILON) ** power) * power * (THETA / EPSILON) ** (power - 1) / EPSILON
    return slope * difference - (THETA * slope - OMEGA * math.log(1 + (THETA / EPSILON) ** power))


@pytest.mark.parametrize("predicted", [1.0, 0.8, 0.5, 0.0, -0.5])
def test_adaptive_wing_single_pixel_by_hand(predicted):
    # A 1x1 heatmap with the keypoint on its pixel: target 1, foreground, weight 1 + 10.
    loss = losses.AdaptiveWingLoss()
    y_true = np.array([[[0.0, 0.0, 1.0]]], "float32")
    value = float(loss(y_true, np.full((1, 1, 1, 1), predicted, "float32")))
    assert value == pytest.approx(11.0 * awing_at_peak(1.0 - predicted), rel=1e-5, abs=1e-6)


def test_adaptive_wing_is_continuous_at_theta():
    y_true = np.array([[[0.0, 0.0, 1.0]]], "float32")
    loss = losses.AdaptiveWingLoss(foreground_weight=0.0)
    below = float(loss(y_true, np.full((1, 1, 1, 1), 1 - THETA + 1e-4, "float32")))
    above = float(loss(y_true, np.full((1, 1, 1, 1), 1 - THETA - 1e-4, "float32")))
    assert below == pytest.approx(OMEGA * math.log(1 + 0.5**1.1), rel=1e-3)
    assert above == pytest.approx(below, rel=1e-3)


def test_adaptive_wing_renders_targets_in_heatmap_pixels():
    # Keypoints at (3.5, 3.5) and (1.5, 5.5) on an 8x8 input are (1.5, 1.5) and (0.5, 2.5)
    # on a 4x4 heatmap (pixel-centre rescaling); the third is invisible.
    y_true = np.array([[[3.5, 3.5, 1.0], [1.5, 5.5, 1.0], [np.nan, np.nan, 0.0]]], "float32")
    rendered = losses.gaussian_heatmaps(np.array([[[1.5, 1.5], [0.5, 2.5], [0.0, 0.0]]], "float32"), (4, 4), 1.0)
    assert float(rendered[0, 1, 1, 0]) == pytest.approx(math.exp(-0.25))  # 0.5 px off in x and y
    heatmaps = np.array(rendered)
    heatmaps[..., 2] = 7.0  # anything on the invisible point's heatmap
    loss = losses.AdaptiveWingLoss(input_size=(8, 8))
    assert float(loss(y_true, heatmaps)) == pytest.approx(0.0, abs=1e-6)
    heatmaps[..., 0] += 0.1
    assert float(loss(y_true, heatmaps)) > 0.1
    assert float(loss(np.zeros((1, 3, 3), "float32"), heatmaps)) == 0.0  # nothing visible


def test_adaptive_wing_gradient_is_finite_at_the_optimum():
    y_true = np.array([[[1.0, 2.0, 1.0], [0.0, 0.0, 0.0]]], "float32")
    heatmaps = tf.Variable(losses.gaussian_heatmaps(np.array([[[1.0, 2.0], [0.0, 0.0]]], "float32"), (4, 4), 1.0))
    with tf.GradientTape() as tape:
        value = losses.AdaptiveWingLoss()(y_true, heatmaps)
    gradient = tape.gradient(value, heatmaps).numpy()
    assert np.all(np.isfinite(gradient))
    np.testing.assert_array_equal(gradient[..., 1], 0.0)


# --- model.fit ------------------------------------------------------------------


def tiny_landmark_model(num_keypoints=68, size=16):
    """Image -> [keypoints (N, K, 2) in input pixels, confidence (N, K)]."""
    inputs = keras.Input((size, size, 1))
    features = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    offsets = keras.layers.Dense(num_keypoints * 2)(features)
    keypoints = keras.layers.Reshape((num_keypoints, 2))(offsets)
    keypoints = keras.layers.Rescaling(1.0, offset=size / 2)(keypoints)
    confidence = keras.layers.Dense(num_keypoints, activation="sigmoid", dtype="float32")(features)
    return LandmarkModel(inputs, [keypoints, confidence])


def synthetic_faces(num_faces=64, size=16, seed=0):
    """Images whose mean brightness sets a shared offset of all keypoints; 20% invisible."""
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-3, 3, (num_faces, 1, 1))
    images = np.ones((num_faces, size, size, 1), "float32") * (shift[..., None] / 3)
    base = np.random.default_rng(99).uniform(3, size - 3, (1, 68, 2))
    points = base + shift
    visibility = (rng.uniform(size=(num_faces, 68, 1)) > 0.2).astype("float32")
    points = np.where(visibility > 0, points, np.nan)
    return images, np.concatenate([points, visibility], axis=-1).astype("float32")


# The confidence head carries no loss by design (LandmarkModel), so Keras warns it gets no gradient.
NO_CONFIDENCE_GRADIENT = pytest.mark.filterwarnings("ignore:Gradients do not exist")


@NO_CONFIDENCE_GRADIENT
@pytest.mark.parametrize("loss", [losses.L1Loss(), losses.WingLoss(width=2.0, curvature=0.5),
                                  losses.L2Loss(scheme="ibug68", region_weights={"eyes": 2.0})])
def test_fit_with_landmark_model_reduces_loss_and_reloads(loss, tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = synthetic_faces()
    model = tiny_landmark_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss,
                  metrics=[metrics.NME("box_diagonal"), metrics.RegionPixelError("ibug68", "eyes")])
    start = model.evaluate(images, labels, verbose=0, return_dict=True)
    history = model.fit(images, labels, batch_size=16, epochs=15, verbose=0)
    end = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert np.all(np.isfinite(history.history["loss"]))
    assert end["loss"] < 0.5 * start["loss"]
    assert end["nme"] < start["nme"]
    path = tmp_path / "tiny.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert type(restored.loss) is type(loss)
    assert restored.evaluate(images, labels, verbose=0, return_dict=True)["loss"] == pytest.approx(end["loss"], rel=1e-4)


@NO_CONFIDENCE_GRADIENT
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fit_under_mixed_precision(policy):
    keras.utils.set_random_seed(0)
    images, labels = synthetic_faces(32)
    keras.config.set_dtype_policy(policy)
    try:
        model = tiny_landmark_model()
        assert model.outputs[0].dtype == policy.split("_")[1]
        model.compile(optimizer="adam", loss=losses.WingLoss(), metrics=[metrics.NME("box_area")])
        history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(history.history["nme"]))


def test_adaptive_wing_trains_a_heatmap_model():
    keras.utils.set_random_seed(0)
    images, labels = synthetic_faces(32)
    labels = labels[:, :4]
    inputs = keras.Input((16, 16, 1))
    heatmaps = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    heatmaps = keras.layers.AveragePooling2D(2)(heatmaps)  # 8x8 heatmaps for a 16x16 input
    model = keras.Model(inputs, heatmaps)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.AdaptiveWingLoss(input_size=(16, 16)))
    start = model.evaluate(images, labels, verbose=0)
    model.fit(images, labels, batch_size=16, epochs=10, verbose=0)
    assert model.evaluate(images, labels, verbose=0) < 0.7 * start
