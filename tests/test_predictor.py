"""Tests of fpezoo.predictor and fpezoo.imageio.

Geometry is tested with a "dot finder": a landmark model whose keypoint is the
brightest pixel of each input channel (fpezoo.layers.HeatmapArgmax applied to
the image itself). Drawing a bright dot in a photo and asking the predictor for
its keypoint checks the whole chain (loading, colour order, crop, resize,
batching, inverse transform) against a known answer, without trained weights.
"""

import json
import pathlib

import keras
import numpy as np
import pytest
from PIL import Image

from fpezoo import imageio
from fpezoo.detection import Detection
from fpezoo.layers import HeatmapArgmax
from fpezoo.models.common import LandmarkModel
from fpezoo.predictor import FaceTracker, LandmarkDetector, draw_faces
from fpezoo.runtime import default_model_name

ASTRONAUT = pathlib.Path(imageio.__file__).parent / "assets" / "astronaut.png"


def dot_finder(channels=1, size=64):
    """A LandmarkModel whose keypoint k is the brightest pixel of channel k."""
    images = keras.Input((size, size, channels), name="images")
    keypoints, confidence = HeatmapArgmax(name="keypoint_head")(images)
    return LandmarkModel(images, [keypoints, confidence], name="dot_finder")


def draw_dot(image, x, y, color=(255, 255, 255), radius=6.0):
    """A cone-shaped dot peaking on pixel (x, y) (pixel-centre convention)."""
    rows, cols = np.ogrid[:image.shape[0], :image.shape[1]]
    weight = np.clip(1 - np.hypot(cols - x, rows - y) / radius, 0, 1)[..., None]
    image[:] = (image * (1 - weight) + np.asarray(color) * weight).astype(image.dtype)
    return image


class FixedDetector:
    """Returns the same boxes for every image and counts its calls."""

    def __init__(self, boxes):
        self.boxes = boxes
        self.calls = 0
        self.shapes = []

    def detect(self, image_rgb):
        self.calls += 1
        self.shapes.append(image_rgb.shape)
        return [Detection(box, 0.9) for box in self.boxes]


@pytest.fixture(scope="module")
def gray_predictor():
    return LandmarkDetector(model=dot_finder(), detector=None, enlarge=1.0)


def assert_near(point, expected, tolerance):
    assert np.hypot(*(np.asarray(point) - expected)) <= tolerance, (point, expected)


# -- image loading ---------------------------------------------------------------

def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Image file not found. Received: path="):
        imageio.load_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("content, message", [
    (b"", "empty \\(0 bytes\\)"),
    (b"this is a text file, not a JPEG\n" * 3, "not an image"),
])
def test_unreadable_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(imageio.ImageReadError, match=f"{message}.*Received: path=.*photo.jpg"):
        imageio.load_image(path)


def test_truncated_jpeg_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.open(ASTRONAUT).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(imageio.ImageReadError, match="truncated or corrupt.*Received: path="):
        imageio.load_image(path)


def test_oversized_file_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # one colour: a few kB on disk
    with pytest.raises(imageio.ImageReadError, match="20000x20000.*above the limit"):
        imageio.load_image(path, max_pixels=100_000_000)


