"""fpezoo.evaluate: the benchmark protocols checked on hand-made cases.

The synthetic benchmarks below are written in the real formats (AFLW2000-3D's
``landmarks.npz`` + images, an MTFL list) and scored with models whose output
is known: constant keypoints in crop pixels. Faces are translated copies of one
template (the crop transform depends on the box size in a half-pixel term, so
all faces share one size), so the protocol's crop maps every face's ground
truth to the same crop points, and the expected NMEs follow by hand.
"""

import hashlib
import json
import math

import cv2
import keras
import numpy as np
import pytest

from fpezoo import evaluation
from fpezoo.data import with_landmark_boxes
from fpezoo.data.records import LandmarkRecord
from fpezoo.models.common import LandmarkModel

INPUT_SIZE = 80


@keras.saving.register_keras_serializable(package="fpezoo_tests")
class ConstantKeypoints(keras.layers.Layer):
    """Outputs fixed keypoints (crop pixels); NaN for an all-black crop (a model failure)."""

    def __init__(self, points, **kwargs):
        super().__init__(**kwargs)
        self.points = np.asarray(points, dtype="float32").tolist()

    def call(self, images):
        brightness = keras.ops.mean(images, axis=(1, 2, 3))
        nan_if_black = keras.ops.sqrt(brightness - 1.0) * 0.0  # NaN where the mean is below 1
        points = keras.ops.convert_to_tensor(np.asarray(self.points, dtype="float32"))
        keypoints = points[None] + nan_if_black[:, None, None]
        confidence = keras.ops.ones_like(keypoints[..., 0])
        return keypoints, confidence

    def get_config(self):
        return {**super().get_config(), "points": self.points}


def constant_model(points):
    images = keras.Input((INPUT_SIZE, INPUT_SIZE, 1))
    keypoints, confidence = ConstantKeypoints(points)(images)
    return LandmarkModel(images, [keypoints, confidence])


SCALE = 1.25


def _template():
    """68 points whose box is 60 x 50 times SCALE, outer eye corners 40 x SCALE apart."""
    rng = np.random.default_rng(3)
    points = rng.uniform([0, 0], [60, 50], (68, 2))
    points[[0, 1]] = [[0, 0], [60, 50]]  # fix the box
    points[36], points[45] = [10, 20], [50, 20]
    return points * SCALE


def write_aflw2000_3d(folder, yaws, black_face=None):
    """A benchmark folder in AFLW2000-3D's format; returns the fitted 68 points."""
    rng = np.random.default_rng(0)
    template = _template()
    (folder / "images").mkdir(parents=True)
    names, fitted = [], []
    for index, _ in enumerate(yaws):
        points = template + rng.uniform(-10, 200 - 60 * SCALE + 10, 2)  # some partly outside
        names.append(f"image{index:05d}.jpg")
        value = 0 if index == black_face else 128
        cv2.imwrite(str(folder / "images" / names[-1]), np.full((200, 200, 3), value, np.uint8))
        fitted.append(np.concatenate([points, np.zeros((68, 1))], axis=1))
    fitted = np.array(fitted)
    np.savez(folder / "landmarks.npz", names=np.array(names), pts68_fitted=fitted,
             pts68_reannotated=fitted[..., :2], pts21=np.full((len(yaws), 21, 2), -1.0),
             yaw_deg=np.array(yaws, dtype="float64"))
    return fitted[..., :2]


def crop_points(enlarge=evaluation.DEFAULT_ENLARGE):
    """Where the protocol's crop puts the template (the same for every face)."""
    from fpezoo.coordinates import crop_transform, transform_points
    from fpezoo.data.records import landmark_box

    template = _template()
    return transform_points(template, crop_transform(landmark_box(template), (INPUT_SIZE,) * 2, enlarge))


YAWS = [5.0, -20.0, 45.0, -50.0, 70.0, -85.0]


