"""Keypoint-aware augmentation: flips with the scheme permutation, occlusion, geometry."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpezoo import schemes
from fpezoo.data import augment

SCHEME_NAMES = sorted(schemes.SCHEMES)


@settings(max_examples=40, deadline=None)
@given(
    scheme_name=st.sampled_from(SCHEME_NAMES),
    width=st.integers(8, 120),
    seed=st.integers(0, 2**31 - 1),
)
def test_flip_twice_returns_points_visibility_and_image(scheme_name, width, seed):
    rng = np.random.default_rng(seed)
    scheme = schemes.get_scheme(scheme_name)
    image = rng.integers(0, 256, (50, width, 1), dtype=np.uint8)
    keypoints = rng.uniform(-5, width + 5, (scheme.num_keypoints, 2)).astype("float32")
    visibility = rng.integers(0, 2, scheme.num_keypoints).astype("float32")
    once = augment.horizontal_flip(image, keypoints, visibility, scheme_name)
    twice = augment.horizontal_flip(*once, scheme_name)
    np.testing.assert_array_equal(twice[0], image)
    np.testing.assert_allclose(twice[1], keypoints, atol=1e-4)
    np.testing.assert_array_equal(twice[2], visibility)
    assert once[0].shape == image.shape


def test_flip_moves_pixels_and_renames_points():
    """Each point's dot (intensity 50 + 40 * index) lands where the flipped label says."""
    image = np.zeros((40, 60, 1), np.uint8)
    keypoints = np.array([[15, 12], [44, 10], [30, 22], [20, 30], [41, 31]], "float32")
    for index, (x, y) in enumerate(keypoints.astype(int)):
        image[y, x] = 50 + 40 * index
    flipped, points, visibility = augment.horizontal_flip(image, keypoints, np.ones(5), "five_point")
    permutation = schemes.get_scheme("five_point").flip_permutation
    for index, (x, y) in enumerate(points.astype(int)):
        assert flipped[y, x, 0] == 50 + 40 * permutation[index]
    # The image-left eye of the mirrored face is still point 0 (it lies left of point 1).
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    patch=st.tuples(st.integers(-10, 70), st.integers(-10, 70), st.integers(1, 40), st.integers(1, 40)),
)
def test_occlusion_marks_exactly_the_covered_points(seed, patch):
    rng = np.random.default_rng(seed)
    image = np.full((64, 64, 1), 10, np.uint8)
    keypoints = rng.uniform(-0.49, 63.49, (40, 2))
    keypoints[:3] = [[np.nan, np.nan], [5.5, 5.5], [0.0, 63.0]]  # unlabelled, pixel edges
    visibility = rng.integers(0, 2, 40).astype("float32")
    x0, y0 = patch[:2]
    box = (x0, y0, x0 + patch[2], y0 + patch[3])
    occluded, new_visibility = augment.occlude(image, keypoints, visibility, box, 200)
    assert image.max() == 10  # the input is not modified
    painted = occluded[..., 0] == 200
    for point, before, after in zip(keypoints, visibility, new_visibility):
        if not np.isfinite(point).all():
            assert after == before
            continue
        column, row = np.floor(point + 0.5).astype(int)  # the pixel the point lies in
        assert after == (0.0 if painted[row, column] else before)


def test_mark_outside():
    points = np.array([[-0.5, 3.0], [-0.51, 3.0], [79.5, 79.5], [79.6, 10.0], [np.nan, np.nan]])
    visibility = augment.mark_outside(points, np.ones(5), (80, 80))
    assert visibility.tolist() == [1, 0, 1, 0, 0]


def test_affine_matrix_matches_opencv_rotation():
    expected = cv2.getRotationMatrix2D((39.5, 39.5), 17.0, 1.2)
    np.testing.assert_allclose(augment.affine_matrix(17.0, 1.2, center=(39.5, 39.5)), expected, atol=1e-9)
    shifted = augment.affine_matrix(translation=(3.0, -2.0))
    assert shifted.tolist() == [[1, 0, 3], [0, 1, -2]]