def test_arrays_of_every_layout_become_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imageio.load_image(rgb), rgb)
    np.testing.assert_array_equal(imageio.load_image(rgb[..., ::-1], bgr=True), rgb)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(imageio.load_image(rgba), rgb)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(imageio.load_image(gray), np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(imageio.load_image(rgb.astype("float32")), rgb)
    with pytest.raises(ValueError, match="Received: image.shape=\\(5, 7, 2\\)"):
        imageio.load_image(rgb[..., :2])
    with pytest.raises(TypeError, match="Received: image.dtype=int64"):
        imageio.load_image(rgb.astype("int64"))


def test_exif_orientation_is_honoured(tmp_path):
    # A 60x40 (w x h) picture stored sideways: EXIF orientation 6 = rotate 90 clockwise to view.
    upright = draw_dot(np.zeros((40, 60, 3), np.uint8), 10, 5)
    stored = np.rot90(upright, k=1)  # what a camera writes before the tag
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    loaded = imageio.load_image(path)
    assert loaded.shape == (40, 60, 3)
    rows, cols = np.nonzero(loaded[..., 0] > 128)
    assert_near((cols.mean(), rows.mean()), (10, 5), 1.0)


# -- geometry ----------------------------------------------------------------------

@pytest.mark.parametrize("shape, dot", [((64, 64), (20, 40)), ((90, 150), (120, 30)), ((200, 70), (35, 180))])
def test_whole_image_crop_maps_keypoints_back(gray_predictor, shape, dot):
    image = draw_dot(np.zeros(shape + (3,), np.uint8), *dot)
    (face,) = gray_predictor.predict(image)
    scale = max(shape) / 64  # image pixels per crop pixel
    assert face.box == (0.0, 0.0, float(shape[1]), float(shape[0]))
    assert_near(face.keypoints[0], dot, 0.8 * scale)
    assert face.keypoints.dtype == np.float32 and face.visibility.tolist() == [True]


def test_given_boxes_even_partly_outside_the_image(gray_predictor):
    image = draw_dot(np.zeros((120, 160, 3), np.uint8), 10, 100)
    boxes = [(-30, 70, 40, 140), (5, 90, 25, 110), (100, 0, 150, 50), (-90, -80, -20, -10)]
    faces = gray_predictor.predict(image, boxes=boxes)
    assert [f.box for f in faces] == [tuple(map(float, b)) for b in boxes]
    assert_near(faces[0].keypoints[0], (10, 100), 1.5)
    assert_near(faces[1].keypoints[0], (10, 100), 0.8)
    assert faces[2].confidence[0] == 0  # no dot in that box
    # A box wholly outside: its keypoint is marked not visible, not an error.
    assert faces[3].visibility.tolist() == [False] and np.isfinite(faces[3].keypoints).all()


def test_rgb_and_bgr_models_get_their_channel_order():
    image = np.zeros((64, 64, 3), np.uint8)
    draw_dot(image, 12, 20, color=(255, 0, 0))   # red
    draw_dot(image, 50, 44, color=(0, 0, 255))   # blue
    for color, red_index in (("rgb", 0), ("bgr", 2)):
        predictor = LandmarkDetector(model=dot_finder(channels=3), detector=None, enlarge=1.0,
                                     input_color=color)
        (face,) = predictor.predict(image)
        assert_near(face.keypoints[red_index], (12, 20), 0.8)
        assert_near(face.keypoints[2 - red_index], (50, 44), 0.8)
        # The same picture as an OpenCV BGR array gives the same answer.
        (face_from_bgr,) = predictor.predict(image[..., ::-1].copy(), bgr=True)
        np.testing.assert_allclose(face_from_bgr.keypoints, face.keypoints)


def test_grayscale_and_rgba_inputs(gray_predictor):
    gray = draw_dot(np.zeros((64, 64, 1), np.uint8), 30, 9, color=(255,))[..., 0]
    (face,) = gray_predictor.predict(gray)
    assert_near(face.keypoints[0], (30, 9), 0.8)
    rgba = np.concatenate([np.stack([gray] * 3, -1), np.full((64, 64, 1), 255, np.uint8)], -1)
    (face,) = gray_predictor.predict(rgba)
    assert_near(face.keypoints[0], (30, 9), 0.8)


def test_batches_of_images_keep_their_order():
    detector = FixedDetector([(0, 0, 50, 50), (50, 0, 100, 50)])
    predictor = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.0, batch_size=3)
    dots = [(10, 20), (30, 12), (25, 40)]
    images = [draw_dot(np.zeros((60, 100, 3), np.uint8), *dot) for dot in dots]
    results = predictor.predict(images)
    assert detector.calls == 3 and [len(faces) for faces in results] == [2, 2, 2]
    for faces, dot in zip(results, dots):
        assert_near(faces[0].keypoints[0], dot, 0.8)
        assert faces[0].score == pytest.approx(0.9)


