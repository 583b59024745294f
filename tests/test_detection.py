"""Tests of fpezoo.detection: the detector interface, downscaling and real detectors."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from fpezoo import detection

ASTRONAUT = pathlib.Path(detection.__file__).parent / "assets" / "astronaut.png"
# Eileen Collins' face in astronaut.png (512x512): a generous box around it.
ASTRONAUT_FACE_REGION = (140, 40, 320, 240)
ROLL_CALIBRATION = pathlib.Path(__file__).parents[1] / "docs" / "benchmarks" / "detection_roll_calibration.json"


class RecordingDetector:
    """Returns fixed detections (as fractions of the image) and records the image shape."""

    def __init__(self, fractions):
        self.fractions = fractions
        self.shapes = []

    def detect(self, image_rgb):
        self.shapes.append(image_rgb.shape)
        height, width = image_rgb.shape[:2]
        return [((fx0 * width, fy0 * height, fx1 * width, fy1 * height), score)
                for (fx0, fy0, fx1, fy1), score in self.fractions]


@pytest.fixture(scope="module")
def astronaut():
    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))


def test_huge_image_is_detected_on_a_downscaled_copy_and_boxes_map_back():
    # 20000x20000x3 uint8 without allocating 1.2 GB: every pixel is a view of one.
    huge = np.broadcast_to(np.full((1, 1, 3), 90, np.uint8), (20000, 20000, 3))
    fake = RecordingDetector([((0.25, 0.5, 0.5, 0.75), 0.4), ((0.0, 0.0, 0.1, 0.1), 0.9)])
    found = detection.detect_faces(fake, huge, max_side=640)
    assert fake.shapes == [(640, 640, 3)]
    assert [d.score for d in found] == [0.9, 0.4]  # highest score first
    np.testing.assert_allclose(found[1].box, (5000, 10000, 10000, 15000))


def test_downscale_keeps_small_images_and_the_aspect_ratio():
    image = np.zeros((300, 200, 3), np.uint8)
    small, original = detection.downscale_for_detection(image, max_side=400)
    assert small.shape == (300, 200, 3) and original == (300, 200)
    small, original = detection.downscale_for_detection(np.zeros((3000, 1000, 3), np.uint8), 600)
    assert small.shape == (600, 200, 3) and original == (3000, 1000)


def test_detector_points_are_rescaled_with_the_pixel_centre_convention():
    class WithPoints:
        def detect(self, image_rgb):
            return [detection.Detection((0, 0, 10, 10), 1.0, np.array([[0.0, 0.0]] * 5))]

    found = detection.detect_faces(WithPoints(), np.zeros((200, 100, 3), np.uint8), max_side=100)
    # Pixel centre (0, 0) of a 2x-downscaled image is at (0.5, 0.5) of the original.
    np.testing.assert_allclose(found[0].points, [[0.5, 0.5]] * 5)


def test_malformed_detector_output_is_a_clear_error():
    class Broken:
        def detect(self, image_rgb):
            return [(1, 2, 3)]

    with pytest.raises(ValueError, match=r"must return \(box, score\).*Received: detection="):
        detection.detect_faces(Broken(), np.zeros((50, 50, 3), np.uint8))


def test_get_detector_resolves_names_objects_and_none():
    fake = RecordingDetector([])
    assert detection.get_detector(fake) is fake
    assert detection.get_detector(None) is None
    with pytest.raises(ValueError, match="Received: detector='yolo'"):
        detection.get_detector("yolo")
    with pytest.raises(ValueError, match="Received: detector='haar'"):  # removed: OpenCV 5 has no cascades
        detection.get_detector("haar")


def test_landmark_box_calibration():
    box = (100.0, 100.0, 200.0, 300.0)
    assert detection.landmark_box(box, None) == box
    # Centre moves by 0.1 widths / 0.2 heights; width x2, height x0.5.
    np.testing.assert_allclose(detection.landmark_box(box, (0.1, 0.2, 2.0, 0.5)), (60, 190, 260, 290))


def test_fit_landmark_box_calibration_recovers_the_calibration_despite_bad_matches():
    # The worked example above, fitted back: offsets in box widths / heights, sizes as ratios.
    fitted = detection.fit_landmark_box_calibration([(100, 100, 200, 300)], [(60, 190, 260, 290)])
    assert isinstance(fitted, tuple)
    np.testing.assert_allclose(fitted, (0.1, 0.2, 2.0, 0.5))
    rng = np.random.default_rng(0)
    calibration = (0.02, 0.07, 0.93, 0.88)
    corners = rng.uniform(0, 400, (41, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(30, 300, (41, 2))], axis=1)  # not square
    truths = np.array([detection.landmark_box(box, calibration) for box in boxes])
    truths[:8] = truths[:8] * rng.uniform(0.3, 3.0, (8, 4))  # faces matched badly: the medians hold
    np.testing.assert_allclose(detection.fit_landmark_box_calibration(boxes, truths), calibration, atol=1e-9)
    with pytest.raises(ValueError, match=r"Received: detection_boxes.shape=\(2, 4\), landmark_boxes.shape=\(3, 4\)"):
        detection.fit_landmark_box_calibration(boxes[:2], truths[:3])
    with pytest.raises(ValueError, match=r"Received: detection_boxes=\[\[5.0, 0.0, 5.0, 9.0\]\]"):
        detection.fit_landmark_box_calibration([(5, 0, 5, 9)], [(0, 0, 1, 1)])


def test_blazeface_roll_term_is_identity_at_quarter_turns_and_scales_as_fitted_at_45():
    calibration = detection.BlazeFaceDetector.landmark_box_calibration
    upright = calibration[:4]
    box = (100.0, 100.0, 200.0, 300.0)
    for roll in (0.0, 90.0, 180.0, 270.0, -90.0, -180.0):
        assert detection.landmark_box(box, calibration, roll) == detection.landmark_box(box, upright, roll), roll
    # At 45 degrees (and every odd multiple) 1 + g * sin(2 * roll) ** 2 = 1 + g: same centre, sides scaled.
    gain = calibration[4]
    for roll in (45.0, -45.0, 135.0):
        scaled = np.array(detection.landmark_box(box, calibration, roll))
        plain = np.array(detection.landmark_box(box, upright, roll))
        np.testing.assert_allclose(scaled[:2] + scaled[2:], plain[:2] + plain[2:])
        np.testing.assert_allclose(scaled[2:] - scaled[:2], (1 + gain) * (plain[2:] - plain[:2]))
    # The constant is the one fitted on turned training faces (docs/benchmarks/detection_roll_calibration.json).
    assert gain == pytest.approx(json.loads(ROLL_CALIBRATION.read_text())["roll_gain"], abs=5e-4)
    with pytest.raises(ValueError, match=r"Received: calibration=\(0.0, 0.0, 1.0\)"):
        detection.landmark_box(box, (0.0, 0.0, 1.0))


def test_fit_landmark_box_roll_gain_recovers_the_gain_despite_bad_matches():
    rng = np.random.default_rng(0)
    rolls = rng.uniform(-180, 180, 2000)
    # A common bias (1.05) is left to the upright calibration; 10 % of the faces are matched badly.
    ratios = 1.05 * detection.roll_size_factor(rolls, 0.15) * np.exp(rng.normal(0, 0.01, rolls.size))
    ratios[:200] *= rng.uniform(0.3, 3.0, 200)
    gain, bins = detection.fit_landmark_box_roll_gain(rolls, ratios)
    assert gain == pytest.approx(0.15, abs=0.01)
    assert list(bins) == [float(c) for c in range(-45, 45, 5)]
    assert bins[0.0][1] == pytest.approx(1.0, abs=0.01) and bins[-45.0][1] == pytest.approx(1.15, abs=0.01)
    with pytest.raises(ValueError, match=r"Received: rolls between 0.0 and 1.0"):
        detection.fit_landmark_box_roll_gain([0.0, 1.0], [1.0, 1.1])  # one bin
    with pytest.raises(ValueError, match=r"Received: bin_degrees=7"):
        detection.fit_landmark_box_roll_gain(rolls, ratios, bin_degrees=7)


def test_detectors_reject_non_rgb_input():
    with pytest.raises(ValueError, match="Received: image.shape=\\(10, 10\\)"):
        detection.LBPCascadeDetector().detect(np.zeros((10, 10), np.uint8))


def _assert_finds_the_astronaut(detector, image):
    found = detection.detect_faces(detector, image)
    # The best-scoring detection is the face (dlib also scores the suit's patch, weakly).
    assert found, "no face found"
    x0, y0, x1, y1 = found[0].box
    rx0, ry0, rx1, ry1 = ASTRONAUT_FACE_REGION
    assert rx0 <= x0 < x1 <= rx1 and ry0 <= y0 < y1 <= ry1, found[0].box
    return found[0]


def test_mtcnn_finds_the_astronaut_with_five_ordered_points(astronaut):
    pytest.importorskip("mtcnn")
    face = _assert_finds_the_astronaut(detection.MTCNNDetector(), astronaut)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.points
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_dlib_finds_the_astronaut(astronaut):
    pytest.importorskip("dlib")
    _assert_finds_the_astronaut(detection.DlibHOGDetector(), astronaut)


def test_lbp_cascade_finds_the_astronaut_among_false_alarms(astronaut):
    # The cascade has no score and several false alarms here (the benchmark's
    # detections per image say the same): one of its boxes is the face.
    rx0, ry0, rx1, ry1 = ASTRONAUT_FACE_REGION
    found = detection.detect_faces(detection.LBPCascadeDetector(), astronaut)
    assert any(rx0 <= d.box[0] < d.box[2] <= rx1 and ry0 <= d.box[1] < d.box[3] <= ry1 and
               d.box[2] - d.box[0] > 60 for d in found), found


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (120, 160, 3)])
def test_mtcnn_on_tiny_and_faceless_images_returns_nothing(shape):
    pytest.importorskip("mtcnn")
    image = np.full(shape, 128, np.uint8)
    assert detection.MTCNNDetector().detect(image) == []


def test_lbp_cascade_gives_one_box_per_face(astronaut):
    found = detection.LBPCascadeDetector().detect(astronaut)
    boxes = np.array([d.box for d in found])
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert detection.box_iou(boxes[i], boxes[j:j + 1])[0] <= detection.NMS_IOU_THRESHOLD, (boxes[i], boxes[j])
    # skimage's cascade alone returns two overlapping boxes of the astronaut's face.
    unmerged = detection.LBPCascadeDetector(iou_threshold=1.0).detect(astronaut)
    assert len(unmerged) == len(found) + 1


def test_non_max_suppression_keeps_or_averages_each_group():
    boxes = [(0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60), (0, 0, 10, 10.5)]
    scores = [0.6, 0.9, 0.7, 0.3]
    points = np.arange(8, dtype="float32").reshape(4, 1, 2)
    plain = detection.non_max_suppression(boxes, scores, 0.5, points=points)
    assert [d.box for d in plain] == [(1, 1, 11, 11), (50, 50, 60, 60)]
    assert [d.score for d in plain] == [0.9, 0.7]
    np.testing.assert_allclose(plain[0].points, [[2, 3]])
    weighted = detection.non_max_suppression(boxes, scores, 0.5, points=points, weighted=True)
    np.testing.assert_allclose(weighted[0].box, (0.5, 0.5, 10.5, 19.05 / 1.8), atol=1e-6)  # score-weighted mean
    np.testing.assert_allclose(weighted[0].points, [[(0.6 * 0 + 0.9 * 2 + 0.3 * 6) / 1.8,
                                                     (0.6 * 1 + 0.9 * 3 + 0.3 * 7) / 1.8]], atol=1e-5)
    assert weighted[0].score == 0.9 and detection.non_max_suppression([], [], 0.3) == []
    np.testing.assert_allclose(detection.box_iou((0, 0, 10, 10), [(5, 0, 15, 10), (20, 20, 30, 30)]), [1 / 3, 0])
    with pytest.raises(ValueError, match="Received: boxes.shape=\\(2, 4\\), scores.shape=\\(1,\\)"):
        detection.non_max_suppression(boxes[:2], scores[:1], 0.3)


def test_blazeface_finds_the_astronaut_upright_and_turned(astronaut):
    pytest.importorskip("ai_edge_litert")
    from fpezoo.coordinates import roll_from_eyes

    face = _assert_finds_the_astronaut(detection.BlazeFaceDetector(), astronaut)
    assert face.points.shape == (6, 2)
    left_eye, right_eye, nose, mouth = face.points[:4]
    assert left_eye[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < nose[1] < mouth[1]
    assert abs(roll_from_eyes(left_eye, right_eye)) < 15
    # Turned a quarter counter-clockwise, the face lies on its side (roll near -90).
    (turned,) = detection.BlazeFaceDetector().detect(np.ascontiguousarray(np.rot90(astronaut)))
    assert -120 < roll_from_eyes(turned.points[0], turned.points[1]) < -60
    assert detection.BlazeFaceDetector().detect(np.full((200, 300, 3), 90, np.uint8)) == []
    with pytest.raises(ValueError, match="Received: min_score=2"):
        detection.BlazeFaceDetector(min_score=2)


@pytest.mark.data
def test_default_detector_finds_most_aflw2000_faces(shared_data):
    labels = np.load(shared_data / "aflw2000-3d" / "landmarks.npz")
    detector = detection.get_detector("default")
    hits = 0
    for name, points, _yaw in zip(labels["names"][:12], labels["pts68_fitted"][:12], labels["yaw_deg"][:12]):
        image = np.asarray(Image.open(shared_data / "aflw2000-3d" / "images" / str(name)).convert("RGB"))
        centre = points[:, :2].mean(axis=0)
        hits += any(d.box[0] <= centre[0] <= d.box[2] and d.box[1] <= centre[1] <= d.box[3]
                    for d in detection.detect_faces(detector, image))
    # The benchmark measured 0.97 (BlazeFace) on 300 images; 12 images leave room for bad luck.
    assert hits >= 10
