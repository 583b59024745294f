"""Tests of fpezoo.metrics: NME normalisers, region pixel error, AUC / failure rate,
CED, yaw bins, and the Keras metrics against the NumPy functions."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpezoo import metrics, schemes


def make_face():
    """A 68-point face whose normalising distances are known by hand.

    Left eye 36-41: corners (5, 30) and (15, 30), lids (10, 28) x2 and (10, 32) x2,
    so its centre is (10, 30); right eye 42-47 likewise around (50, 30) with
    corners (45, 30) and (55, 30). Outer corners 36 and 45 are 50 apart, the eye
    centres 40. Every point lies in [0, 60] x [0, 80] and (0, 0), (60, 80) are
    points, so the box is 60 x 80: diagonal 100, sqrt(area) sqrt(4800).
    """
    rng = np.random.default_rng(0)
    face = np.stack([rng.uniform(1, 59, 68), rng.uniform(1, 79, 68)], axis=-1)
    face[0] = (0, 0)
    face[8] = (60, 80)
    face[36:42] = [(5, 30), (10, 28), (10, 28), (15, 30), (10, 32), (10, 32)]
    face[42:48] = [(45, 30), (50, 28), (50, 28), (55, 30), (50, 32), (50, 32)]
    return face


EXPECTED_DISTANCES = {
    "inter_ocular": 50.0,
    "eye_centres": 40.0,
    "inter_pupil": 40.0,  # ibug68 has no pupils: the eye centres
    "box_diagonal": 100.0,
    "box_area": math.sqrt(60 * 80),
}


@pytest.mark.parametrize("normalization", metrics.NORMALIZATIONS)
def test_perfect_prediction_gives_zero(normalization):
    gt = make_face()[None]
    np.testing.assert_array_equal(metrics.nme(gt, gt, normalization=normalization), [0.0])


@pytest.mark.parametrize("normalization", metrics.NORMALIZATIONS)
def test_known_shift_gives_hand_computed_nme(normalization):
    gt = make_face()[None]
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    result = metrics.nme(pred, gt, normalization=normalization, scheme="ibug68")
    np.testing.assert_allclose(result, [5.0 / EXPECTED_DISTANCES[normalization]], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 10.0),
    offset=st.tuples(st.floats(-100, 100), st.floats(-100, 100)),
    normalization=st.sampled_from(metrics.NORMALIZATIONS),
)
def test_nme_is_invariant_to_similarity_of_the_frame(seed, scale, offset, normalization):
    # Moving and zooming the image moves prediction and label together: NME must not change.
    rng = np.random.default_rng(seed)
    gt = make_face()[None] + rng.normal(0, 2, (1, 68, 2))
    pred = gt + rng.normal(0, 3, gt.shape)
    before = metrics.nme(pred, gt, normalization=normalization)
    after = metrics.nme(pred * scale + offset, gt * scale + offset, normalization=normalization)
    np.testing.assert_allclose(after, before, rtol=1e-9)


def test_scheme_is_chosen_by_keypoint_count():
    gt = make_face()[None]
    pred = gt + np.array([0.0, 5.0])
    np.testing.assert_allclose(metrics.nme(pred, gt), [0.1])  # inter-ocular, 50 px


def test_inter_pupil_uses_pupils_when_the_scheme_has_them():
    scheme = schemes.get_scheme("tao80")
    assert scheme.pupils is not None
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 80, (2, 80, 2))
    pred = gt + np.array([1.0, 0.0])
    left = gt[:, list(np.atleast_1d(scheme.pupils[0]))].mean(axis=1)
    right = gt[:, list(np.atleast_1d(scheme.pupils[1]))].mean(axis=1)
    expected = 1.0 / np.linalg.norm(left - right, axis=-1)
    np.testing.assert_allclose(metrics.nme(pred, gt, normalization="inter_pupil"), expected)


def test_invisible_points_are_excluded():
    gt = make_face()[None].copy()
    visibility = np.ones((1, 68))
    visibility[0, 60:68] = 0
    pred = gt + np.array([3.0, 4.0])
    pred[0, 60:68] += 1000.0  # wild predictions on invisible points do not count
    gt[0, 60:68] = np.nan  # unlabelled points may be NaN
    for normalization, distance in EXPECTED_DISTANCES.items():
        result = metrics.nme(pred, gt, visibility, normalization=normalization)
        np.testing.assert_allclose(result, [5.0 / distance], err_msg=normalization)


def test_box_uses_visible_points_only():
    gt = make_face()[None].copy()
    gt[0, 30] = (500.0, 500.0)  # an invisible outlier would widen the box
    visibility = np.ones((1, 68))
    visibility[0, 30] = 0
    labels = np.concatenate([gt, visibility[..., None]], axis=-1)  # (N, K, 3) form
    result = metrics.nme(gt + np.array([0.0, 5.0]), labels, normalization="box_diagonal")
    np.testing.assert_allclose(result, [0.05])


def test_face_without_visible_points_is_nan_and_others_unaffected():
    gt = np.stack([make_face(), make_face()])
    visibility = np.ones((2, 68))
    visibility[1] = 0
    result = metrics.nme(gt + np.array([3.0, 4.0]), gt, visibility)
    assert result[0] == pytest.approx(0.1)
    assert np.isnan(result[1])


def test_five_point_eye_centre_nme():
    gt = np.array([[[30.0, 40.0], [50.0, 40.0], [40.0, 50.0], [32.0, 60.0], [48.0, 60.0]]])
    pred = gt.copy()
    pred[0, 2] += (0.0, 10.0)  # one point 10 px off: mean error 2 px over a 20 px distance
    np.testing.assert_allclose(metrics.nme(pred, gt, normalization="eye_centres"), [0.1])


def test_region_pixel_error_by_hand():
    gt = np.stack([make_face(), make_face()])
    pred = gt.copy()
    pred[0] += (1.0, 0.0)  # face 0: every point 1 px off
    pred[1] += (0.0, 3.0)  # face 1: every point 3 px off
    visibility = np.ones((2, 68))
    visibility[1, 36] = 0  # point 36 is then counted on face 0 only: mean 1
    visible_only = metrics.region_pixel_error(pred, gt, visibility, scheme="ibug68")
    assert visible_only["all"] == pytest.approx((1.0 + 67 * 2.0) / 68)
    assert visible_only["eyes"] == pytest.approx((1.0 + 11 * 2.0) / 12)
    assert visible_only["mouth"] == pytest.approx(2.0)
    with_occluded = metrics.region_pixel_error(pred, gt, visibility, include_occluded=True)
    assert with_occluded["eyes"] == pytest.approx(2.0)
    # Original-image pixels: face 0 was cropped from a box twice the crop size.
    scaled = metrics.region_pixel_error(pred, gt, scale=[2.0, 1.0])
    assert scaled["all"] == pytest.approx(2.5)
    custom = metrics.region_pixel_error(pred, gt, regions={"tao_mouth": range(48, 68)})
    assert custom == {"tao_mouth": pytest.approx(2.0)}


def test_tao_regions_merge_the_lips():
    regions = metrics.tao_regions("tao80")
    assert list(regions) == ["all", "chin", "eyebrows", "nose", "eyes", "mouth", "pupils", "ears"]
    assert regions["mouth"] == tuple(range(48, 68))  # TAO's evaluator: Mouth = 48..67
    assert regions["all"] == tuple(range(80))
    assert "pupils" not in metrics.tao_regions("ibug68")
    assert len(metrics.tao_regions("tao104")["eyes"]) == 12 + 24  # eye contours + extra eye points


def test_region_never_counted_is_nan_and_unknown_count_reports_all():
    gt = np.zeros((1, 7, 2))
    visibility = np.zeros((1, 7))
    result = metrics.region_pixel_error(gt + 1.0, gt, visibility)
    assert list(result) == ["all"] and np.isnan(result["all"])


def test_auc_and_failure_rate_on_hand_made_errors():
    errors = [0.0, 0.05, 0.1, 0.2]
    auc, failure_rate = metrics.auc_and_failure_rate(errors, 0.1)
    # CED area on [0, 0.1] / 0.1: 1, 0.5, 0 and 0 per face.
    assert auc == pytest.approx(0.375)
    assert failure_rate == pytest.approx(0.25)  # only 0.2 > 0.1
    auc, failure_rate = metrics.auc_and_failure_rate([0.02, np.inf], 0.08)
    assert auc == pytest.approx(0.375) and failure_rate == 0.5  # inf: a missed face


def test_ced_curve_matches_auc():
    errors = np.random.default_rng(2).gamma(2.0, 0.02, 500)
    thresholds, fractions = metrics.ced_curve(errors, 0.1, num_points=2001)
    assert thresholds[0] == 0 and thresholds[-1] == pytest.approx(0.1)
    assert np.all(np.diff(fractions) >= 0)
    assert fractions[-1] == pytest.approx(np.mean(errors <= 0.1))
    auc, _ = metrics.auc_and_failure_rate(errors, 0.1)
    area = np.sum((fractions[1:] + fractions[:-1]) / 2 * np.diff(thresholds))  # trapezoid rule
    assert area / 0.1 == pytest.approx(auc, abs=1e-3)
    _, fractions = metrics.ced_curve([0.0, 0.5, 1.0], 1.0, num_points=3)
    np.testing.assert_allclose(fractions, [1 / 3, 2 / 3, 1.0])


def test_yaw_binned_mean():
    errors = [1.0, 3.0, 10.0, 20.0, 30.0]
    yaw = [-10.0, 30.0, 45.0, -61.0, 95.0]
    result = metrics.yaw_binned_mean(errors, yaw)
    assert result["bins"]["0-30"] == {"mean": 2.0, "count": 2}
    assert result["bins"]["30-60"] == {"mean": 10.0, "count": 1}
    assert result["bins"]["60+"] == {"mean": 25.0, "count": 2}
    assert result["mean"] == pytest.approx((2.0 + 10.0 + 25.0) / 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.nme(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)), normalization="iod"),
         "normalization='iod'"),
        (lambda: metrics.nme(np.zeros((1, 68, 3)), np.zeros((1, 68, 2))), "pred.shape=(1, 68, 3)"),
        (lambda: metrics.nme(np.zeros((1, 68, 2)), np.zeros((1, 67, 2))), "gt.shape=(1, 67, 2)"),
        (lambda: metrics.nme(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)), np.ones(68)),
         "visibility.shape=(68,)"),
        (lambda: metrics.nme(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)), scheme="five_point"),
         "scheme='five_point'"),
        (lambda: metrics.auc_and_failure_rate([0.1, np.nan], 0.1), "np.nan_to_num"),
        (lambda: metrics.auc_and_failure_rate([0.1], 0.0), "threshold=0.0"),
        (lambda: metrics.yaw_binned_mean([0.1, 0.2], [1.0]), "yaw_deg.shape=(1,)"),
        (lambda: metrics.RegionPixelError("ibug68", region="pupils"), "region='pupils'"),
    ],
)
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match="Received: ") as info:
        call()
    assert message in str(info.value)


def test_scheme_without_the_reference_points_is_a_clear_error():
    scheme = schemes.get_scheme("five_point")
    if scheme.outer_eye_corners is not None:
        pytest.skip("five_point defines outer eye corners")
    with pytest.raises(ValueError, match="normalization='inter_ocular'"):
        metrics.nme(np.zeros((1, 5, 2)), np.ones((1, 5, 2)), scheme="five_point")


def labelled_batch(seed):
    """Two faces with noise, a few invisible points, and one face with none visible."""
    rng = np.random.default_rng(seed)
    gt = np.stack([make_face(), make_face() * 0.9 + 3.0, make_face()])
    pred = gt + rng.normal(0.0, 2.0, gt.shape)
    visibility = (rng.uniform(size=(3, 68)) > 0.2).astype("float64")
    visibility[:, [0, 8, 36, 45]] = 1
    visibility[2] = 0
    y_true = np.concatenate([gt, visibility[..., None]], axis=-1).astype("float32")
    return y_true, pred.astype("float32")


@pytest.mark.parametrize("normalization", metrics.NORMALIZATIONS)
def test_keras_nme_equals_numpy_nme(normalization):
    metric = metrics.NME(normalization=normalization, scheme="ibug68")
    batches = [labelled_batch(3), labelled_batch(4)]
    per_face = []
    for y_true, pred in batches:
        metric.update_state(y_true, pred)
        per_face.append(metrics.nme(pred, y_true, normalization=normalization))
    per_face = np.concatenate(per_face)
    expected = np.nanmean(per_face)  # faces without visible points are left out
    assert np.isnan(per_face).sum() == 2
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_keras_nme_sample_weight_and_float16():
    y_true, pred = labelled_batch(5)
    metric = metrics.NME("box_area")
    metric.update_state(y_true, pred.astype("float16"), sample_weight=np.array([1.0, 0.0, 1.0]))
    expected = metrics.nme(pred, y_true, normalization="box_area")[0]
    assert float(metric.result()) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("include_occluded", [False, True])
def test_keras_region_pixel_error_equals_numpy(include_occluded):
    y_true, pred = labelled_batch(6)
    expected = metrics.region_pixel_error(pred, y_true, include_occluded=include_occluded)
    for region in ("all", "eyes", "chin"):
        metric = metrics.RegionPixelError("ibug68", region=region, include_occluded=include_occluded)
        metric.update_state(y_true[:2], pred[:2])
        metric.update_state(y_true[2:], pred[2:])
        assert float(metric.result()) == pytest.approx(expected[region], rel=1e-5)


def test_metrics_serialize():
    for metric in (metrics.NME("box_diagonal", scheme="ibug68", name="nme_diag"),
                   metrics.RegionPixelError("tao80", region="pupils", include_occluded=True)):
        restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
        assert type(restored) is type(metric)
        assert restored.get_config() == metric.get_config()


@pytest.mark.data
def test_3ddfa_protocol_on_aflw2000_3d(shared_data):
    """Re-annotated vs fitted AFLW2000-3D labels, scored as a model would be.

    The two label sets disagree most on profile faces (the fitted jaw line is a
    projected 3D contour), so the per-bin NME must grow with |yaw|; the Keras
    metric, fed in batches, must agree with the NumPy function.
    """
    data = np.load(shared_data / "aflw2000-3d" / "landmarks.npz")
    fitted = data["pts68_fitted"][..., :2]
    reannotated = data["pts68_reannotated"]
    per_face = metrics.nme(reannotated, fitted, normalization="box_area")
    report = metrics.yaw_binned_mean(per_face, data["yaw_deg"])
    bins = report["bins"]
    assert sum(b["count"] for b in bins.values()) == len(per_face) == 2000
    assert bins["0-30"]["mean"] < bins["30-60"]["mean"] < bins["60+"]["mean"]
    assert 0.01 < report["mean"] < 0.06
    metric = metrics.NME("box_area", scheme="ibug68")
    visible = np.ones(fitted.shape[:2] + (1,))
    y_true = np.concatenate([fitted, visible], axis=-1).astype("float32")
    for start in range(0, 2000, 500):
        metric.update_state(y_true[start:start + 500], reannotated[start:start + 500].astype("float32"))
    assert float(metric.result()) == pytest.approx(per_face.mean(), rel=1e-4)