def test_huge_image_detects_on_a_copy_and_crops_the_full_resolution():
    # np.zeros is lazily allocated: only the pages touched use memory.
    huge = np.zeros((20000, 20000, 3), np.uint8)
    draw_dot(huge[14900:15100, 12245:12445], 100, 100)  # peak at (12345, 15000)
    # The detector sees a 1280x1280 copy: its box is in that copy's pixels.
    detector = FixedDetector([tuple(v * 1280 / 20000 for v in (12300, 14950, 12400, 15050))])
    predictor = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.0)
    (face,) = predictor.predict(huge)
    assert detector.shapes == [(1280, 1280, 3)]
    np.testing.assert_allclose(face.box, (12300, 14950, 12400, 15050), rtol=1e-6)
    assert_near(face.keypoints[0], (12345, 15000), 1.5)


def test_crop_is_the_training_crop_of_the_image_in_the_model_colour(gray_predictor):
    """As the training pipeline and fpezoo evaluate: the photo in the model's colour, then the crop."""
    import cv2

    from fpezoo.coordinates import crop_face

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    box = (250.0, 10.0, 330.0, 70.0)
    crop, transform = gray_predictor.crop(image, box)
    expected, direct_transform = crop_face(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), box, (64, 64), enlarge=1.0)
    np.testing.assert_allclose(transform, direct_transform, atol=1e-6)
    assert crop.shape == (64, 64, 1) and crop.dtype == np.float32
    assert np.abs(crop[..., 0] - expected).max() <= 1  # bilinear rounding only


def test_crop_turned_by_the_roll_is_the_upright_crop(gray_predictor):
    import cv2

    from fpezoo.coordinates import quarter_turn_transform

    noise = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (0, 0), 2.0)
    box = (50.0, 30.0, 110.0, 80.0)
    upright, _ = gray_predictor.crop(image, box)
    # The photo turned 90 degrees clockwise: the face's roll is +90.
    turned = np.ascontiguousarray(np.rot90(image, -1))
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - 0.5  # pixel-centre units
    moved = quarter_turn_transform(-1, image.shape[:2]) @ np.append(centre, 1.0) + 0.5
    half = np.array([box[2] - box[0], box[3] - box[1]]) / 2
    turned_box = (*(moved - half), *(moved + half))
    crop, transform = gray_predictor.crop(turned, turned_box, roll=90.0)
    np.testing.assert_allclose(crop, upright, atol=1e-3)
    assert np.abs(crop - gray_predictor.crop(turned, turned_box)[0]).mean() > 4  # not upright without the roll
    # The transform maps the turned image's pixels onto the crop's.
    from fpezoo.coordinates import transform_points

    np.testing.assert_allclose(transform_points(moved - 0.5, transform), (31.5, 31.5), atol=1e-9)


def portrait_only(height, width, x, y):
    """A face only in images taller than wide (as a detector finds faces only about upright)."""
    return 0.8 if height > width else None


class EyesDetector:
    """Finds a 'face' around the image's brightest pixel, with eye points turned by ``roll``.

    ``score(height, width, x, y)`` gives the face's score in an image of that
    size with the dot at ``(x, y)``, or None for no face.
    """

    def __init__(self, roll=0.0, score=lambda height, width, x, y: 0.8):
        self.roll = roll
        self.score = score
        self.shapes = []

    def detect(self, image_rgb):
        self.shapes.append(image_rgb.shape)
        y, x = np.unravel_index(np.argmax(image_rgb[..., 0]), image_rgb.shape[:2])
        score = self.score(*image_rgb.shape[:2], x, y)
        if score is None:
            return []
        angle = np.radians(self.roll)
        eye = 8 * np.array([np.cos(angle), np.sin(angle)])
        points = np.array([(x, y) - eye, (x, y) + eye], dtype="float32")
        return [Detection((x - 15.0, y - 15.0, x + 16.0, y + 16.0), score, points)]


