"""Tests of fpezoo.schemes: scheme data, flips, conversions and region weights."""

import copy
import pickle

import numpy as np
import pytest

from fpezoo import schemes

ALL_SCHEMES = sorted(schemes.SCHEMES)


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_scheme_data_is_consistent(name):
    scheme = schemes.get_scheme(name)
    assert scheme.name == name
    assert len(scheme.point_names) == len(set(scheme.point_names)) == scheme.num_keypoints
    assert len(scheme.flip_permutation) == scheme.num_keypoints
    # Regions do not overlap.
    indices = [i for region in scheme.regions.values() for i in region]
    assert len(indices) == len(set(indices))
    # A flip maps every region onto itself.
    permutation = np.asarray(scheme.flip_permutation)
    for region, members in scheme.regions.items():
        assert set(permutation[list(members)]) == set(members), region
    # The normalising pairs are each other's mirror images.
    if scheme.outer_eye_corners is not None:
        left, right = scheme.outer_eye_corners
        assert permutation[left] == right
    for pair in (scheme.eye_centres, scheme.pupils):
        if pair is not None:
            assert sorted(permutation[list(pair[0])]) == sorted(pair[1])


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_schemes_pickle_and_copy(name):
    scheme = schemes.get_scheme(name)
    assert pickle.loads(pickle.dumps(scheme)) == scheme
    assert copy.deepcopy(scheme) == scheme
    assert hash(copy.copy(scheme)) == hash(scheme)


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_flip_twice_is_identity(name):
    scheme = schemes.get_scheme(name)
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 79, size=(3, scheme.num_keypoints, 2)).astype("float32")
    visibility = rng.integers(0, 2, size=(3, scheme.num_keypoints)).astype("float32")
    once, once_visibility = schemes.flip_keypoints(keypoints, visibility, scheme, 80)
    assert not np.allclose(once, keypoints)
    twice, twice_visibility = schemes.flip_keypoints(once, once_visibility, scheme, 80)
    np.testing.assert_allclose(twice, keypoints, atol=1e-5)
    np.testing.assert_array_equal(twice_visibility, visibility)


def test_flip_mirrors_x_with_pixel_centres_and_swaps_sides():
    points = np.array([[10.0, 20.0], [60.0, 22.0], [35.0, 40.0], [15.0, 60.0], [55.0, 61.0]])
    visibility = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    flipped, flipped_visibility = schemes.flip_keypoints(points, visibility, "five_point", 80)
    # The image-right eye (x=60) becomes the image-left eye at 80 - 1 - 60 = 19.
    np.testing.assert_allclose(flipped[0], [19.0, 22.0])
    np.testing.assert_allclose(flipped[1], [69.0, 20.0])
    np.testing.assert_allclose(flipped[2], [44.0, 40.0])
    np.testing.assert_array_equal(flipped_visibility, [0.0, 1.0, 1.0, 1.0, 1.0])
    assert schemes.flip_keypoints(points, None, "five_point", 80)[1] is None


def _mean_frontal_face(points, yaw, scheme):
    """Mean of the faces with |yaw| < 15 degrees, centred and scaled on the outer eye corners.

    Points at -1 (AFLW's "not visible") are left out of the mean.
    """
    left, right = scheme.outer_eye_corners
    faces = points[np.abs(yaw) < 15].astype("float64")
    faces[(faces < 0).any(axis=-1)] = np.nan
    faces = faces[np.isfinite(faces[:, [left, right]]).all(axis=(1, 2))]
    assert len(faces) > 500
    middle = (faces[:, left] + faces[:, right]) / 2
    inter_ocular = np.linalg.norm(faces[:, left] - faces[:, right], axis=-1)
    return np.nanmean((faces - middle[:, None]) / inter_ocular[:, None, None], axis=0)


