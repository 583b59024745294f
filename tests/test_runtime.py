"""The inference runtime: model sources, runners, the LiteRT cache and the crop -> run -> invert loop."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpezoo import runtime
from fpezoo.coordinates import crop_face, rotation_transform, transform_points


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-40, 600), y=st.floats(-40, 400), side=st.floats(4, 500), size=st.sampled_from([48, 80]),
       enlarge=st.floats(1.0, 2.0))
def test_face_crop_of_a_window_equals_the_crop_of_the_whole_image(x, y, side, size, enlarge):
    """The window is aligned to the warp's pixel blocks, so large photos crop as small ones."""
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    box = (x, y, x + side, y + side * 1.2)
    crop, transform = runtime.face_crop(image, box, (size, size), enlarge)
    whole, whole_transform = crop_face(image, box, (size, size), enlarge)
    np.testing.assert_allclose(transform, whole_transform, atol=1e-9)
    assert np.abs(crop.astype(int) - whole.astype(int)).max() <= 1  # bilinear rounding only


class _PointFinder:
    """A stand-in runner: 'predicts' the five points it was told, through the crop transform."""

    backend = "test"

    def __init__(self, points):
        self.points = points  # image pixels
        self.transforms = []
        self.spec = runtime.ModelSpec("finder", (64, 64), "rgb", 5, scheme="five_point", enlarge=1.5)

    def __call__(self, crops):
        transform = self.transforms.pop(0)
        keypoints = np.repeat(transform_points(self.points, transform)[None], len(crops), 0)
        return keypoints.astype("float32"), np.ones(keypoints.shape[:2], "float32")


def test_upright_pass_recrops_faces_whose_landmarks_are_turned(monkeypatch):
    """A face turned by 120 degrees, cropped upright: the second pass turns its crop by the landmarks' roll."""
    upright = np.array([[40.0, 40.0], [60.0, 40.0], [50.0, 50.0], [42.0, 62.0], [58.0, 62.0]])
    turned = transform_points(upright, rotation_transform(120.0, (50.0, 50.0)))
    finder = _PointFinder(turned)
    crops = []
    original = runtime.face_crop

    def recording_face_crop(*args, **kwargs):
        crop, transform = original(*args, **kwargs)
        finder.transforms.append(transform)
        crops.append(args[4] if len(args) > 4 else kwargs.get("roll", 0.0))
        return crop, transform

    monkeypatch.setattr(runtime, "face_crop", recording_face_crop)
    image = np.zeros((100, 100, 3), np.uint8)
    (single,) = runtime.predict_boxes(finder, [image], [(0, (30.0, 30.0, 70.0, 70.0))], upright_pass=False)
    assert single.roll == 0.0 and crops == [0.0]
    (second,) = runtime.predict_boxes(finder, [image], [(0, (30.0, 30.0, 70.0, 70.0))], upright_pass=True)
    assert crops[1:] == [0.0, pytest.approx(120.0)]  # run upright, then turned by the landmarks' roll
    assert second.roll == pytest.approx(120.0) and (single.model_runs, second.model_runs) == (1, 2)
    np.testing.assert_allclose(second.keypoints, turned, atol=1e-6)
    assert runtime.landmark_roll(turned, "five_point") == pytest.approx(120.0)
    # A face whose landmarks agree with its crop is run once.
    finder.points = upright
    crops.clear()
    runtime.predict_boxes(finder, [image], [(0, (30.0, 30.0, 70.0, 70.0))], upright_pass=True)
    assert crops == [0.0]