@pytest.mark.parametrize("roll", [45.0, -120.0, 180.0])
def test_crops_turn_by_the_detector_eye_roll_and_points_map_back(roll):
    image = draw_dot(np.zeros((90, 130, 3), np.uint8), 71, 40)
    predictor = LandmarkDetector(model=dot_finder(), detector=EyesDetector(roll), enlarge=1.5)
    (face,) = predictor.predict(image)
    assert face.roll == pytest.approx(roll, abs=1e-4)
    assert_near(face.keypoints[0], (71, 40), 1.2)
    crop, _ = predictor.crop(image, (56.0, 25.0, 87.0, 56.0), roll=roll)
    assert_near(np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2]), (31.5, 31.5), 0.8)  # mid-crop
    off = LandmarkDetector(model=dot_finder(), detector=EyesDetector(roll), enlarge=1.5, rotate_crops=False)
    (face,) = off.predict(image)
    assert face.roll == 0.0
    assert_near(face.keypoints[0], (71, 40), 1.2)


def test_rotations_search_finds_a_face_only_seen_when_the_image_is_turned():
    image = draw_dot(np.zeros((60, 100, 3), np.uint8), 70, 20)
    detector = EyesDetector(score=portrait_only)
    predictor = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.5)
    (face,) = predictor.predict(image)
    # Upright first, then a quarter turn counter-clockwise: the face lay turned clockwise.
    assert detector.shapes == [(60, 100, 3), (100, 60, 3)]
    assert face.roll == pytest.approx(90.0)
    x_min, y_min, x_max, y_max = face.box
    assert x_min < 70 < x_max and y_min < 20 < y_max and x_max - x_min == pytest.approx(31)
    np.testing.assert_allclose(face.detector_points, [[70, 12], [70, 28]], atol=1e-4)
    assert_near(face.keypoints[0], (70, 20), 1.2)
    detector.shapes.clear()
    assert predictor.detect(image, rotations="off") == [] and len(detector.shapes) == 1
    no_search = LandmarkDetector(model=dot_finder(), detector=EyesDetector(score=portrait_only), rotations=False)
    assert no_search.predict(image) == []
    faceless = EyesDetector(score=portrait_only)
    LandmarkDetector(model=dot_finder(), detector=faceless).predict(np.zeros((50, 50, 3), np.uint8))
    assert len(faceless.shapes) == 4  # upright and three turns
    with pytest.raises(ValueError, match="Received: rotations='sideways'"):
        LandmarkDetector(model=dot_finder(), detector=faceless, rotations="sideways")


def test_best_rotation_keeps_each_face_in_the_turn_it_scores_highest():
    # Found in every turn (eye points level in each), scored highest in a portrait
    # image with the dot in its upper half: the first quarter turn (counter-clockwise).
    image = draw_dot(np.zeros((60, 100, 3), np.uint8), 70, 20)
    detector = EyesDetector(score=lambda height, width, x, y: 0.5 + 0.2 * (height > width) + 0.2 * (y < height / 2))
    predictor = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.5, rotations="best")
    (face,) = predictor.predict(image)
    assert len(detector.shapes) == 4
    assert face.score == pytest.approx(0.9) and face.roll == pytest.approx(90.0)
    assert_near(face.keypoints[0], (70, 20), 1.2)
    assert predictor.detect(image, rotations="off")[0].score == pytest.approx(0.7)
    detector.upright_score = 0.7  # a face this sure upright is not searched turned
    detector.shapes.clear()
    (face,) = predictor.predict(image)
    assert len(detector.shapes) == 1 and face.roll == pytest.approx(0.0)


def test_image_without_faces_gives_an_empty_list():
    predictor = LandmarkDetector(model=dot_finder(), detector=FixedDetector([]), enlarge=1.0)
    assert predictor.predict(np.zeros((50, 50, 3), np.uint8)) == []
    assert predictor.predict([np.zeros((50, 50, 3), np.uint8)] * 2) == [[], []]


def test_one_pixel_image_and_tiny_face(gray_predictor):
    (face,) = gray_predictor.predict(np.full((1, 1, 3), 200, np.uint8))
    assert face.keypoints.shape == (1, 2) and np.all(np.isfinite(face.keypoints))
    image = draw_dot(np.zeros((100, 100, 3), np.uint8), 51, 52, radius=1.0)
    (face,) = gray_predictor.predict(image, boxes=[(48, 49, 55, 56)])  # a 7-pixel face
    assert_near(face.keypoints[0], (51, 52), 0.7)