@pytest.mark.parametrize("name,labels_key,eye_corners", [
    ("ibug68", "pts68_reannotated", (36, 39)),
    ("aflw21", "pts21", (6, 8)),
])
def test_flip_maps_mean_frontal_face_onto_its_mirror(shared_data, name, labels_key, eye_corners):
    """Each point of the mean near-frontal AFLW2000-3D face lands near its partner.

    The mean face (unit outer-eye-corner distance, centred between those
    corners) mirrored about x = 0 and permuted must match itself. Measured
    largest distances (892 and 815 faces): 0.051 (iBUG-68, point 8, the chin)
    and 0.055 (AFLW-21, the chin): mid-line points sit slightly off centre.
    Swapping an eye's outer and inner corner in the permutation gives 0.27
    and 0.28, so the tolerance of 0.08 separates right from wrong.
    """
    scheme = schemes.get_scheme(name)
    labels = np.load(shared_data / "aflw2000-3d" / "landmarks.npz")
    mean_face = _mean_frontal_face(labels[labels_key], labels["yaw_deg"], scheme)
    # With image_width=1, x -> 1 - 1 - x = -x: a mirror about the face's centre line.
    mirrored, _ = schemes.flip_keypoints(mean_face, None, scheme, image_width=1)
    distance = np.linalg.norm(mirrored - mean_face, axis=-1)
    assert distance.max() < 0.08, (distance.argmax(), distance.max())
    # The same check fails with a wrong permutation.
    wrong = list(scheme.flip_permutation)
    outer, inner = eye_corners
    wrong[outer], wrong[inner] = wrong[inner], wrong[outer]
    mirrored_wrong = mean_face.copy()
    mirrored_wrong[:, 0] *= -1
    assert np.linalg.norm(mirrored_wrong[wrong] - mean_face, axis=-1).max() > 0.2