def test_aflw2000_3d_perfect_predictions_score_zero(tmp_path):
    write_aflw2000_3d(tmp_path / "aflw", YAWS)
    results = evaluation.evaluate(constant_model(crop_points()), "aflw2000-3d", data=tmp_path / "aflw",
                                  progress=False)
    assert results["faces"] == 6 and results["failed_faces"] == 0
    for key in ("nme_box", "nme_box_reannotated", "nme_inter_ocular"):
        assert results[key]["mean"] == pytest.approx(0.0, abs=1e-6)
        assert results[key]["auc"] == pytest.approx(1.0, abs=1e-5)
        assert results[key]["failure_rate"] == 0.0
    assert [b["count"] for b in results["nme_box"]["bins"].values()] == [2, 2, 2]
    assert results["region_pixel_error"]["all"] == pytest.approx(0.0, abs=1e-4)


def test_aflw2000_3d_known_shift_gives_the_hand_computed_nme(tmp_path):
    write_aflw2000_3d(tmp_path / "aflw", YAWS)
    shift = 2.0  # crop pixels, along x
    model = constant_model(crop_points() + [shift, 0.0])
    results = evaluation.evaluate(model, "aflw2000-3d", data=tmp_path / "aflw", progress=False,
                                  output=tmp_path / "result.json")
    # One crop pixel is enlarge * 60 * SCALE / 80 image pixels; the box is 60 x 50 times SCALE.
    image_shift = shift * evaluation.DEFAULT_ENLARGE * 60 * SCALE / INPUT_SIZE
    expected_box = image_shift / math.sqrt(60 * 50 * SCALE**2)
    expected_inter_ocular = image_shift / (40 * SCALE)
    assert results["nme_box"]["mean"] == pytest.approx(expected_box, rel=1e-5)
    for label, value in results["nme_box"]["bins"].items():
        assert value["mean"] == pytest.approx(expected_box, rel=1e-5), label
    assert results["nme_inter_ocular"]["mean"] == pytest.approx(expected_inter_ocular, rel=1e-5)
    saved = json.loads((tmp_path / "result.json").read_text())
    np.testing.assert_allclose(saved["per_face"]["nme_box"], expected_box, rtol=1e-5)
    assert saved["primary"] == "nme_box"


def test_a_face_the_model_fails_on_counts_as_a_failure(tmp_path):
    write_aflw2000_3d(tmp_path / "aflw", YAWS, black_face=2)
    results = evaluation.evaluate(constant_model(crop_points()), "aflw2000-3d", data=tmp_path / "aflw",
                                  progress=False)
    assert results["faces"] == 6 and results["failed_faces"] == 1
    assert results["nme_box"]["failure_rate"] == pytest.approx(1 / 6)
    assert results["nme_box"]["auc"] == pytest.approx(5 / 6, abs=1e-5)
    assert math.isinf(results["nme_box"]["mean"])  # counted, not skipped
    assert math.isinf(results["per_face"]["nme_box"][2])
    assert results["nme_box"]["bins"]["0-30"]["mean"] == pytest.approx(0.0, abs=1e-6)


def write_mtfl(folder, points):
    """An MTFL list of 80x80 grey images, every face labelled with ``points``."""
    folder.mkdir(parents=True)
    lines = []
    for index in range(4):
        cv2.imwrite(str(folder / f"face{index}.jpg"), np.full((80, 80, 3), 128, np.uint8))
        values = " ".join(f"{v:g}" for v in np.concatenate([points[:, 0], points[:, 1]]))
        lines.append(f"face{index}.jpg {values}")
    (folder / "test.txt").write_text("\n".join(lines) + "\n")
    return folder / "test.txt"


MTFL_POINTS = np.array([[30.0, 35.0], [50.0, 35.0], [40.0, 45.0], [32.0, 55.0], [48.0, 55.0]])