def test_bad_arguments_are_clear_errors(gray_predictor):
    with pytest.raises(ValueError, match="Received: box="):
        gray_predictor.predict(np.zeros((10, 10, 3), np.uint8), boxes=[(5, 5, 2, 8)])
    with pytest.raises(ValueError, match="one list of boxes per image"):
        gray_predictor.predict([np.zeros((10, 10, 3), np.uint8)] * 2, boxes=[[(0, 0, 5, 5)]])
    with pytest.raises(TypeError, match="Received: model=42"):
        LandmarkDetector(model=42)
    with pytest.raises(ValueError, match="Received: input_color='rgb'"):
        LandmarkDetector(model=dot_finder(), detector=None, input_color="rgb")
    with pytest.raises(FileNotFoundError, match="Received: path="):
        gray_predictor.predict("no/such/photo.png")


def test_no_registered_weights_means_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FPEZOO_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(LookupError, match="No trained weights are registered"):
        default_model_name()
    with pytest.raises(LookupError, match="Received: model=None"):
        LandmarkDetector()


# -- tracking ----------------------------------------------------------------------

def test_tracker_follows_landmarks_and_redetects_when_confidence_drops():
    detector = FixedDetector([(20, 20, 60, 60)])
    predictor = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.5)
    tracker = FaceTracker(predictor, redetect_ratio=0.5, redetect_interval=0)
    path = [(40 + 3 * step, 40 + 2 * step) for step in range(8)]  # leaves the detector's box
    for x, y in path:
        (face,) = tracker.update(draw_dot(np.zeros((120, 120, 3), np.uint8), x, y))
        assert_near(face.keypoints[0], (x, y), 1.2)
    assert detector.calls == 1
    tracker.update(np.zeros((120, 120, 3), np.uint8))  # dot gone: confidence 0
    assert detector.calls == 2


# -- real models, random weights -----------------------------------------------------

def test_random_fpenet_on_the_bundled_photo_with_mtcnn():
    pytest.importorskip("mtcnn")
    from fpezoo.models.fpenet import FPENet

    predictor = LandmarkDetector(model=FPENet(num_keypoints=68, width=8), detector="mtcnn")
    (face,) = predictor.predict(str(ASTRONAUT))
    assert face.keypoints.shape == (68, 2) and face.confidence.shape == (68,)
    assert face.detector_points.shape == (5, 2) and face.scheme in (None, "ibug68")
    # Soft-argmax keeps every keypoint inside the crop around the face.
    x_min, y_min, x_max, y_max = face.box
    side = max(x_max - x_min, y_max - y_min) * predictor.enlarge * 1.6
    centre = np.array([(x_min + x_max) / 2, (y_min + y_max) / 2])
    assert np.all(np.abs(face.keypoints - centre) <= side / 2)
    json.dumps(face.to_dict())
    drawn = draw_faces(np.asarray(Image.open(ASTRONAUT).convert("RGB")), [face])
    assert drawn.shape == (512, 512, 3) and drawn.dtype == np.uint8


def test_tiny_faces_with_a_real_detector_are_found_or_skipped_not_errors():
    pytest.importorskip("mtcnn")
    canvas = np.full((400, 400, 3), 90, np.uint8)
    photo = Image.open(ASTRONAUT).convert("RGB")
    for size, corner in ((40, (20, 20)), (12, (300, 300))):  # faces of about 10 and 3 pixels
        canvas[corner[1]:corner[1] + size, corner[0]:corner[0] + size] = np.asarray(photo.resize((size, size)))
    predictor = LandmarkDetector(model=dot_finder(), detector="mtcnn")
    faces = predictor.predict(canvas)
    assert isinstance(faces, list)
    for face in faces:
        assert np.all(np.isfinite(face.keypoints)) and face.keypoints.shape == (1, 2)


