"""Bad input never passes silently (issue 32): each case gives a clear message and
a non-zero exit, prints no traceback, and leaves no partial file.

The landmark model is the "dot finder" of test_predictor.py, saved as a
``.keras`` file once for the module. Commands run in-process through
``fpezoo.cli.main`` (an exception escaping it is the traceback a user would
see), except Ctrl-C, which a real ``fpezoo predict`` process receives.
Permission cases that need a non-root user skip when run as root; their
behaviour is also checked by simulating the denied call.
"""

import errno
import importlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from fpezoo import cli, evaluation, imageio
from fpezoo.predictor import LandmarkDetector
from test_predict_cli import predict, read_jsonl, write_video
from test_predictor import dot_finder, draw_dot

REPO = pathlib.Path(__file__).resolve().parents[1]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NEEDS_NON_ROOT = pytest.mark.skipif(AS_ROOT, reason="root reads and writes whatever the permissions say")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "dot_finder.keras"
    dot_finder().save(path)
    return str(path)


def dot_image(x, y, size=64):
    return draw_dot(np.zeros((size, size, 3), np.uint8), x, y)


def dot_folder(folder, count):
    """``count`` PNGs, each with its dot elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(dot_image(8 + index % 48, 8 + index // 48 % 48)).save(folder / f"{index:03d}.png")
    return folder


def run_main(argv, capsys):
    """``fpezoo ARGV`` in-process: ``(exit code, stdout, stderr)``; argparse exits count as exit codes."""
    try:
        code = cli.main([str(word) for word in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def assert_one_line_error(err, *fragments):
    """The command's error is one line, names the problem and ends with ``Received: ...``."""
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    for fragment in fragments:
        assert fragment in line, line
    assert re.search(r"Received: \w+=", line), line


def no_partial_files(folder):
    """No temporary (``.partial``) file or folder is left under ``folder``."""
    return not [path for path in pathlib.Path(folder).rglob("*") if ".partial" in path.name]


def all_pngs_whole(folder):
    for path in pathlib.Path(folder).rglob("*.png"):
        with Image.open(path) as image:
            image.load()  # raises on a truncated file
    return True


# -- case 1: 16-bit grayscale -----------------------------------------------------------------------

def test_16_bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
    gray8 = dot_image(20, 40)[..., 0]
    path = tmp_path / "gray16.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(imageio.load_image(path), np.stack([gray8] * 3, axis=-1))
    # The dot finder sees the dot, not an all-white image.
    (face,) = LandmarkDetector(model=dot_finder(), detector=None).predict(str(path))
    np.testing.assert_allclose(face.keypoints, [[20, 40]], atol=0.5)


# -- case 3: float image on the 0-1 scale ----------------------------------------------------------

class RecordingDetector:
    """Finds one face covering each image, and keeps the images it was given."""

    def __init__(self):
        self.images = []

    def detect(self, image_rgb):
        from fpezoo.detection import Detection

        self.images.append(image_rgb)
        height, width = image_rgb.shape[:2]
        return [Detection((0.0, 0.0, float(width), float(height)), 1.0)]


def test_float_image_on_the_0_1_scale_reaches_the_detector_on_the_0_255_scale():
    image = dot_image(30, 12)
    detector = RecordingDetector()
    (face,) = LandmarkDetector(model=dot_finder(), detector=detector, enlarge=1.0).predict(image / 255.0)
    np.testing.assert_array_equal(detector.images[0], image)
    np.testing.assert_allclose(face.keypoints, [[30, 12]], atol=0.5)
    np.testing.assert_array_equal(imageio.load_image(image.astype("float32") / 255), image)
    np.testing.assert_array_equal(imageio.load_image(image.astype("float64")), image)  # 0-255 floats stay


# -- cases 2 and 10: unreadable folders and files ---------------------------------------------------

def deny_listing(monkeypatch, denied):
    """``os.scandir`` (which ``os.walk`` lists folders with) fails on ``denied``, as for another user."""
    scandir = os.scandir

    def guarded(path="."):
        if isinstance(path, (str, os.PathLike)) and pathlib.Path(path) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)


def test_unreadable_input_folder_is_a_usage_error(tmp_path, model_path, monkeypatch, capsys):
    folder = dot_folder(tmp_path / "photos", 2)
    deny_listing(monkeypatch, folder)
    output = tmp_path / "out.jsonl"
    code, _, err = run_main(["predict", folder, "--model", model_path, "-o", output, "--no-progress"], capsys)
    assert code == 2
    assert_one_line_error(err, "Cannot read the folder (permission denied)", f"input='{folder}'")
    assert not output.exists()