def test_mtfl_nme_by_eye_centres(tmp_path):
    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    # Loose crops are taken whole: 80x80 -> 80x80 is the identity.
    perfect = evaluation.evaluate(constant_model(MTFL_POINTS), "mtfl", data=list_file, progress=False)
    assert perfect["nme_eye_centres"]["mean"] == pytest.approx(0.0, abs=1e-6)
    shifted = evaluation.evaluate(constant_model(MTFL_POINTS + [0.0, 3.0]), "mtfl", data=list_file,
                                  progress=False)
    assert shifted["faces"] == 4
    assert shifted["nme_eye_centres"]["mean"] == pytest.approx(3.0 / 20.0, rel=1e-5)
    assert shifted["nme_eye_centres"]["failure_rate"] == 1.0  # 0.15 > 0.1


def test_landmark_boxes_are_the_labels_point_boxes():
    from fpezoo.data.records import LandmarkRecord

    five = LandmarkRecord(np.zeros((80, 80, 3), np.uint8), MTFL_POINTS, np.ones(5), None,
                          "five_point", "test")
    aflw = np.full((21, 2), np.nan)
    aflw[[7, 10, 14, 17, 19]] = MTFL_POINTS + 100.0  # eye centres, nose tip, mouth corners
    visible = np.isfinite(aflw[:, 0]).astype("float32")
    converted = LandmarkRecord(np.zeros((200, 200, 3), np.uint8), aflw, visible, None, "aflw21", "test")
    visible = visible.copy()
    visible[14] = 0.0  # no nose tip: no full five-point box
    aflw[14] = np.nan
    incomplete = LandmarkRecord(np.zeros((200, 200, 3), np.uint8), aflw, visible, None, "aflw21", "test")
    framed, dropped = with_landmark_boxes([five, incomplete, converted], "five_point")
    assert dropped == 1 and len(framed) == 2
    assert framed[0].box == (30.0, 35.0, 50.0, 55.0)
    assert framed[1].box == (130.0, 135.0, 150.0, 155.0)
    assert framed[1].scheme == "five_point"
    np.testing.assert_allclose(framed[1].keypoints, MTFL_POINTS + 100.0)