class _UprightOnlyFinder:
    """A stand-in model that finds a face only when its crop shows it within 50 degrees of upright.

    Otherwise it 'sees' an upright face that is not there (the template, upright
    in the crop), with low confidence: the failure of real models on
    upside-down and sideways faces, which the roll search must get around.
    """

    backend = "test"

    def __init__(self, points, template):
        self.points, self.template = points, template  # image pixels; crop pixels
        self.transforms = []
        self.spec = runtime.ModelSpec("upright-only", (64, 64), "rgb", 5, scheme="five_point", enlarge=1.5)

    def __call__(self, crops):
        keypoints, confidence = [], []
        for _ in crops:
            seen = transform_points(self.points, self.transforms.pop(0))
            angle = runtime.landmark_roll(seen, "five_point")
            if abs(angle) <= 50.0:
                keypoints.append(seen)
                confidence.append(np.full(5, 1.0 - abs(angle) / 180.0))
            else:
                keypoints.append(self.template)
                confidence.append(np.full(5, 0.3))
        return np.array(keypoints, "float32"), np.array(confidence, "float32")


@pytest.mark.parametrize("degrees", [0.0, 75.0, 120.0, 180.0, -100.0])
def test_roll_search_finds_faces_at_any_angle(monkeypatch, degrees):
    """One crop of a face turned by 120 or 180 degrees gives the phantom; the search finds the face."""
    upright = np.array([[40.0, 40.0], [60.0, 40.0], [50.0, 50.0], [42.0, 62.0], [58.0, 62.0]])
    turned = transform_points(upright, rotation_transform(degrees, (50.0, 50.0)))
    finder = _UprightOnlyFinder(turned, template=upright - 18.0)
    original = runtime.face_crop

    def recording_face_crop(*args, **kwargs):
        crop, transform = original(*args, **kwargs)
        finder.transforms.append(transform)
        return crop, transform

    monkeypatch.setattr(runtime, "face_crop", recording_face_crop)
    image = np.zeros((100, 100, 3), np.uint8)
    box = [(0, (30.0, 30.0, 70.0, 70.0))]
    (single,) = runtime.predict_boxes(finder, [image], box)
    if abs(degrees) > 50.0:
        assert np.abs(single.keypoints - turned).max() > 5.0  # one crop fails
    (searched,) = runtime.predict_boxes(finder, [image], box, roll_search=True, upright_pass=True)
    np.testing.assert_allclose(searched.keypoints, turned, atol=1e-4)
    assert (searched.roll - degrees + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-3)
    assert searched.model_runs == 8
    assert finder.transforms == []  # every crop was run


def test_upright_landmark_box_is_the_box_of_the_points_turned_upright():
    points = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 20.0], [0.0, 20.0]])
    turned = transform_points(points, rotation_transform(90.0, (20.0, 10.0)))
    box = runtime.upright_landmark_box(turned, 90.0)
    assert box[2] - box[0] == pytest.approx(40.0) and box[3] - box[1] == pytest.approx(20.0)
    assert ((box[0] + box[2]) / 2 - 0.5, (box[1] + box[3]) / 2 - 0.5) == (pytest.approx(20.0), pytest.approx(10.0))


def test_model_sources_are_checked():
    with pytest.raises(ValueError, match="Received: backend='tpu'"):
        runtime.load_runner("fpenet68_w32", backend="tpu")
    with pytest.raises(ValueError, match="own runtime.*Received: model='x.onnx', backend='keras'"):
        runtime.load_runner("x.onnx", backend="keras")
    with pytest.raises(FileNotFoundError, match="Received: model='missing.tflite'"):
        runtime.load_runner("missing.tflite")
    with pytest.raises(TypeError, match="Received: model=3.5"):
        runtime.load_runner(3.5, backend="keras")


