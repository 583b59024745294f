"""Tests of fpezoo.geometry: alignment, head pose and eye aspect ratio."""

import cv2
import numpy as np
import pytest

from fpezoo import geometry, schemes

IMAGE_SIZE = (480, 640)


def _similarity(scale, angle_degrees, translation):
    angle = np.radians(angle_degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.asarray(translation, dtype="float64")[:, None]])


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, size=(7, 2))
    expected = _similarity(1.7, -23.0, (12.0, -5.0))
    estimated = geometry.similarity_transform(source, _apply(expected, source))
    np.testing.assert_allclose(estimated, expected, atol=1e-9)


def test_similarity_transform_is_least_squares_with_noise():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 100, size=(50, 2))
    expected = _similarity(0.8, 40.0, (3.0, 4.0))
    target = _apply(expected, source) + rng.normal(0, 0.5, size=source.shape)
    estimated = geometry.similarity_transform(source, target)
    best = np.sum((_apply(estimated, source) - target) ** 2)
    # Any perturbation of the estimate fits worse.
    for _ in range(20):
        perturbed = estimated + rng.normal(0, 1e-3, size=(2, 3)) * [[1, 1, 100], [1, 1, 100]]
        perturbed[1, :2] = [-perturbed[0, 1], perturbed[0, 0]]  # keep it a similarity
        assert np.sum((_apply(perturbed, source) - target) ** 2) >= best
    np.testing.assert_allclose(estimated, expected, atol=0.05 * np.abs(expected).max())


def test_similarity_transform_rejects_coincident_points():
    with pytest.raises(ValueError, match="source points coincide.*Received"):
        geometry.similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


@pytest.mark.parametrize("channels", [None, 3])
def test_align_face_puts_the_five_points_on_the_template(channels):
    # A face whose five points are the template moved by a known similarity;
    # a bright dot marks each point.
    to_image = _similarity(2.5, 17.0, (150.0, 60.0))
    points = _apply(to_image, geometry.ARCFACE_TEMPLATE_112.astype("float64"))
    shape = (400, 500) if channels is None else (400, 500, channels)
    image = np.zeros(shape, dtype="uint8")
    for x, y in points:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    aligned, matrix = geometry.align_face(image, points)
    assert aligned.shape == (112, 112) + (() if channels is None else (channels,))
    assert aligned.dtype == np.uint8
    np.testing.assert_allclose(_apply(matrix, points), geometry.ARCFACE_TEMPLATE_112, atol=1e-4)
    gray = aligned if channels is None else aligned[..., 0]
    for x, y in geometry.ARCFACE_TEMPLATE_112:
        # Each dot (radius 4 / scale 2.5 = 1.6 px after alignment) is under its template point.
        assert gray[int(round(y)), int(round(x))] > 200


def test_align_face_output_size_scales_the_template():
    points = geometry.ARCFACE_TEMPLATE_112.astype("float64") + 40.0
    aligned, matrix = geometry.align_face(np.zeros((300, 300, 3), "uint8"), points, output_size=224)
    assert aligned.shape == (224, 224, 3)
    # Pixel-centre scaling: x' = (x + 0.5) * 2 - 0.5.
    np.testing.assert_allclose(_apply(matrix, points),
                               (geometry.ARCFACE_TEMPLATE_112 + 0.5) * 2 - 0.5, atol=1e-4)


def test_align_face_errors():
    with pytest.raises(ValueError, match=r"`five_points` must have shape \(5, 2\).*Received"):
        geometry.align_face(np.zeros((50, 50)), np.zeros((68, 2)))
    with pytest.raises(ValueError, match="`image` must be.*Received: image.shape"):
        geometry.align_face(np.zeros(50), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="`output_size` must be a positive integer"):
        geometry.align_face(np.zeros((50, 50)), geometry.ARCFACE_TEMPLATE_112, output_size=0)