def test_litert_backend_matches_keras():
    pytest.importorskip("ai_edge_litert")
    from fpezoo.models.fpenet import FPENet

    model = FPENet(num_keypoints=68, width=8)
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    boxes = [(180, 80, 270, 180), (0, 0, 200, 150), (150, 60, 300, 230)]
    keras_faces = LandmarkDetector(model=model, detector=None, batch_size=2, roll_search=False).predict(image, boxes=boxes)
    litert = LandmarkDetector(model=model, detector=None, batch_size=2, backend="litert", roll_search=False)
    for keras_face, litert_face in zip(keras_faces, litert.predict(image, boxes=boxes)):
        np.testing.assert_allclose(litert_face.keypoints, keras_face.keypoints, atol=1e-2)
        np.testing.assert_allclose(litert_face.confidence, keras_face.confidence, atol=1e-4)
    with pytest.raises(ValueError, match="Received: backend='onnx'"):
        LandmarkDetector(model=model, detector=None, backend="onnx")


def test_auto_backend_runs_registered_weights_with_litert():
    pytest.importorskip("ai_edge_litert")
    from fpezoo.models.fpenet import FPENet

    registered = LandmarkDetector("retail5_mtfl", detector=None)
    assert registered.backend == "litert"
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    keras_faces = LandmarkDetector("retail5_mtfl", detector=None, backend="keras").predict(image)
    # 2e-3 px of the 48x48 crop, magnified about 11 times in the whole image.
    scale = image.shape[0] / registered.input_size[0]
    np.testing.assert_allclose(registered.predict(image)[0].keypoints, keras_faces[0].keypoints, atol=2e-3 * scale)
    assert LandmarkDetector(FPENet(num_keypoints=5, width=4), detector=None).backend == "keras"


def test_flip_test_averages_the_face_and_its_mirror_image():
    from fpezoo import schemes
    from fpezoo.models.fpenet import FPENet

    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    box = [(180, 80, 280, 200)]  # the face; box edges mirror as x -> width - x
    mirrored_box = [(image.shape[1] - box[0][2], box[0][1], image.shape[1] - box[0][0], box[0][3])]
    plain = LandmarkDetector("fpenet68_w32", detector=None, backend="keras", roll_search=False)
    direct = plain.predict(image, boxes=box)[0]
    mirrored = plain.predict(np.ascontiguousarray(image[:, ::-1]), boxes=mirrored_box)[0]
    mirrored_back, _ = schemes.flip_keypoints(mirrored.keypoints, None, "ibug68", image.shape[1])
    averaged = LandmarkDetector("fpenet68_w32", detector=None, backend="keras", flip_test=True,
                                roll_search=False)
    face = averaged.predict(image, boxes=box)[0]
    assert np.abs(direct.keypoints - mirrored_back).max() > 0.1, "the two views should differ"
    np.testing.assert_allclose(face.keypoints, (direct.keypoints + mirrored_back) / 2, atol=0.05)
    with pytest.raises(ValueError, match="Received: scheme=None, num_keypoints=7"):
        LandmarkDetector(FPENet(num_keypoints=7, width=4), detector=None, flip_test=True)


def test_one_face_found_in_several_turns_keeps_the_most_confident_landmarks():
    from fpezoo.predictor import Face, _most_likely_faces

    def face(box, score, confidence):
        return Face(box, score, np.zeros((2, 2), "float32"), np.full(2, confidence, "float32"),
                    np.ones(2, bool))

    upside_down = face((10, 10, 50, 50), 0.9, 0.2)  # the detector's favourite, doubtful landmarks
    upright = face((12, 8, 52, 49), 0.8, 0.5)
    other = face((100, 10, 140, 50), 0.6, 0.4)  # another face
    assert _most_likely_faces([upside_down, other, upright]) == [upright, other]
    assert _most_likely_faces([other]) == [other]


