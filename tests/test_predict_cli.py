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
from test_predictor import ASTRONAUT, FixedDetector, dot_finder, draw_dot

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


def test_folder_streams_one_batch_at_a_time(tmp_path, model_path, monkeypatch):
    import weakref

    from fpezoo import predict_cli

    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(12):
        Image.fromarray(draw_dot(np.zeros((64, 64, 3), np.uint8), 5 + 4 * index, 30)).save(
            folder / f"{index:02d}.png")
    alive, peak = [], []
    load_image = predict_cli.load_image

    def counting_load_image(path):
        image = load_image(path)
        alive.append(weakref.ref(image))
        peak.append(sum(ref() is not None for ref in alive))
        return image

    monkeypatch.setattr(predict_cli, "load_image", counting_load_image)
    output = tmp_path / "many.jsonl"
    assert predict(folder, "--model", model_path, "--detector", "none", "-o", output, "--batch-size", "2") == 0
    assert len(read_jsonl(output)) == 12 and len(peak) == 12
    # At most the batch being loaded and the one before it: memory does not grow with the folder.
    assert max(peak) <= 4, peak


def test_faceless_folder_gives_empty_results_with_a_progress_bar(tmp_path, model_path, capsys):
    folder = tmp_path / "blank"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((64, 64, 3), 60 * index, np.uint8)).save(folder / f"{index}.png")
    output = tmp_path / "blank.jsonl"
    assert main(["predict", str(folder), "--model", model_path, "--detector", "lbp", "-o", str(output)]) == 0
    records = read_jsonl(output)
    assert len(records) == 3 and all(r["faces"] == [] and "error" not in r for r in records)
    err = capsys.readouterr().err
    assert "3/3" in err and "img" in err  # the tqdm bar
    assert predict(folder, "--model", model_path, "-o", tmp_path / "b.jsonl", "--batch-size", "0") == 2
    assert "Received: batch_size=0" in capsys.readouterr().err


def test_drawings_are_never_overwritten_without_force(tmp_path, model_path, capsys):
    folder, drawings = tmp_path / "one", tmp_path / "drawn"
    folder.mkdir()
    Image.fromarray(draw_dot(np.zeros((64, 64, 3), np.uint8), 20, 30)).save(folder / "a.jpg")
    assert predict(folder, "--model", model_path, "--detector", "none", "-o", tmp_path / "1.jsonl",
                   "--draw", drawings) == 0
    drawing = drawings / "a.png"
    drawing.write_bytes(b"kept")  # stands for a drawing the user wants to keep
    assert predict(folder, "--model", model_path, "--detector", "none", "-o", tmp_path / "2.jsonl",
                   "--draw", drawings) == 2
    assert "--draw would overwrite 1 existing file(s)" in capsys.readouterr().err
    assert drawing.read_bytes() == b"kept" and not (tmp_path / "2.jsonl").exists()
    assert predict(folder, "--model", model_path, "--detector", "none", "-o", tmp_path / "2.jsonl",
                   "--draw", drawings, "--force") == 0
    assert Image.open(drawing).size == (64, 64)


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


def test_video_reports_frames_detector_runs_and_frames_per_second(tmp_path, capsys):
    from fpezoo.predict_cli import ResultWriter, predict_video
    from fpezoo.predictor import LandmarkDetector

    frames = [draw_dot(np.zeros((48, 64, 3), np.uint8), 20 + i, 24) for i in range(8)]
    video = tmp_path / "clip.avi"
    write_video(video, frames)
    detector = FixedDetector([(0.0, 0.0, 64.0, 48.0)])
    predictor = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.0)
    with ResultWriter(tmp_path / "clip.jsonl", 1) as writer:
        assert predict_video(predictor, video, writer, show_progress=False) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "frames/s" in line]
    head, rate = line.rsplit(", ", 1)
    assert head == f"{video}: 8 frame(s), {detector.calls} detector run(s)" and detector.calls < 8  # tracked
    assert float(rate.split()[0]) > 0


def test_demo_writes_an_annotated_png(tmp_path, model_path, capsys):
    pytest.importorskip("mtcnn")
    output = tmp_path / "demo.png"
    assert main(["demo", "--model", model_path, "-o", str(output)]) == 0
    assert Image.open(output).size == (512, 512)
    assert f"wrote {output.resolve()}" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_uses_the_default_registered_weights_and_draws_on_the_face(tmp_path, capsys):
    pytest.importorskip("mtcnn")
    from fpezoo.runtime import default_model_name
    from fpezoo.weights import registry_entry

    output = tmp_path / "demo.png"
    assert main(["demo", "-o", str(output)]) == 0
    out = capsys.readouterr().out
    enlarge = registry_entry(default_model_name())["crop"]["enlarge"]
    assert "68 keypoints" in out and f"enlarge={enlarge}" in out, out
    # Everything drawn (box and keypoints) lies on Eileen Collins' face.
    changed = np.any(np.asarray(Image.open(output).convert("RGB"))
                     != np.asarray(Image.open(ASTRONAUT).convert("RGB")), axis=-1)
    rows, cols = np.nonzero(changed)
    assert 150 <= cols.min() and cols.max() <= 290 and 50 <= rows.min() and rows.max() <= 200
    assert cols.max() - cols.min() > 60 and rows.max() - rows.min() > 80


def test_demo_with_an_unreadable_photo_says_so(tmp_path, model_path, capsys):
    assert main(["demo", "--model", model_path, "--image", str(tmp_path / "none.jpg"),
                 "-o", str(tmp_path / "demo.png")]) == 2
    assert "Image file not found. Received: path=" in capsys.readouterr().err


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