def _project_face(yaw, pitch, roll, distance=60.0):
    """68 points (NaN outside the head-pose points) of the 3D model in a pose."""
    rotation_vector, _ = cv2.Rodrigues(geometry.rotation_from_angles(yaw, pitch, roll))
    projected, _ = cv2.projectPoints(geometry.FACE_MODEL_3D, rotation_vector,
                                     np.array([3.0, -2.0, distance]),
                                     geometry.camera_matrix(IMAGE_SIZE), None)
    points = np.full((68, 2), np.nan)
    points[list(geometry.HEAD_POSE_POINTS)] = projected[:, 0]
    return points


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, -10, 5), (-50, 15, -20), (75, 5, 10),
                                    (-85, -20, 0)])
def test_head_pose_recovers_the_rotation_of_the_projected_model(angles):
    pose = geometry.head_pose(_project_face(*angles), IMAGE_SIZE, scheme="ibug68")
    np.testing.assert_allclose(pose, angles, atol=1e-2)


def test_head_pose_sign_conventions():
    frontal = _project_face(0, 0, 0)
    nose_x, nose_y = frontal[[31, 35]].mean(axis=0)
    # Positive yaw turns the face toward the image left: the nose moves left.
    assert _project_face(30, 0, 0)[[31, 35], 0].mean() < nose_x - 5
    # Positive pitch turns the face up: the nose moves up.
    assert _project_face(0, 20, 0)[[31, 35], 1].mean() < nose_y - 5
    # Positive roll tilts the head clockwise: the image-right eye is lower.
    tilted = _project_face(0, 0, 15)
    assert tilted[45, 1] > tilted[36, 1] + 5


def test_head_pose_batch_and_other_schemes():
    faces = np.stack([_project_face(20, 0, 0), _project_face(-40, 10, 5)])
    pose = geometry.head_pose(faces, IMAGE_SIZE, scheme="ibug68")
    assert pose.yaw.shape == (2,)
    np.testing.assert_allclose(pose.yaw, [20, -40], atol=1e-2)
    # 80-point keypoints convert to 68; the head-pose points are the same.
    tao = np.concatenate([faces[1], np.zeros((12, 2))])
    np.testing.assert_allclose(geometry.head_pose(tao, IMAGE_SIZE), (-40, 10, 5), atol=1e-2)
    # AFLW-21 carries 13 of the 14 points (no lower-lip centre).
    aflw, _ = schemes.convert_keypoints(faces[0], None, "ibug68", "aflw21")
    np.testing.assert_allclose(geometry.head_pose(aflw, IMAGE_SIZE).yaw, 20, atol=1e-2)


def test_head_pose_errors():
    five = np.zeros((5, 2))
    with pytest.raises(ValueError, match="at least 6 of the points.*Received: usable points=0"):
        geometry.head_pose(five, IMAGE_SIZE)
    assert np.isnan(geometry.head_pose(five[None], IMAGE_SIZE).yaw).all()
    with pytest.raises(ValueError, match="`image_size` must be"):
        geometry.head_pose(_project_face(0, 0, 0), (0, 10), scheme="ibug68")
    with pytest.raises(ValueError, match="No keypoint scheme.*Received: num_keypoints=7"):
        geometry.head_pose(np.zeros((7, 2)), IMAGE_SIZE)


def test_head_pose_yaw_follows_aflw2000_3d_labels(shared_data):
    """Yaw from the ground-truth fitted points against the set's yaw labels.

    Measured with ``benchmarks/head_pose.py``: mean absolute error 4.8 / 5.8 /
    6.2 degrees in the |yaw| <= 30 / 30-60 / > 60 bins (5.6 over the bins).
    The thresholds leave a margin above that and catch a sign or axis mix-up.
    """
    labels = np.load(shared_data / "aflw2000-3d" / "landmarks.npz")
    yaw = labels["yaw_deg"]
    within = np.abs(yaw) <= 90
    pose = geometry.head_pose(labels["pts68_fitted"][within, :, :2], (450, 450), scheme="ibug68")
    error = np.abs(pose.yaw - yaw[within])
    assert np.corrcoef(pose.yaw, yaw[within])[0, 1] > 0.97
    assert error.mean() < 7.0
    assert error[np.abs(yaw[within]) <= 30].mean() < 6.0