def test_convert_68_to_five_points():
    rng = np.random.default_rng(1)
    keypoints = rng.uniform(0, 100, size=(2, 68, 2)).astype("float32")
    visibility = np.ones((2, 68), dtype="float32")
    visibility[1, 40] = 0.0  # one point of the image-left eye hidden
    five, five_visibility = schemes.convert_keypoints(keypoints, visibility, "ibug68", "five_point")
    assert five.shape == (2, 5, 2)
    np.testing.assert_allclose(five[:, 0], keypoints[:, 36:42].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(five[:, 1], keypoints[:, 42:48].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(five[:, 2], keypoints[:, 30])
    np.testing.assert_allclose(five[:, 3], keypoints[:, 48])
    np.testing.assert_allclose(five[:, 4], keypoints[:, 54])
    np.testing.assert_array_equal(five_visibility, [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])


def test_convert_through_ibug68_composes_the_tables():
    rng = np.random.default_rng(2)
    wflw = rng.uniform(0, 100, size=(98, 2)).astype("float32")
    five, visibility = schemes.convert_keypoints(wflw, None, "wflw98", "five_point")
    np.testing.assert_allclose(five[0], wflw[[60, 61, 63, 64, 65, 67]].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(five[4], wflw[82])
    np.testing.assert_array_equal(visibility, np.ones(5))
    tao, tao_visibility = schemes.convert_keypoints(
        rng.uniform(size=(104, 2)), None, "tao104", "ibug68")
    assert tao.shape == (68, 2) and tao_visibility.all()


def test_aflw21_to_68_and_back_with_mask():
    rng = np.random.default_rng(3)
    aflw = rng.uniform(0, 120, size=(21, 2)).astype("float32")
    visibility = np.ones(21, dtype="float32")
    visibility[14] = 0.0    # nose tip hidden
    aflw[12] = np.nan       # ear not labelled
    ibug, ibug_visibility = schemes.convert_keypoints(aflw, visibility, "aflw21", "ibug68")
    corresponding = {17: 0, 19: 1, 21: 2, 22: 3, 24: 4, 26: 5, 36: 6, 39: 8, 42: 9, 45: 11,
                     31: 13, 30: 14, 35: 15, 48: 17, 54: 19, 8: 20}
    for i68, i21 in corresponding.items():
        np.testing.assert_array_equal(ibug[i68], aflw[i21])
    missing = sorted(set(range(68)) - set(corresponding))
    assert np.isnan(ibug[missing]).all()
    assert not ibug_visibility[missing].any()
    assert ibug_visibility[30] == 0.0 and ibug_visibility[36] == 1.0
    assert ibug_visibility.sum() == 15

    back, back_visibility = schemes.convert_keypoints(ibug, ibug_visibility, "ibug68", "aflw21")
    for i21 in corresponding.values():
        np.testing.assert_array_equal(back[i21], aflw[i21])
    for i21 in (7, 10, 12, 16, 18):  # eye centres, ears, mouth centre: no iBUG point
        assert np.isnan(back[i21]).all() and back_visibility[i21] == 0.0


def test_aflw21_to_five_points_uses_aflw_eye_centres():
    aflw = np.arange(42, dtype="float32").reshape(21, 2)
    five, visibility = schemes.convert_keypoints(aflw, None, "aflw21", "five_point")
    np.testing.assert_array_equal(five, aflw[[7, 10, 14, 17, 19]])
    np.testing.assert_array_equal(visibility, np.ones(5))


def test_five_points_give_no_68_points():
    ibug, visibility = schemes.convert_keypoints(np.zeros((5, 2)), None, "five_point", "ibug68")
    assert np.isnan(ibug).all() and not visibility.any()


def test_keypoint_weights_follow_tao_groups():
    weights = schemes.get_scheme("tao104").keypoint_weights(
        {"face": 0.5, "eyes": 2.0, "mouth": 3.0, "pupil": 4.0})
    assert weights.dtype == np.float32 and weights.shape == (104,)
    np.testing.assert_array_equal(weights[:36], 0.5)      # chin, brows, nose
    np.testing.assert_array_equal(weights[36:48], 2.0)    # eyes
    np.testing.assert_array_equal(weights[48:68], 3.0)    # mouth and inner lips
    np.testing.assert_array_equal(weights[68:76], 4.0)    # pupils
    np.testing.assert_array_equal(weights[76:80], 0.5)    # ears count as face
    np.testing.assert_array_equal(weights[80:], 2.0)      # extra eye points
    # Missing keys weigh 1.
    partial = schemes.get_scheme("ibug68").keypoint_weights({"mouth": 0.0})
    np.testing.assert_array_equal(partial[:48], 1.0)
    np.testing.assert_array_equal(partial[48:], 0.0)
    np.testing.assert_array_equal(schemes.IBUG68.keypoint_weights(), np.ones(68))


def test_keypoint_weights_reject_bad_names_and_values():
    with pytest.raises(ValueError, match="Unknown region weight names.*Received: region_weights"):
        schemes.IBUG68.keypoint_weights({"nose": 2.0})
    with pytest.raises(ValueError, match="non-negative"):
        schemes.IBUG68.keypoint_weights({"eyes": -1.0})


@pytest.mark.parametrize("count,name", [(68, "ibug68"), (80, "tao80"), (104, "tao104"),
                                        (98, "wflw98"), (5, "five_point"), (21, "aflw21")])
def test_scheme_for_num_keypoints(count, name):
    assert schemes.scheme_for_num_keypoints(count).name == name


def test_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown keypoint scheme.*Received: scheme='ibug69'"):
        schemes.get_scheme("ibug69")
    with pytest.raises(TypeError, match="Received: scheme=68"):
        schemes.get_scheme(68)
    with pytest.raises(ValueError, match="No keypoint scheme.*Received: num_keypoints=10"):
        schemes.scheme_for_num_keypoints(10)
    with pytest.raises(ValueError, match=r"has 68 points but the keypoints have 21.*Received"):
        schemes.flip_keypoints(np.zeros((21, 2)), None, "ibug68", 80)
    with pytest.raises(ValueError, match=r"has 21 points but the keypoints have 68"):
        schemes.convert_keypoints(np.zeros((68, 2)), None, "aflw21", "ibug68")
    with pytest.raises(ValueError, match=r"shape \(..., K, 2\).*Received: keypoints.shape"):
        schemes.convert_keypoints(np.zeros((68, 3)), None, "ibug68", "aflw21")
    with pytest.raises(ValueError, match="Visibility must have shape"):
        schemes.flip_keypoints(np.zeros((5, 2)), np.ones(4), "five_point", 80)
    with pytest.raises(ValueError, match="permutation of range"):
        schemes.KeypointScheme("bad", ("a", "b"), {}, (0, 0))