def test_unreadable_subfolder_is_reported_and_the_run_goes_on(tmp_path, model_path, monkeypatch, capsys):
    folder = dot_folder(tmp_path / "photos", 2)
    dot_folder(folder / "private", 1)
    deny_listing(monkeypatch, folder / "private")
    output = tmp_path / "out.jsonl"
    code, _, err = run_main(["predict", folder, "--model", model_path, "--detector", "none", "-o", output,
                             "--no-progress"], capsys)
    assert code == 1
    records = {pathlib.Path(r["source"]).name: r for r in read_jsonl(output)}
    assert sorted(records) == ["000.png", "001.png", "private"]
    assert "Cannot read the folder (permission denied)" in records["private"]["error"]
    assert "warning: skipped" in err and "1 input(s) failed" in err


@NEEDS_NON_ROOT
def test_unreadable_folder_for_real(tmp_path, model_path, capsys):
    folder = dot_folder(tmp_path / "photos", 1)
    folder.chmod(0)
    try:
        code, _, err = run_main(["predict", folder, "--model", model_path, "--no-progress"], capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2 and "Cannot read the folder (permission denied)" in err


def test_unreadable_image_says_permission_denied(tmp_path, model_path, monkeypatch, capsys):
    path = tmp_path / "a.png"
    Image.fromarray(dot_image(5, 5)).save(path)
    open_image = imageio.Image.open

    def denied(file, *args, **kwargs):
        if pathlib.Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return open_image(file, *args, **kwargs)

    monkeypatch.setattr(imageio.Image, "open", denied)
    with pytest.raises(PermissionError, match=r"Cannot read the image file \(permission denied\). Received: path="):
        imageio.load_image(path)
    output = tmp_path / "out.jsonl"
    code, _, err = run_main(["predict", path, "--model", model_path, "--detector", "none", "-o", output,
                             "--no-progress"], capsys)
    assert code == 1
    (record,) = read_jsonl(output)
    assert "permission denied" in record["error"] and "truncated or corrupt" not in record["error"]


@NEEDS_NON_ROOT
def test_unreadable_image_for_real(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(dot_image(5, 5)).save(path)
    path.chmod(0)
    with pytest.raises(PermissionError, match="permission denied"):
        imageio.load_image(path)


# -- case 5: outputs that cannot be written, checked before the model loads --------------------------

@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if the landmark model is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("fpezoo.predictor.LandmarkDetector", refuse)


@pytest.mark.parametrize("command, option", [("predict", "-o"), ("predict", "--draw"), ("demo", "-o")])
def test_unwritable_output_folder_fails_before_the_model_loads(tmp_path, command, option, monkeypatch, capsys,
                                                                no_model_loading):
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: pathlib.Path(path) != locked and access(path, mode))
    Image.fromarray(dot_image(5, 5)).save(tmp_path / "a.png")
    target = locked / {"-o": "out.jsonl" if command == "predict" else "demo.png", "--draw": "drawn"}[option]
    inputs = [tmp_path / "a.png"] if command == "predict" else ["--image", tmp_path / "a.png"]
    code, _, err = run_main([command, *inputs, option, target], capsys)
    assert code == 2
    assert_one_line_error(err, f"Cannot write into {locked} (permission denied)")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("option", ["-o", "--draw"])
def test_output_under_a_file_fails_before_the_model_loads(tmp_path, option, capsys, no_model_loading):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    Image.fromarray(dot_image(5, 5)).save(tmp_path / "a.png")
    target = tmp_path / "blocker" / ("out.jsonl" if option == "-o" else "drawn")
    code, _, err = run_main(["predict", tmp_path / "a.png", option, target, "--no-progress"], capsys)
    assert code == 2
    assert_one_line_error(err, "is a file, not a folder")


@NEEDS_NON_ROOT
def test_unwritable_output_folder_for_real(tmp_path, capsys, no_model_loading):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    Image.fromarray(dot_image(5, 5)).save(tmp_path / "a.png")
    code, _, err = run_main(["predict", tmp_path / "a.png", "-o", locked / "out.jsonl"], capsys)
    assert code == 2 and "permission denied" in err


# -- cases 4 and 9: interruption, whole files, --resume -----------------------------------------------

def test_interrupt_while_drawing_leaves_no_partial_png_and_resume_finishes(tmp_path, model_path, monkeypatch,
                                                                            capsys):
    folder = dot_folder(tmp_path / "photos", 5)
    output, drawings = tmp_path / "out.jsonl", tmp_path / "drawn"
    save = Image.Image.save
    calls = []

    def save_then_interrupt(image, fp, *args, **kwargs):
        calls.append(fp)
        save(image, fp, *args, **kwargs)
        if len(calls) == 3:  # cut the third drawing halfway, as Ctrl-C would
            data = pathlib.Path(fp).read_bytes()
            pathlib.Path(fp).write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    argv = ["predict", folder, "--model", model_path, "--detector", "none", "-o", output, "--draw", drawings,
            "--batch-size", "2", "--no-progress"]
    code, _, err = run_main(argv, capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == "interrupted: 2 image(s) written; run again with --resume"
    assert [pathlib.Path(r["source"]).name for r in read_jsonl(output)] == ["000.png", "001.png"]
    assert sorted(p.name for p in drawings.iterdir()) == ["000.png", "001.png"]
    assert all_pngs_whole(drawings) and no_partial_files(tmp_path)

    monkeypatch.setattr(Image.Image, "save", save)
    (drawings / "001.png").unlink()  # a drawing lost: --resume redoes it without a second record
    code, _, err = run_main(argv + ["--resume"], capsys)
    assert code == 0 and "1 input(s) already in the output" in err
    sources = [pathlib.Path(r["source"]).name for r in read_jsonl(output)]
    assert sources == [f"{index:03d}.png" for index in range(5)]
    assert len(list(drawings.iterdir())) == 5 and all_pngs_whole(drawings) and no_partial_files(tmp_path)


def test_interrupt_while_loading_the_model_writes_nothing(tmp_path, model_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fpezoo.predictor.LandmarkDetector", interrupted)
    folder = dot_folder(tmp_path / "photos", 1)
    code, _, err = run_main(["predict", folder, "--model", model_path, "-o", tmp_path / "out.jsonl"], capsys)
    assert code == 130 and err.strip() == "interrupted: 0 image(s) written; run again with --resume"
    assert not (tmp_path / "out.jsonl").exists() and no_partial_files(tmp_path)
    code, _, err = run_main(["demo", "--model", model_path, "-o", tmp_path / "demo.png"], capsys)
    assert code == 130 and err.strip() == "interrupted: nothing written"
    assert not (tmp_path / "demo.png").exists()


def test_interrupted_video_is_left_out_whole_and_resume_runs_it(tmp_path, model_path, monkeypatch, capsys):
    video, output, drawings = tmp_path / "clip.avi", tmp_path / "clip.jsonl", tmp_path / "drawn"
    write_video(video, [dot_image(10 + i, 20) for i in range(8)])
    predict = LandmarkDetector.predict
    calls = []

    def predict_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(LandmarkDetector, "predict", predict_then_interrupt)
    argv = ["predict", video, "--model", model_path, "--detector", "none", "-o", output, "--draw", drawings,
            "--no-progress"]
    code, _, err = run_main(argv, capsys)
    assert code == 130 and err.strip().splitlines()[-1].startswith("interrupted: 0 image(s) written")
    assert output.read_text() == "" and not (drawings / "clip.mp4").exists() and no_partial_files(tmp_path)
    monkeypatch.setattr(LandmarkDetector, "predict", predict)
    code, _, _ = run_main(argv + ["--resume"], capsys)
    assert code == 0 and [r["frame"] for r in read_jsonl(output)] == list(range(8))
    assert (drawings / "clip.mp4").stat().st_size > 0 and no_partial_files(tmp_path)


def test_ctrl_c_on_a_running_predict_process(tmp_path, model_path):
    folder = dot_folder(tmp_path / "photos", 1500)
    output, drawings = tmp_path / "out.csv", tmp_path / "drawn"
    command = [sys.executable, "-m", "fpezoo", "predict", str(folder), "--model", model_path, "--detector", "none",
               "-o", str(output), "--draw", str(drawings), "--batch-size", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if drawings.is_dir() and len([p for p in drawings.iterdir() if p.suffix == ".png"]) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in out + err
    (written,) = re.findall(r"^interrupted: (\d+) image\(s\) written; run again with --resume$", err, re.MULTILINE)
    rows = output.read_text().splitlines()
    assert len(rows) == 1 + int(written) < 1501  # the CSV head, then one row per whole image
    assert len(list(drawings.glob("*.png"))) == int(written)
    assert all_pngs_whole(drawings) and no_partial_files(tmp_path)


# -- case 6: evaluate's data -------------------------------------------------------------------------

def test_evaluate_takes_the_data_root_or_the_benchmark_path(tmp_path):
    (tmp_path / "aflw2000-3d").mkdir()
    (tmp_path / "aflw2000-3d" / "landmarks.npz").write_bytes(b"")
    (tmp_path / "mtfl").mkdir()
    (tmp_path / "mtfl" / "test.txt").write_text("")
    for data in (tmp_path, tmp_path / "aflw2000-3d"):
        assert evaluation.benchmark_data("aflw2000-3d", data) == tmp_path / "aflw2000-3d"
    for data in (tmp_path, tmp_path / "mtfl", tmp_path / "mtfl" / "test.txt"):
        assert evaluation.benchmark_data("mtfl", data) == tmp_path / "mtfl" / "test.txt"


def test_evaluate_data_root_of_the_shared_data(shared_data):
    assert evaluation.benchmark_data("aflw2000-3d", shared_data) == shared_data / "aflw2000-3d"
    assert evaluation.benchmark_data("mtfl", shared_data) == shared_data / "mtfl" / "test.txt"


@pytest.mark.parametrize("where", ["--data", "FPEZOO_DATA"])
def test_evaluate_without_data_says_where_it_looked(tmp_path, model_path, where, monkeypatch, capsys):
    monkeypatch.setenv("FPEZOO_DATA", str(tmp_path))
    argv = ["evaluate", model_path, "--no-progress"] + (["--data", tmp_path] if where == "--data" else [])
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert_one_line_error(err, "No aflw2000-3d labels found", f"looked for {tmp_path / 'landmarks.npz'} and "
                          f"{tmp_path / 'aflw2000-3d' / 'landmarks.npz'}", "FPEZOO_DATA")


# -- cases 7, 8 and 14: the demo -----------------------------------------------------------------------

def test_demo_without_a_detector(tmp_path, model_path, capsys):
    output = tmp_path / "demo.png"
    code, out, _ = run_main(["demo", "--model", model_path, "--detector", "none", "-o", output], capsys)
    assert code == 0 and "1 face(s) found" in out and "box (0, 0, 512, 512)" in out
    assert Image.open(output).size == (512, 512)


@pytest.mark.parametrize("command", ["demo", "predict"])
def test_detector_without_its_extra_names_the_extra_before_the_model_loads(command, tmp_path, monkeypatch, capsys,
                                                                           no_model_loading):
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # `import mtcnn` now fails, as without the extra
    output = tmp_path / ("demo.png" if command == "demo" else "out.jsonl")
    inputs = [] if command == "demo" else [dot_folder(tmp_path / "photos", 1)]
    code, _, err = run_main([command, *inputs, "--detector", "mtcnn", "-o", output], capsys)
    assert code == 2
    assert_one_line_error(err, "Cannot load the face detector", "fpezoo[detect]", "--detector none",
                          "detector='mtcnn'")
    assert not output.exists()


def test_demo_never_overwrites_without_force(tmp_path, model_path, capsys):
    output = tmp_path / "demo.png"
    output.write_bytes(b"kept")
    code, _, err = run_main(["demo", "--model", model_path, "--detector", "none", "-o", output], capsys)
    assert code == 2 and output.read_bytes() == b"kept"
    assert_one_line_error(err, "The output exists: pass --force")
    code, _, _ = run_main(["demo", "--model", model_path, "--detector", "none", "-o", output, "--force"], capsys)
    assert code == 0 and Image.open(output).size == (512, 512) and no_partial_files(tmp_path)


# -- case 11: --model x.weights.h5 --------------------------------------------------------------------

def test_weights_file_as_model_needs_and_takes_its_builder(tmp_path, capsys):
    import fpezoo

    config = {"num_keypoints": 5, "width": 8, "input_shape": [32, 32, 1]}
    weights = tmp_path / "small.weights.h5"
    fpezoo.FPENet(**config).save_weights(weights)
    Image.fromarray(dot_image(5, 5)).save(tmp_path / "a.png")
    base = ["predict", tmp_path / "a.png", "--model", weights, "--detector", "none", "--no-progress"]
    code, _, err = run_main(base + ["-o", tmp_path / "1.jsonl"], capsys)
    assert code == 2
    assert_one_line_error(err, "needs the builder", "--builder FPENet")
    code, _, err = run_main(base + ["-o", tmp_path / "2.jsonl", "--builder", "FPENet", "--builder-config",
                                    json.dumps(config)], capsys)
    assert code == 0, err
    (record,) = read_jsonl(tmp_path / "2.jsonl")
    assert len(record["faces"][0]["keypoints"]) == 5


def test_builder_needs_a_weights_file(tmp_path, model_path, capsys, no_model_loading):
    code, _, err = run_main(["predict", tmp_path / "a.png", "--model", model_path, "--builder", "FPENet"], capsys)
    assert code == 2
    assert_one_line_error(err, "--builder goes with a '.weights.h5' --model")


# -- case 15: hidden files ---------------------------------------------------------------------------

def test_hidden_files_in_folders_are_skipped_unless_named(tmp_path, model_path, capsys):
    folder = dot_folder(tmp_path / "photos", 1)
    Image.fromarray(dot_image(5, 5)).save(folder / ".thumbnail.png")
    dot_folder(folder / ".cache", 1)
    output = tmp_path / "out.jsonl"
    code, _, _ = run_main(["predict", folder, "--model", model_path, "--detector", "none", "-o", output,
                           "--no-progress"], capsys)
    assert code == 0
    assert [pathlib.Path(r["source"]).name for r in read_jsonl(output)] == ["000.png"]
    assert predict(folder / ".thumbnail.png", "--model", model_path, "--detector", "none",
                   "-o", tmp_path / "named.jsonl") == 0
    assert len(read_jsonl(tmp_path / "named.jsonl")[0]["faces"]) == 1


# -- every subcommand: a missing file, a folder, no traceback ------------------------------------------

def listed_subcommands():
    """The subcommands ``fpezoo --help`` lists."""
    usage = cli.build_parser().format_help()
    return re.search(r"\{([\w,]+)\}", usage)[1].split(",")


def test_every_listed_subcommand_has_a_bad_file_case():
    assert sorted(listed_subcommands()) == sorted(BAD_FILE_ARGUMENTS)


# A missing file (or, for benchmark, which reads no file, an unknown model name)
# for each subcommand; "{path}" is replaced by the missing path, then by a folder.
BAD_FILE_ARGUMENTS = {
    "predict": ["{path}", "--model", "{model}", "--detector", "none", "-o", "{tmp}/out.jsonl", "--no-progress"],
    "demo": ["--image", "{path}", "--model", "{model}", "--detector", "none", "-o", "{tmp}/demo.png"],
    "train": ["{path}"],
    "evaluate": ["{path}", "--no-progress"],
    "convert": ["{path}", "-o", "{tmp}/out.onnx"],
    "benchmark": ["--models", "{path}"],
    "card": ["{path}"],
}
@pytest.mark.parametrize("kind", ["missing", "folder"])
@pytest.mark.parametrize("command", listed_subcommands())
def test_every_subcommand_fails_cleanly_on_a_bad_file(command, kind, tmp_path, model_path, capsys):
    bad = tmp_path / "missing.png" if kind == "missing" else tmp_path
    argv = [word.format(path=bad, model=model_path, tmp=tmp_path / "out")
            for word in [command] + BAD_FILE_ARGUMENTS[command]]
    code, _, err = run_main(argv, capsys)
    assert code not in (0, None), err
    assert err.strip(), "no message"
    assert no_partial_files(tmp_path)


@pytest.mark.parametrize("raised, code, message", [
    (KeyboardInterrupt(), 130, "interrupted: fpezoo {command} stopped"),
    (PermissionError(13, "Permission denied"), 2, "error: [Errno 13] Permission denied"),
    (NotADirectoryError(20, "Not a directory"), 2, "error: [Errno 20] Not a directory"),
])
@pytest.mark.parametrize("command", listed_subcommands())
def test_every_subcommand_turns_interrupts_and_unreported_errors_into_one_line(
        command, raised, code, message, monkeypatch, capsys):
    """Ctrl-C or an unwritable output met anywhere in a subcommand: one line, an exit code, no traceback."""
    module = importlib.import_module(cli.SUBCOMMANDS[command][0])

    def run(args):
        raise raised

    monkeypatch.setattr(module, "run", run)
    argv = [command] + {"benchmark": ["--models", "retail"], "convert": ["x", "-o", "x.onnx"],
                        "demo": []}.get(command, ["x"])
    returned, out, err = run_main(argv, capsys)
    assert returned == code
    assert err.strip().splitlines() == [message.format(command=command)]
    if code == 2:  # --verbose shows the error's traceback
        with pytest.raises(type(raised)):
            cli.main(["--verbose"] + argv)


def test_landmark_detector_names_what_a_weights_or_export_file_needs(tmp_path):
    """Case 11 in Python: a '.weights.h5' path is not taken for an unknown registered name; a
    missing export is named."""
    from fpezoo.predictor import LandmarkDetector

    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"holds no architecture.*Received: model='.*model\.weights\.h5'"):
        LandmarkDetector(str(weights), detector=None)
    for name in ("model.onnx", "model.tflite"):
        with pytest.raises(FileNotFoundError, match=r"not found\. Received: model='model\.(onnx|tflite)'"):
            LandmarkDetector(name, detector=None)
