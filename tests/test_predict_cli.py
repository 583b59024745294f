"""Tests of ``fpezoo predict``, ``fpezoo demo`` and the examples.

The model is the "dot finder" of test_predictor.py (its keypoint is the brightest
pixel), saved as a ``.keras`` file, so the outputs can be checked exactly.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from fpezoo.cli import main
from test_predictor import ASTRONAUT, dot_finder, draw_dot

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "dot_finder.keras"
    dot_finder().save(path)
    return str(path)


@pytest.fixture
def photo_folder(tmp_path):
    """Three good images (one in a subfolder) and three bad ones."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, dot in (("a.png", (20, 30)), ("b.png", (50, 10)), ("sub/c.png", (32, 32))):
        Image.fromarray(draw_dot(np.zeros((64, 64, 3), np.uint8), *dot)).save(folder / name)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    Image.open(ASTRONAUT).save(folder / "cut.jpg")
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("ignored: not an image suffix\n")
    return folder


def predict(*args):
    return main(["predict", *map(str, args), "--no-progress"])


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def test_folder_run_reports_bad_files_and_continues(photo_folder, model_path, tmp_path, capsys):
    output, drawings = tmp_path / "out.jsonl", tmp_path / "drawn"
    code = predict(photo_folder, "--model", model_path, "--detector", "none", "-o", output, "--draw", drawings)
    assert code == 1  # some inputs failed
    records = {pathlib.Path(r["source"]).name: r for r in read_jsonl(output)}
    assert sorted(records) == ["a.png", "b.png", "c.png", "cut.jpg", "empty.jpg", "text.jpg"]
    assert "empty (0 bytes)" in records["empty.jpg"]["error"]
    assert "not an image" in records["text.jpg"]["error"]
    assert "truncated or corrupt" in records["cut.jpg"]["error"]
    (face,) = records["a.png"]["faces"]
    np.testing.assert_allclose(face["keypoints"], [[20, 30]], atol=0.5)
    assert face["box"] == [0, 0, 64, 64] and face["visibility"] == [1]
    assert sorted(str(p.relative_to(drawings)) for p in drawings.rglob("*.png")) == ["a.png", "b.png", "sub/c.png"]
    assert "3 input(s) failed" in capsys.readouterr().err


def test_existing_output_needs_force_or_resume(photo_folder, model_path, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    predict(photo_folder, "--model", model_path, "--detector", "none", "-o", output)
    before = output.read_text()
    assert predict(photo_folder, "--model", model_path, "--detector", "none", "-o", output) == 2
    assert "--force" in capsys.readouterr().err and output.read_text() == before
    # --resume: only the new image runs.
    Image.fromarray(draw_dot(np.zeros((64, 64, 3), np.uint8), 5, 6)).save(photo_folder / "d.png")
    predict(photo_folder, "--model", model_path, "--detector", "none", "-o", output, "--resume")
    records = read_jsonl(output)
    assert len(records) == 7 and pathlib.Path(records[-1]["source"]).name == "d.png"
    # --force starts again.
    predict(photo_folder / "d.png", "--model", model_path, "--detector", "none", "-o", output, "--force")
    assert len(read_jsonl(output)) == 1


def test_csv_output_one_row_per_face(photo_folder, model_path, tmp_path):
    output = tmp_path / "out.csv"
    predict(photo_folder, "--model", model_path, "--detector", "none", "-o", output)
    with open(output, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6
    row = next(r for r in rows if r["source"].endswith("b.png"))
    assert (float(row["x0"]), float(row["y0"]), row["v0"]) == pytest.approx((50, 10, "1"), abs=0.5)
    assert next(r for r in rows if r["source"].endswith("text.jpg"))["error"]


def test_missing_input_and_bad_output_suffix(model_path, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    assert predict(tmp_path / "missing.png", "--model", model_path, "--detector", "none", "-o", output) == 1
    assert "Image file not found" in read_jsonl(output)[0]["error"]
    assert predict(tmp_path / "x.png", "--model", model_path, "-o", tmp_path / "out.txt") == 2
    assert "must end in .jsonl or .csv" in capsys.readouterr().err


def write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame[..., ::-1].copy())
    writer.release()


def test_video_is_tracked_frame_by_frame_and_annotated(tmp_path, model_path):
    pytest.importorskip("mtcnn")
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((256, 256)))
    frames = [np.roll(photo, 3 * i, axis=1) for i in range(6)]  # the face moves right
    video, output, drawings = tmp_path / "clip.avi", tmp_path / "clip.jsonl", tmp_path / "drawn"
    write_video(video, frames)
    assert predict(video, "--model", model_path, "-o", output, "--draw", drawings) == 0
    records = read_jsonl(output)
    assert [r["frame"] for r in records] == list(range(6))
    assert all(len(r["faces"]) == 1 for r in records)
    boxes = np.array([r["faces"][0]["box"] for r in records])
    assert boxes[-1, 0] - boxes[0, 0] > 7  # the box follows the face (15 px in truth)
    capture = cv2.VideoCapture(str(drawings / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_video_that_ends_early_keeps_its_frames(tmp_path, model_path, capsys):
    frames = [draw_dot(np.zeros((48, 64, 3), np.uint8), 10 + i, 20) for i in range(30)]
    video, output = tmp_path / "cut.avi", tmp_path / "cut.jsonl"
    write_video(video, frames)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    assert predict(video, "--model", model_path, "--detector", "none", "-o", output) == 1
    records = read_jsonl(output)
    assert "ended early" in records[-1]["error"]
    assert 0 < len(records) - 1 < 30
    np.testing.assert_allclose(records[0]["faces"][0]["keypoints"], [[10, 20]], atol=0.5)
    assert "Video ended early" in capsys.readouterr().err


def test_demo_writes_an_annotated_png(tmp_path, model_path, capsys):
    pytest.importorskip("mtcnn")
    output = tmp_path / "demo.png"
    assert main(["demo", "--model", model_path, "-o", str(output)]) == 0
    assert Image.open(output).size == (512, 512)
    assert f"wrote {output.resolve()}" in capsys.readouterr().out


def test_demo_without_registered_weights_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FPEZOO_WEIGHTS_DIR", str(tmp_path))
    assert main(["demo", "-o", str(tmp_path / "demo.png")]) == 2
    assert "No trained weights are registered" in capsys.readouterr().err
    assert not (tmp_path / "demo.png").exists()


def run_example(name, *args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_example_predict_photo_runs(tmp_path, model_path):
    pytest.importorskip("mtcnn")
    out = run_example("predict_photo.py", "--model", model_path, cwd=tmp_path)
    assert "faces per image: [1, 1, 1]" in out and (tmp_path / "predict_photo.png").is_file()


@pytest.mark.slow
def test_example_predict_folder_and_video_runs(tmp_path, model_path):
    pytest.importorskip("mtcnn")
    out = run_example("predict_folder_and_video.py", "--model", model_path, cwd=tmp_path)
    assert "broken.jpg 0 face(s) File is not an image" in out
    x_min = json.loads(out.split("face box x_min per frame:")[1].splitlines()[0])
    assert len(x_min) == 12 and x_min[-1] > x_min[0]  # the box follows the moving face