@pytest.mark.data
@pytest.mark.parametrize("angle", [90, 45, 180])
def test_turned_aflw2000_photos_give_the_upright_landmarks(shared_data, angle):
    import cv2

    from fpezoo.coordinates import invert_transform, transform_points

    labels = np.load(shared_data / "aflw2000-3d" / "landmarks.npz")
    predictor = LandmarkDetector("fpenet68_w32")
    frontal = [i for i in range(120) if abs(labels["yaw_deg"][i]) < 30][:12]
    errors = {}
    for index in frontal:
        photo = np.asarray(Image.open(shared_data / "aflw2000-3d" / "images" / str(labels["names"][index])))
        truth = labels["pts68_fitted"][index, :, :2]
        norm = np.sqrt(np.prod(truth.max(axis=0) - truth.min(axis=0)))  # 3DDFA normalisation
        # Turned counter-clockwise on screen about the centre (corners cut off, the face stays in).
        matrix = cv2.getRotationMatrix2D(((photo.shape[1] - 1) / 2, (photo.shape[0] - 1) / 2), angle, 1.0)
        for turn, image in ((0, photo), (angle, cv2.warpAffine(photo, matrix, photo.shape[1::-1]))):
            faces = predictor.predict(image)
            assert faces, f"no face in image {index} turned by {turn}"
            face = max(faces, key=lambda f: f.score)
            points = face.keypoints if turn == 0 else transform_points(face.keypoints, invert_transform(matrix))
            errors.setdefault(turn, []).append(np.linalg.norm(points - truth, axis=1).mean() / norm)
            if turn:
                assert abs((face.roll + angle + 180) % 360 - 180) < 40, (index, face.roll)  # roll is clockwise
    upright, turned = np.mean(errors[0]), np.mean(errors[angle])
    assert turned < max(1.3 * upright, upright + 0.01), (upright, turned)


@pytest.mark.data
@pytest.mark.parametrize("angle", [100, 180])
def test_given_boxes_of_turned_faces_are_searched_for_their_roll(shared_data, angle):
    """Boxes carry no roll: the roll search finds turned faces as well as upright ones (roll_search='auto')."""
    import cv2

    from fpezoo.coordinates import transform_points
    from fpezoo.data.records import landmark_box

    labels = np.load(shared_data / "aflw2000-3d" / "landmarks.npz")
    searched = LandmarkDetector("fpenet68_w32")
    single = LandmarkDetector("fpenet68_w32", roll_search=False, upright_pass=False)
    frontal = [i for i in range(120) if abs(labels["yaw_deg"][i]) < 30][:12]
    errors = {}
    for index in frontal:
        photo = np.asarray(Image.open(shared_data / "aflw2000-3d" / "images" / str(labels["names"][index])))
        truth = labels["pts68_fitted"][index, :, :2]
        norm = np.sqrt(np.prod(truth.max(axis=0) - truth.min(axis=0)))
        matrix = cv2.getRotationMatrix2D(((photo.shape[1] - 1) / 2, (photo.shape[0] - 1) / 2), angle, 1.0)
        turned_photo, turned_truth = cv2.warpAffine(photo, matrix, photo.shape[1::-1]), transform_points(truth, matrix)
        for key, predictor, image, points in (("upright", searched, photo, truth),
                                              ("turned", searched, turned_photo, turned_truth),
                                              ("turned, one crop", single, turned_photo, turned_truth)):
            (face,) = predictor.predict(image, boxes=[landmark_box(points)])
            errors.setdefault(key, []).append(np.linalg.norm(face.keypoints - points, axis=1).mean() / norm)
    upright, turned, one_crop = (np.mean(errors[key]) for key in ("upright", "turned", "turned, one crop"))
    assert upright < 0.05 and turned < 1.15 * upright and one_crop > 1.3 * turned, (upright, turned, one_crop)


def test_a_3d_model_gives_each_face_a_depth():
    from fpezoo.models.fan import FAN

    model = FAN(num_keypoints=68, num_stacks=1, width=8, input_size=128, dimensions=3, depth_blocks=(1, 1, 1, 1),
                depth_width=4)
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    (face,) = LandmarkDetector(model=model, detector=None, roll_search=False).predict(image, boxes=[(180, 80, 280, 200)])
    assert face.keypoints.shape == (68, 2) and face.depth.shape == (68,) and np.isfinite(face.depth).all()
    assert len(face.to_dict()["depth"]) == 68
    (flat,) = LandmarkDetector(model=FAN(num_keypoints=68, num_stacks=1, width=8, input_size=128),
                               detector=None).predict(image, boxes=[(180, 80, 280, 200)])
    assert flat.depth is None and "depth" not in flat.to_dict()