def _eye_points(gap):
    """68 points whose eyes are 30 px wide with lids ``gap`` px apart."""
    points = np.zeros((68, 2))
    for outer, upper_outer, upper_inner, inner, lower_inner, lower_outer, x0, step in (
            (36, 37, 38, 39, 40, 41, 100.0, 1.0), (45, 44, 43, 42, 47, 46, 230.0, -1.0)):
        points[outer] = [x0, 100]
        points[inner] = [x0 + step * 30, 100]
        points[upper_outer] = [x0 + step * 10, 100 - gap / 2]
        points[upper_inner] = [x0 + step * 20, 100 - gap / 2]
        points[lower_outer] = [x0 + step * 10, 100 + gap / 2]
        points[lower_inner] = [x0 + step * 20, 100 + gap / 2]
    return points


def test_eye_aspect_ratio_open_and_closed():
    open_eyes = geometry.eye_aspect_ratio(_eye_points(gap=10.0))
    closed_eyes = geometry.eye_aspect_ratio(_eye_points(gap=1.0))
    np.testing.assert_allclose(open_eyes, [10 / 30, 10 / 30])   # (10 + 10) / (2 * 30)
    np.testing.assert_allclose(closed_eyes, [1 / 30, 1 / 30])
    batch = geometry.eye_aspect_ratio(np.stack([_eye_points(10.0), _eye_points(1.0)]))
    assert batch.shape == (2, 2)
    # WFLW-98 points convert to the same six points per eye.
    wflw, _ = schemes.convert_keypoints(_eye_points(10.0), None, "ibug68", "wflw98")
    wflw = np.nan_to_num(wflw)  # the WFLW points without an iBUG counterpart
    np.testing.assert_allclose(geometry.eye_aspect_ratio(wflw), open_eyes, rtol=1e-5)


# -- fpezoo.coordinates: turns and roll ------------------------------------------------

@pytest.mark.parametrize("turns", [0, 1, 2, 3, -1, 5])
def test_quarter_turn_transform_follows_np_rot90(turns):
    from fpezoo.coordinates import quarter_turn_transform

    image = np.zeros((5, 7), np.uint8)
    image[1, 4] = 1  # pixel (x, y) = (4, 1)
    row, col = np.argwhere(np.rot90(image, turns))[0]
    np.testing.assert_allclose(_apply(quarter_turn_transform(turns, image.shape), np.array([4.0, 1.0])),
                               (col, row))


def test_rotation_transform_turns_clockwise_on_screen_and_roll_measures_it():
    from fpezoo.coordinates import roll_from_eyes, rotation_transform

    matrix = rotation_transform(90, (10.0, 20.0))
    # y points down: a point right of the centre goes below it.
    np.testing.assert_allclose(_apply(matrix, np.array([[10.0, 20.0], [15.0, 20.0]])), [[10, 20], [10, 25]],
                               atol=1e-12)
    left, right = np.array([0.0, 0.0]), np.array([10.0, 0.0])
    for angle in (0.0, 30.0, -75.0, 90.0, 180.0):
        turned = _apply(rotation_transform(angle, (3.0, 4.0)), np.stack([left, right]))
        assert roll_from_eyes(turned[0], turned[1]) == pytest.approx(angle)
    # The sign of HeadPose.roll: positive when the image-right eye is lower.
    assert roll_from_eyes((0.0, 0.0), (10.0, 1.0)) > 0
    face = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 12.0]])  # eyes and mouth of an upright face
    for angle in (0.0, 30.0, -100.0, 180.0):
        left, right, mouth = _apply(rotation_transform(angle, (7.0, -2.0)), face)
        assert (roll_from_eyes(left, right, mouth) - angle + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)
    # A profile: the eye points crowd together on a tilted line; the eyes-mouth axis holds.
    assert roll_from_eyes((0.0, 0.0), (1.0, -3.0), (1.0, 12.0)) == pytest.approx(-np.degrees(np.arctan2(0.5, 13.5)))