def test_mtfl_landmarks_box_crops_the_enlarged_label_box(tmp_path):
    from fpezoo import cli

    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    # The labels' box is (30, 35)-(50, 55); enlarge 2.0 crops the square of side 40 around
    # its centre (40, 45): corners (20, 25)-(60, 65), resized 2x to 80x80 (pixel centres).
    in_crop = (MTFL_POINTS - [20.0, 25.0] + 0.5) * 2.0 - 0.5
    perfect = evaluation.evaluate(constant_model(in_crop), "mtfl", data=list_file, enlarge=2.0,
                                  box="landmarks", progress=False)
    assert perfect["crop"]["box"] == "landmarks" and perfect["crop"]["enlarge"] == 2.0
    assert perfect["nme_eye_centres"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # 2 crop pixels are 1 image pixel; the eye centres are 20 px apart.
    model_path = tmp_path / "shifted.keras"
    constant_model(in_crop + [0.0, 2.0]).save(model_path)
    assert cli.main(["evaluate", str(model_path), "--benchmark", "mtfl", "--data", str(list_file),
                     "--box", "landmarks", "--enlarge", "2", "--out", str(tmp_path / "box.json"),
                     "--no-progress"]) == 0
    assert json.loads((tmp_path / "box.json").read_text())["nme_eye_centres"]["mean"] == pytest.approx(
        1.0 / 20.0, rel=1e-5)
    # The same model with the whole-image framing: the default for an unregistered model.
    whole = evaluation.evaluate(str(model_path), "mtfl", data=list_file, progress=False)
    assert whole["crop"]["box"] == "image"
    expected = np.linalg.norm(in_crop + [0.0, 2.0] - MTFL_POINTS, axis=1).mean() / 20.0
    assert whole["nme_eye_centres"]["mean"] == pytest.approx(expected, rel=1e-5)


def _runner(enlarge, scheme):
    """A stand-in for a model runner with a registered crop (or none: enlarge None)."""
    import types

    return types.SimpleNamespace(spec=types.SimpleNamespace(enlarge=enlarge, scheme=scheme))


def test_crop_framing_precedence():
    five_point, ibug68, unregistered = _runner(2.0, "five_point"), _runner(1.41, "ibug68"), _runner(None, None)
    # The registered enlarge wins over the default; an explicit one wins over both.
    assert evaluation.crop_framing(ibug68, "aflw2000-3d") == (1.41, None)
    assert evaluation.crop_framing(ibug68, "aflw2000-3d", enlarge=1.6) == (1.6, None)
    assert evaluation.crop_framing(unregistered, "aflw2000-3d") == (evaluation.DEFAULT_ENLARGE, None)
    assert evaluation.crop_framing(unregistered, "records", enlarge=1.2) == (1.2, None)
    # MTFL: a registered five-point model is framed as trained, from its five points' box.
    assert evaluation.crop_framing(five_point, "mtfl") == (2.0, "landmarks")
    assert evaluation.crop_framing(five_point, "mtfl", box="image") == (2.0, "image")
    assert evaluation.crop_framing(five_point, "mtfl", enlarge=1.8) == (1.8, "landmarks")
    assert evaluation.crop_framing(ibug68, "mtfl") == (1.41, "image")
    assert evaluation.crop_framing(unregistered, "mtfl") == (evaluation.DEFAULT_ENLARGE, "image")
    assert evaluation.crop_framing(unregistered, "mtfl", box="landmarks") == (
        evaluation.DEFAULT_ENLARGE, "landmarks")


def test_registered_models_bring_their_crop(tmp_path):
    from fpezoo.weights import registry_entry

    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    retail = evaluation.evaluate("retail5_mtfl", "mtfl", data=list_file, progress=False)
    assert retail["crop"]["enlarge"] == registry_entry("retail5_mtfl")["crop"]["enlarge"]
    assert retail["crop"]["box"] == "landmarks"
    assert retail["weights_sha256"] == registry_entry("retail5_mtfl")["sha256"]
    write_aflw2000_3d(tmp_path / "aflw", YAWS[:2])
    fpenet = evaluation.evaluate("fpenet68_w32", "aflw2000-3d", data=tmp_path / "aflw", progress=False)
    assert fpenet["crop"]["enlarge"] == registry_entry("fpenet68_w32")["crop"]["enlarge"]
    assert "box" not in fpenet["crop"]


def test_jitter_box_stays_within_its_ranges_and_reaches_them():
    rng = np.random.default_rng(0)
    box = (10.0, 20.0, 70.0, 120.0)  # 60 x 100, centre (40, 70)
    moved = np.array([evaluation.jitter_box(box, 0.1, 0.2, rng) for _ in range(2000)])
    centre_x, centre_y = moved[:, [0, 2]].mean(axis=1), moved[:, [1, 3]].mean(axis=1)
    width, height = moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]
    np.testing.assert_allclose(width / 60.0, height / 100.0)  # one zoom for both sides
    for values, low, high in ((centre_x, 34.0, 46.0), (centre_y, 60.0, 80.0), (width / 60.0, 0.8, 1.2)):
        assert low <= values.min() < low + 0.02 * (high - low)
        assert high - 0.02 * (high - low) < values.max() <= high
    assert evaluation.jitter_box(box, 0.0, 0.0, rng) == box