@pytest.mark.slow
def test_litert_cache_is_written_once_per_weights_and_read_without_tensorflow(tmp_path, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    monkeypatch.setenv("FPEZOO_CACHE", str(tmp_path))
    path = runtime.cached_litert_file("fpenet68_w32")
    from fpezoo.weights import registry_entry

    digest = registry_entry("fpenet68_w32")["sha256"]
    assert path.parent == tmp_path / "litert" and path.name == f"fpenet68_w32-{digest[:16]}.tflite"
    assert not list(path.parent.glob("*.partial"))
    stamp = path.stat().st_mtime_ns
    assert runtime.cached_litert_file("fpenet68_w32") == path and path.stat().st_mtime_ns == stamp
    # A fresh process runs the registered name from the cache, importing neither TensorFlow nor Keras.
    code = ("import sys, json, numpy as np; from fpezoo.runtime import load_runner; r = load_runner('fpenet68_w32'); "
            "k, c = r(np.zeros((1, 80, 80, 1), 'float32')); "
            "print(json.dumps([r.backend, r.spec.name, r.spec.weights_sha256, r.spec.enlarge, list(k.shape), "
            "'tensorflow' in sys.modules, 'keras' in sys.modules]))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "FPEZOO_CACHE": str(tmp_path)})
    backend, name, sha, enlarge, shape, tensorflow, keras = json.loads(output.stdout.splitlines()[-1])
    assert (backend, name, sha, shape, tensorflow, keras) == ("litert", "fpenet68_w32", digest, [1, 68, 2], False, False)
    assert enlarge == registry_entry("fpenet68_w32")["crop"]["enlarge"]
    # A cached file recording other weights is exported again.
    from fpezoo.deploy.metadata import read_metadata

    path.write_bytes(b"not a model")
    assert read_metadata(runtime.cached_litert_file("fpenet68_w32"))["weights_sha256"] == digest
    # A cache folder that cannot be written: the export lives in memory for this run.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("FPEZOO_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="Cannot write the LiteRT cache"):
        in_memory = runtime.cached_litert_file("fpenet68_w32")
    assert read_metadata(in_memory)["weights_sha256"] == digest
    assert runtime.LiteRTRunner(in_memory).spec.input_size == (80, 80)


@pytest.mark.slow
def test_exported_files_run_in_the_predictor_like_the_registered_name(tmp_path):
    """An ONNX export carries its crop: LandmarkDetector on it equals the registered name on Keras."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from fpezoo.deploy.convert import convert
    from fpezoo.predictor import LandmarkDetector
    from fpezoo.demo import DEMO_IMAGE

    path = convert("fpenet68_w32", tmp_path / "w32.onnx", to="onnx")
    image = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))
    exported = LandmarkDetector(str(path))
    assert exported.backend == "onnxruntime" and exported.scheme == "ibug68"
    keras_faces = LandmarkDetector("fpenet68_w32", backend="keras").predict(image)
    onnx_faces = exported.predict(image)
    assert len(onnx_faces) == len(keras_faces) == 1
    np.testing.assert_allclose(onnx_faces[0].keypoints, keras_faces[0].keypoints, atol=0.05)


def test_depth_of_a_3d_model_comes_back_in_image_pixels():
    """z in crop pixels is divided by the crop's scale, as x and y are mapped back."""

    class DepthRunner:
        backend = "test"
        spec = runtime.ModelSpec("depth", (64, 64), "rgb", 5, scheme="five_point", enlarge=1.0)

        def __call__(self, crops):
            points = np.tile(np.array([[20.0, 20.0, 8.0]]), (len(crops), 5, 1))
            points[:, :, 2] += np.arange(5)
            return points.astype("float32"), np.ones((len(crops), 5), "float32")

    image = np.zeros((200, 200, 3), np.uint8)
    (prediction,) = runtime.predict_boxes(DepthRunner(), [image], [(0, (50.0, 50.0, 178.0, 178.0))])
    # The 128-pixel box fills the 64-pixel crop: image lengths are twice crop lengths.
    np.testing.assert_allclose(prediction.depth, 2.0 * (8.0 + np.arange(5)), rtol=1e-6)
    assert prediction.keypoints.shape == (5, 2)

    class FlatRunner(DepthRunner):
        def __call__(self, crops):
            points, confidence = super().__call__(crops)
            return points[:, :, :2], confidence

    (two_d,) = runtime.predict_boxes(FlatRunner(), [image], [(0, (50.0, 50.0, 90.0, 90.0))])
    assert two_d.depth is None