def test_augmenter_config_round_trip_and_validation():
    augmenter = augment.FaceAugmenter(rotation=20, occlusion_size=(0.2, 0.3), full_turn_probability=0.25,
                                      frame_rotated_points=True)
    again = augment.FaceAugmenter.from_config(augmenter.get_config())
    assert again.get_config() == augmenter.get_config()
    with pytest.raises(ValueError, match=r"flip_probability must be in \[0, 1\]. Received: flip_probability=2"):
        augment.FaceAugmenter(flip_probability=2)
    with pytest.raises(ValueError, match=r"Received: full_turn_probability=-0.1"):
        augment.FaceAugmenter(full_turn_probability=-0.1)
    with pytest.raises(ValueError, match="occlusion_size must be"):
        augment.FaceAugmenter(occlusion_size=(0.5, 0.1))


def test_augmenter_is_reproducible_and_keeps_shape():
    augmenter = augment.FaceAugmenter(blur_probability=1.0, noise_probability=1.0, occlusion_probability=1.0)
    crop = np.random.default_rng(0).integers(0, 256, (80, 80, 1), dtype=np.uint8)
    points = np.random.default_rng(1).uniform(0, 79, (68, 2))
    first = augmenter(crop, points, np.ones(68), np.random.default_rng(5))
    second = augmenter(crop, points, np.ones(68), np.random.default_rng(5))
    other = augmenter(crop, points, np.ones(68), np.random.default_rng(6))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[0].shape == crop.shape and first[0].dtype == np.uint8
    assert not np.array_equal(first[0], other[0])
    assert first[1].sum() < 68  # an occlusion patch of at least 15 % per side hides some points


def test_sample_geometry_turns_about_the_crop_centre():
    augmenter = augment.FaceAugmenter(rotation=30, scale=0.2, translation=0.0, flip_probability=0.0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        matrix, flip = augmenter.sample_geometry(rng, (80, 80))
        assert not flip
        np.testing.assert_allclose(matrix[:, :2] @ [39.5, 39.5] + matrix[:, 2], [39.5, 39.5])


def _rotation_degrees(matrix):
    return np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0]))


@pytest.mark.parametrize("full_turn_probability", [0.0, 0.3])
def test_full_turns_come_with_their_probability(full_turn_probability):
    augmenter = augment.FaceAugmenter(rotation=20, full_turn_probability=full_turn_probability)
    rng = np.random.default_rng(0)
    angles = np.array([_rotation_degrees(augmenter.sample_geometry(rng, (80, 80))[0]) for _ in range(2000)])
    beyond = np.abs(angles) > 20
    # Full turns are uniform on the circle: 8/9 of them land beyond +-20 degrees.
    assert beyond.mean() == pytest.approx(full_turn_probability * 8 / 9, abs=0.03)
    if full_turn_probability:
        assert angles.min() < -170 and angles.max() > 170


@pytest.mark.parametrize("degrees", [0.0, 30.0, 45.0, 90.0, -135.0])
def test_upright_box_ratio_of_a_square(degrees):
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5]], "float64")
    expected = 1 / (abs(np.cos(np.radians(degrees))) + abs(np.sin(np.radians(degrees))))
    assert augment.upright_box_ratio(square, None, degrees) == pytest.approx(expected)
    # Unlabelled points do not frame the crop; a lone point gives no zoom.
    far = np.vstack([square, [[100, 100]]])
    assert augment.upright_box_ratio(far, np.r_[np.ones(5), 0], degrees) == pytest.approx(expected)
    assert augment.upright_box_ratio(square, np.r_[1, np.zeros(4)], degrees) == 1.0


def test_framing_rotated_points_needs_them():
    augmenter = augment.FaceAugmenter(frame_rotated_points=True)
    with pytest.raises(ValueError, match="Received: keypoints=None"):
        augmenter.sample_geometry(np.random.default_rng(0), (80, 80))