@pytest.mark.parametrize("degrees", [90.0, -37.0, 180.0])
def test_rotated_about_face_turns_image_and_points_together(degrees):
    image = np.zeros((60, 80, 3), dtype="uint8")
    points = np.array([[20.0, 15.0], [50.0, 40.0], [65.0, 10.0]])
    for x, y in points.astype(int):
        image[y, x] = 255
    record = LandmarkRecord(image=image, keypoints=points, visibility=np.ones(3, "float32"),
                            box=(20.0, 10.0, 65.0, 40.0), scheme=None, source="test")
    rotated, matrix, box = evaluation.rotated_about_face(image, record, record.box, degrees)
    turned = points @ matrix[:, :2].T + matrix[:, 2]
    for x, y in turned:  # each bright pixel lands where the matrix sends its point, inside the canvas
        assert rotated[int(round(y)), int(round(x))].max() > 60
    np.testing.assert_allclose(box, (*turned.min(axis=0), *turned.max(axis=0)))
    height, width = rotated.shape[:2]
    assert rotated.dtype == image.dtype and rotated.shape[2] == 3
    side = {90.0: (80, 60), 180.0: (60, 80)}.get(abs(degrees))
    if side is not None:  # a quarter or half turn swaps or keeps the sides
        assert (height, width) == side


def test_rotation_turns_the_images_reproducibly(tmp_path):
    write_aflw2000_3d(tmp_path / "aflw", YAWS)
    model = constant_model(crop_points())

    def score(**kwargs):
        return evaluation.evaluate(model, "aflw2000-3d", data=tmp_path / "aflw", progress=False, **kwargs)

    # A model that always answers the upright face is right only while the faces stay upright.
    assert score(rotation=1e-6)["nme_box"]["mean"] == pytest.approx(0.0, abs=1e-4)
    turned = score(rotation=180.0, seed=3)
    assert turned["nme_box"]["mean"] > 0.05
    assert turned["crop"]["rotation"] == {"max_deg": 180.0, "seed": 3}
    assert score(rotation=180.0, seed=3)["per_face"]["nme_box"] == turned["per_face"]["nme_box"]
    assert "turned by up to +-180 degrees (seed 3)" in evaluation.format_table(turned)
    with pytest.raises(ValueError, match="Received: rotation=0"):
        score(rotation=0)


def test_box_jitter_moves_the_crops_reproducibly(tmp_path):
    write_aflw2000_3d(tmp_path / "aflw", YAWS)
    model = constant_model(crop_points())

    def score(**kwargs):
        return evaluation.evaluate(model, "aflw2000-3d", data=tmp_path / "aflw", progress=False, **kwargs)

    still = score(box_jitter=(0.0, 0.0))
    assert still["nme_box"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # A pure shift moves every predicted point by the box's move (dx * 60, dy * 50) * SCALE:
    # the per-face NME is at most 0.05 * hypot(60, 50) / sqrt(60 * 50), and not zero.
    shifted = score(box_jitter=(0.05, 0.0), seed=1)
    errors = np.array(shifted["per_face"]["nme_box"])
    assert (errors > 1e-4).all() and (errors <= 0.05 * math.hypot(60, 50) / math.sqrt(3000) + 1e-6).all()
    assert shifted["crop"]["box_jitter"] == {"shift": 0.05, "zoom": 0.0, "seed": 1}
    assert score(box_jitter=(0.05, 0.0), seed=1)["per_face"]["nme_box"] == shifted["per_face"]["nme_box"]
    assert score(box_jitter=(0.05, 0.0), seed=2)["per_face"]["nme_box"] != shifted["per_face"]["nme_box"]
    # A zoom alone scales the prediction about the box centre: the error grows with the zoom.
    zoomed = [score(box_jitter=(0.0, zoom))["nme_box"]["mean"] for zoom in (0.05, 0.2)]
    assert 0.0 < zoomed[0] < zoomed[1]
    with pytest.raises(ValueError, match=r"Received: box_jitter=\(0.05, 1.0\)"):
        score(box_jitter=(0.05, 1.0))
    with pytest.raises(ValueError, match=r"Received: box_jitter=\(0.1,\)"):
        score(box_jitter=(0.1,))


def test_flip_test_averages_mirrored_predictions(tmp_path):
    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    # A constant model predicts the same points on the mirrored crop; flipped back
    # they mirror about the centre, so the average is x -> (x + 79 - x') / 2.
    shifted = MTFL_POINTS + [2.0, 0.0]
    results = evaluation.evaluate(constant_model(shifted), "mtfl", data=list_file, progress=False,
                                  flip_test=True)
    mirrored_back = np.stack([79 - shifted[[1, 0, 2, 4, 3], 0], shifted[[1, 0, 2, 4, 3], 1]], axis=1)
    average = (shifted + mirrored_back) / 2
    expected = np.linalg.norm(average - MTFL_POINTS, axis=1).mean() / 20.0
    assert results["nme_eye_centres"]["mean"] == pytest.approx(expected, rel=1e-5)


def test_keras_file_cli_and_ced_plot(tmp_path, capsys):
    from fpezoo import cli

    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    model_path = tmp_path / "constant.keras"
    constant_model(MTFL_POINTS + [1.0, 0.0]).save(model_path)
    for name, model in (("a", str(model_path)), ("b", constant_model(MTFL_POINTS))):
        evaluation.evaluate(model, "mtfl", data=list_file, progress=False, output=tmp_path / f"{name}.json")
    assert cli.main(["evaluate", str(model_path), "--benchmark", "mtfl", "--data", str(list_file),
                     "--out", str(tmp_path / "cli.json"), "--no-progress"]) == 0
    from_cli = json.loads((tmp_path / "cli.json").read_text())
    assert from_cli["nme_eye_centres"]["mean"] == pytest.approx(0.05)
    assert from_cli["weights_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert f"weights sha256 {from_cli['weights_sha256'][:12]}..." in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["weights_sha256"] is None
    assert cli.main(["evaluate", str(model_path), "--benchmark", "mtfl", "--data", str(list_file),
                     "--box-jitter", "0.1", "0.1", "--seed", "3", "--out", str(tmp_path / "jitter.json"),
                     "--no-progress"]) == 0
    jittered = json.loads((tmp_path / "jitter.json").read_text())
    assert jittered["crop"]["box_jitter"] == {"shift": 0.1, "zoom": 0.1, "seed": 3}
    assert jittered["nme_eye_centres"]["mean"] != pytest.approx(0.05)
    assert "boxes moved by up to 0.1 and scaled by 1 +- 0.1 (seed 3)" in capsys.readouterr().out
    assert cli.main(["evaluate", "--ced", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                     "--out", str(tmp_path / "ced.png")]) == 0
    assert (tmp_path / "ced.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["evaluate", "--ced", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                     "--labels", "first", "second", "--out", str(tmp_path / "labelled.png")]) == 0
    assert (tmp_path / "labelled.png").is_file()
    assert cli.main(["evaluate", "--ced", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                     "--labels", "only one", "--out", str(tmp_path / "bad.png")]) == 2
    assert "one label per --ced file" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="Received: benchmark='300w'"):
        evaluation.evaluate(constant_model(MTFL_POINTS), "300w")
    with pytest.raises(ValueError, match="cannot be scored on ibug68.*Received: scheme='five_point'"):
        write_aflw2000_3d(tmp_path / "aflw", YAWS[:2])
        evaluation.evaluate(constant_model(MTFL_POINTS), "aflw2000-3d", data=tmp_path / "aflw",
                            progress=False)
    with pytest.raises(ValueError, match="Received: box='tight'"):
        evaluation.evaluate(constant_model(MTFL_POINTS), "mtfl", box="tight")
    with pytest.raises(ValueError, match="'mtfl' benchmark only. Received: box='landmarks'"):
        evaluation.evaluate(constant_model(MTFL_POINTS), "aflw2000-3d", box="landmarks")
    with pytest.raises(ValueError, match="Received: enlarge=0"):
        evaluation.evaluate(constant_model(MTFL_POINTS), "mtfl", enlarge=0)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a result file"):
        evaluation.plot_ced([tmp_path / "x.json"], tmp_path / "x.png")


@pytest.mark.slow
def test_onnx_model_scores_like_the_keras_model(tmp_path):
    import tensorflow as tf
    import tf2onnx

    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    import fpezoo

    keras.utils.set_random_seed(0)
    model = fpezoo.FPENet(num_keypoints=5, width=4)
    spec = (tf.TensorSpec((None, INPUT_SIZE, INPUT_SIZE, 1), tf.float32, name="images"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, output_path=str(tmp_path / "m.onnx"))
    keras_results = evaluation.evaluate(model, "mtfl", data=list_file, progress=False)
    onnx_results = evaluation.evaluate(tmp_path / "m.onnx", "mtfl", data=list_file, progress=False)
    np.testing.assert_allclose(onnx_results["per_face"]["nme_eye_centres"],
                               keras_results["per_face"]["nme_eye_centres"], rtol=0, atol=1e-4)


def test_litert_model_scores_like_the_keras_model(tmp_path):
    pytest.importorskip("ai_edge_litert")
    import fpezoo
    from fpezoo.deploy.convert import convert

    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    keras.utils.set_random_seed(0)
    model = fpezoo.FPENet(num_keypoints=5, width=4)
    path = convert(model, tmp_path / "m.tflite", to="litert")
    keras_results = evaluation.evaluate(model, "mtfl", data=list_file, progress=False)
    litert_results = evaluation.evaluate(path, "mtfl", data=list_file, progress=False)
    assert litert_results["model"] == str(path)
    assert litert_results["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    np.testing.assert_allclose(litert_results["per_face"]["nme_eye_centres"],
                               keras_results["per_face"]["nme_eye_centres"], rtol=0, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="Received: model="):
        evaluation.evaluate(tmp_path / "missing.tflite", "mtfl", data=list_file, progress=False)


@pytest.mark.data
def test_aflw2000_3d_real_data_path(shared_data):
    import fpezoo

    results = evaluation.evaluate(fpezoo.FPENet(num_keypoints=68, width=4), "aflw2000-3d",
                                  data=shared_data / "aflw2000-3d", limit=24, progress=False)
    assert results["faces"] == 24 and results["limit"] == 24
    assert sum(b["count"] for b in results["nme_box"]["bins"].values()) == 24
    assert np.isfinite(results["nme_box"]["mean"]) and results["nme_box"]["mean"] > 0


def test_data_dir_prefers_the_environment_then_an_existing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FPEZOO_DATA", str(tmp_path / "elsewhere"))
    assert evaluation.data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("FPEZOO_DATA")
    # An installed wheel: the package is far from the project, run from the project.
    monkeypatch.setattr(evaluation, "__file__", str(tmp_path / "venv" / "lib" / "fpezoo" / "evaluation.py"))
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert evaluation.data_dir() == tmp_path / "shared" / "data"
    # A checkout with the data beside it wins.
    (tmp_path / "venv" / "shared" / "data").mkdir(parents=True)
    assert evaluation.data_dir() == tmp_path / "venv" / "shared" / "data"


def test_reader_options_and_validation_split_of_the_records_benchmark(tmp_path):
    assert evaluation._reader_options(["one_based=false", "scheme=tao80", "limit=3"]) == {
        "one_based": False, "scheme": "tao80", "limit": 3}
    with pytest.raises(ValueError, match="Received: reader_option='image_root'"):
        evaluation._reader_options(["image_root"])
    from fpezoo.data.readers import read_mtfl
    from fpezoo.data.records import in_validation_split

    list_file = write_mtfl(tmp_path / "mtfl", MTFL_POINTS)
    seed = next(seed for seed in range(100)  # a split that holds some of the four faces, not all
                if 0 < sum(in_validation_split(r, 0.5, seed) for r in read_mtfl(list_file)) < 4)
    expected = sum(in_validation_split(record, 0.5, seed) for record in read_mtfl(list_file))
    results = evaluation.evaluate(constant_model(MTFL_POINTS), "records", data=list_file, reader="mtfl",
                                  validation_split=(0.5, seed), progress=False)
    assert results["faces"] == expected and results["crop"]["validation_split"] == [0.5, seed]
