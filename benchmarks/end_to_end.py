"""Photos to landmarks, end to end: accuracy on turned photos and throughput on one core.

Runs :class:`fpezoo.LandmarkDetector` (face detection, crops, landmark model,
mapping back) on the first ``--count`` AFLW2000-3D photos (450x450, one
annotated face each).

Accuracy: the photos as they are and turned by 90, 180 and 270 degrees
(``np.rot90``, exact) and by a random angle each (uniform in [-180, 180),
``--seed``; the canvas grows so no corner is cut), for each ``--rotations``
mode. A face is found when the predictor returns a face whose mean keypoint
lies within half the normaliser of the ground-truth centre. NME (3DDFA
normalisation: mean point-to-point error over sqrt(w * h) of the ground-truth
68-point box, ``pts68_fitted``) is the mean over the found faces, in the
photo's frame (points mapped back by the known turn), and over the faces found
in every set (``nme_common``), so the sets compare on the same faces.

Throughput: one core (CPU affinity, OpenCV and LiteRT on one thread), after a
warm-up photo. ``photos_per_s`` times ``predictor.predict(path)`` on each file
(JPEG decode included) by the wall clock, ``photos_per_cpu_s`` by the CPU time
of the process (the same on an idle machine; on a busy one it leaves out the
time spent waiting for the core). The split (CPU time) decodes the file
(:func:`fpezoo.imageio.load_image`), then times the calls of
``predictor.predict(image)`` by stage: detect (:meth:`LandmarkDetector.detect`,
with the quarter-turn search of the mode), crop
(:func:`fpezoo.runtime.face_crop`, each crop including those of the upright
pass), landmarks (the runner: the model on the batches of crops) and map back
(the rest: landmark boxes, inverse crop transforms, visibility, and with
``"best"`` the choice among each face's turns). A 1920x1080 JPEG (an
AFLW2000-3D photo scaled to 1080 rows on a grey canvas) is timed the same way
(``--large-repeats`` times; the medians of the time and of each stage). Cold start runs ``python -c`` in a fresh
process: import, build the predictor, one photo.

Video: a clip of ``--video-frames`` frames (``--video-size``, 30 frames/s,
MPEG-4 ``mp4v``, written with ``cv2.VideoWriter`` into a temporary folder) of
the first photo's face moving across a grey canvas and rolling by up to 15
degrees, run as ``fpezoo predict clip.mp4`` runs it: ``VideoCapture.read``,
``load_image(frame, bgr=True)`` and :class:`fpezoo.predictor.FaceTracker`
(predictor of the default rotations), no output written. ``frames_per_s``
times that loop by the wall clock, ``frames_per_cpu_s`` by CPU time; the
split gives CPU ms per frame (decode: reading and colour order; the other
stages as above, map back including the tracker's bookkeeping), with the
detector's runs. ``frames_per_s_detector_every_frame`` and
``frames_per_cpu_s_detector_every_frame`` run the detector (upright) and the
landmarks on every frame instead of tracking.

Usage::

    python benchmarks/end_to_end.py --model fpenet68_w32 --count 200 \\
        --output docs/benchmarks/end_to_end.json

Data come from ``$FPEZOO_DATA`` or ``../shared/data``. Speed depends on the
machine's load: the load average is recorded before and after.
"""

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fpezoo import evaluation, runtime  # noqa: E402
from fpezoo.coordinates import invert_transform, quarter_turn_transform, transform_points  # noqa: E402
from fpezoo.imageio import load_image  # noqa: E402
from fpezoo.predictor import FaceTracker, LandmarkDetector  # noqa: E402

STAGES = ("decode", "detect", "crop", "landmarks", "map_back")


def aflw2000(root, count):
    labels = np.load(root / "aflw2000-3d" / "landmarks.npz")
    paths = [root / "aflw2000-3d" / "images" / str(name) for name in labels["names"][:count]]
    return paths, labels["pts68_fitted"][:count, :, :2].astype("float64")


def turned(image, angle):
    """``image`` turned counter-clockwise on screen by ``angle`` degrees, and the 2x3 point transform."""
    if angle % 90 == 0:
        turns = int(angle // 90) % 4
        return np.ascontiguousarray(np.rot90(image, turns)), quarter_turn_transform(turns, image.shape[:2])
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(np.ceil(width * cos + height * sin)), int(np.ceil(width * sin + height * cos))
    matrix[:, 2] += ((new_w - width) / 2, (new_h - height) / 2)
    return cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR), matrix


def accuracy(predictor, paths, truths, seed):
    """Faces found and NME per turned set."""
    angles = np.random.default_rng(seed).uniform(-180, 180, len(paths))
    sets = {"0": None, "90": 90, "180": 180, "270": 270, "random": "random"}
    errors = {name: np.full(len(paths), np.nan) for name in sets}
    for index, (path, truth) in enumerate(zip(paths, truths)):
        photo = load_image(path)
        norm = np.sqrt(np.prod(truth.max(axis=0) - truth.min(axis=0)))
        for name, angle in sets.items():
            angle = 0 if angle is None else angles[index] if angle == "random" else angle
            image, matrix = turned(photo, angle)
            back = invert_transform(matrix)
            best = None
            for face in predictor.predict(image):
                points = transform_points(face.keypoints, back)
                if np.linalg.norm(points.mean(axis=0) - truth.mean(axis=0)) < norm / 2:
                    error = np.linalg.norm(points - truth, axis=1).mean() / norm
                    best = error if best is None else min(best, error)
            if best is not None:
                errors[name][index] = best
    common = np.all([np.isfinite(e) for e in errors.values()], axis=0)
    return {name: {"photos": len(paths), "faces_found": int(np.isfinite(e).sum()),
                   "nme": float(np.nanmean(e)), "nme_common": float(np.mean(e[common])),
                   "common_faces": int(common.sum())}
            for name, e in errors.items()}


class _TimedRunner:
    """A runner whose calls add their CPU seconds to ``times["landmarks"]``; other attributes pass through."""

    def __init__(self, runner, times):
        self._runner, self._times = runner, times

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def __call__(self, crops):
        start = time.process_time()
        try:
            return self._runner(crops)
        finally:
            self._times["landmarks"] += time.process_time() - start


@contextlib.contextmanager
def stage_clocks(predictor, times):
    """While open, the predictor's detect, crop and model calls add their CPU seconds to ``times``.

    Wraps the predictor's ``detect`` and ``runner`` (instance attributes) and
    :func:`fpezoo.runtime.face_crop`, which :func:`fpezoo.runtime.predict_boxes`
    calls; the caller gives the rest of its time to ``"map_back"``.
    """
    def timed(stage, function):
        def call(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                times[stage] += time.process_time() - start
        return call

    face_crop, runner = runtime.face_crop, predictor.runner
    predictor.detect = timed("detect", predictor.detect)
    predictor.runner = _TimedRunner(runner, times)
    runtime.face_crop = timed("crop", face_crop)
    try:
        yield
    finally:
        runtime.face_crop, predictor.runner = face_crop, runner
        del predictor.detect


def timed_call(predictor, times, function, *args):
    """``function(*args)`` with the CPU seconds of its stages added to ``times``, the rest to map back."""
    inner = sum(times[stage] for stage in ("detect", "crop", "landmarks"))
    start = time.process_time()
    with stage_clocks(predictor, times):
        result = function(*args)
    times["map_back"] += time.process_time() - start - (sum(times[s] for s in ("detect", "crop", "landmarks")) - inner)
    return result


def split_once(predictor, path, times):
    """``predictor.predict(path)`` by stage, adding CPU seconds to ``times``."""
    start = time.process_time()
    image = load_image(path)
    times["decode"] += time.process_time() - start
    timed_call(predictor, times, predictor.predict, image)


def throughput(predictor, paths, large_path, large_repeats):
    predictor.predict(str(paths[0]))  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        predictor.predict(str(path))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    times = dict.fromkeys(STAGES, 0.0)
    for path in paths:
        split_once(predictor, str(path), times)
    predictor.predict(str(large_path))
    large_wall, large_cpu = [], []
    for _ in range(large_repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        predictor.predict(str(large_path))
        large_wall.append(time.perf_counter() - start)
        large_cpu.append(time.process_time() - start_cpu)
    large_times = []
    for _ in range(large_repeats):
        large_times.append(dict.fromkeys(STAGES, 0.0))
        split_once(predictor, str(large_path), large_times[-1])
    return {
        "photos": len(paths), "photos_per_s": len(paths) / wall, "photos_per_cpu_s": len(paths) / cpu,
        "ms_per_photo": 1000 * wall / len(paths), "cpu_ms_per_photo": 1000 * cpu / len(paths),
        "split_cpu_ms": {stage: 1000 * seconds / len(paths) for stage, seconds in times.items()},
        "large_1920x1080_ms_median": 1000 * float(np.median(large_wall)),
        "large_1920x1080_cpu_ms_median": 1000 * float(np.median(large_cpu)),
        "large_split_cpu_ms_median": {stage: 1000 * float(np.median([times[stage] for times in large_times]))
                                      for stage in STAGES},
    }


def make_large_photo(path, folder):
    photo = load_image(path)
    canvas = np.full((1080, 1920, 3), 128, np.uint8)
    canvas[:, 420:1500] = cv2.resize(photo, (1080, 1080), interpolation=cv2.INTER_LINEAR)
    large = pathlib.Path(folder) / "large_1920x1080.jpg"
    Image.fromarray(canvas).save(large, quality=90)
    return large


def make_clip(path, folder, frames, size, fps=30.0):
    """A clip of the face of photo ``path`` moving and rolling on a grey canvas, as an MP4 in ``folder``.

    Args:
        path: an AFLW2000-3D photo.
        folder: where the clip is written.
        frames: number of frames.
        size: ``(width, height)`` of the frames.
        fps: frame rate written in the file.

    Returns:
        The clip's path.
    """
    width, height = size
    side = height // 2
    face = cv2.resize(load_image(path), (side, side), interpolation=cv2.INTER_AREA)
    clip = pathlib.Path(folder) / f"moving_face_{width}x{height}.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video here (no mp4v encoder). Received: path={str(clip)!r}")
    for index in range(frames):
        phase = 2 * np.pi * index / frames
        matrix = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), 15 * np.sin(3 * phase), 1.0)
        matrix[:, 2] += (0.3 * width * np.sin(phase) + (width - side) / 2,
                         0.15 * height * np.sin(2 * phase) + (height - side) / 2)
        canvas = np.full((height, width, 3), 128, np.uint8)
        cv2.warpAffine(face, matrix, (width, height), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
        writer.write(np.ascontiguousarray(canvas[..., ::-1]))
    writer.release()
    return clip


def clip_frames(clip):
    """The frames of ``clip`` as ``fpezoo predict`` reads them (RGB views of OpenCV's BGR frames)."""
    capture = cv2.VideoCapture(str(clip))
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                return
            yield load_image(frame_bgr, bgr=True)
    finally:
        capture.release()


def video_throughput(predictor, clip):
    """Frames per second of ``fpezoo predict``'s video loop (reading, :class:`FaceTracker`) and its split."""
    for frame in clip_frames(clip):  # warm-up at the clip's frame size
        predictor.landmarks([frame], [predictor.detect(frame, rotations="off")])
        break
    tracker, frames = FaceTracker(predictor), 0
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in clip_frames(clip):
        tracker.update(frame)
        frames += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    detector_runs = tracker.detections_run
    times = dict.fromkeys(STAGES, 0.0)
    tracker = FaceTracker(predictor)
    frame_iterator = clip_frames(clip)
    while True:
        start = time.process_time()
        frame = next(frame_iterator, None)
        times["decode"] += time.process_time() - start
        if frame is None:
            break
        timed_call(predictor, times, tracker.update, frame)
    every, every_cpu = time.perf_counter(), time.process_time()
    for frame in clip_frames(clip):
        predictor.landmarks([frame], [predictor.detect(frame, rotations="off")])
    every, every_cpu = time.perf_counter() - every, time.process_time() - every_cpu
    return {
        "frames": frames, "detector_runs": detector_runs,
        "frames_per_s": frames / wall, "frames_per_cpu_s": frames / cpu, "ms_per_frame": 1000 * wall / frames,
        "split_cpu_ms": {stage: 1000 * seconds / frames for stage, seconds in times.items()},
        "frames_per_s_detector_every_frame": frames / every,
        "frames_per_cpu_s_detector_every_frame": frames / every_cpu,
    }


def weights_sha256(model):
    """The sha256 of registered weights (the default model for None), else None."""
    from fpezoo.runtime import default_model_name
    from fpezoo.weights import registry_entry

    name = default_model_name() if model is None else model
    return registry_entry(name)["sha256"] if not str(name).endswith(".keras") else None


def cold_start(model, path):
    code = ("import time; start = time.perf_counter(); from fpezoo import LandmarkDetector; "
            f"faces = LandmarkDetector({model!r}).predict({str(path)!r}); "
            "print(time.perf_counter() - start)")
    start = time.perf_counter()
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return {"process_s": time.perf_counter() - start, "in_process_s": float(output.stdout.split()[-1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registered weights name or .keras (default: the default model)")
    parser.add_argument("--detector", default="default")
    parser.add_argument("--rotations", nargs="+", default=["auto", "off"],
                        help="rotation modes of the predictor to measure")
    parser.add_argument("--count", type=int, default=200, help="AFLW2000-3D photos (the first ones)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random angles")
    parser.add_argument("--large-repeats", type=int, default=20)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--video-frames", type=int, default=300, help="frames of the video clip (0: no video)")
    parser.add_argument("--video-size", default="1280x720", help="WIDTHxHEIGHT of the video clip")
    parser.add_argument("--output", default="end_to_end.json")
    args = parser.parse_args()
    try:
        video_size = tuple(int(value) for value in args.video_size.lower().split("x"))
    except ValueError:
        video_size = ()
    if len(video_size) != 2 or min(video_size) < 64:
        parser.error(f"--video-size must be WIDTHxHEIGHT, both at least 64. Received: video_size={args.video_size!r}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    root = evaluation.data_dir()
    if not root.is_dir():
        sys.exit(f"Face data not found: set FPEZOO_DATA. Received: path={root}")
    paths, truths = aflw2000(root, args.count)
    results = {"model": args.model, "weights_sha256": weights_sha256(args.model), "count": args.count,
               "seed": args.seed, "load_average_before": list(os.getloadavg()), "modes": {}}
    with tempfile.TemporaryDirectory() as folder:
        large = make_large_photo(paths[0], folder)
        for mode in args.rotations:
            predictor = LandmarkDetector(args.model, detector=args.detector, rotations=mode)
            entry = {"predictor": repr(predictor), "rotations": predictor.rotations,
                     "throughput": throughput(predictor, paths, large, args.large_repeats)}
            if not args.skip_accuracy:
                entry["accuracy"] = accuracy(predictor, paths, truths, args.seed)
            results["modes"][mode] = entry
        if args.video_frames > 0:
            predictor = LandmarkDetector(args.model, detector=args.detector)
            clip = make_clip(paths[0], folder, args.video_frames, video_size)
            results["video"] = {"predictor": repr(predictor), "size": list(video_size), "codec": "mp4v",
                                "source_photo": paths[0].name,
                                **video_throughput(predictor, clip)}
        results["cold_start"] = cold_start(args.model, paths[0])
    results["load_average_after"] = list(os.getloadavg())
    pathlib.Path(args.output).write_text(json.dumps(results, indent=2))
    print_tables(results)
    print(f"wrote {args.output}")


def print_tables(results):
    print(f"{'rotations':<10}{'set':<8}{'found':>7}{'NME %':>8}{'NME common %':>14}")
    for mode, entry in results["modes"].items():
        for name, r in entry.get("accuracy", {}).items():
            print(f"{mode:<10}{name:<8}{r['faces_found']:>4}/{r['photos']:<3}{100 * r['nme']:>7.2f}"
                  f"{100 * r['nme_common']:>10.2f} ({r['common_faces']})")
    print("one core; wall clock and CPU time of the process (equal on an idle machine); split in CPU ms")
    print(f"{'rotations':<10}{'photos/s':>9}{'per CPU s':>10}{'CPU ms':>8}" + "".join(f"{s:>10}" for s in STAGES))
    for mode, entry in results["modes"].items():
        t = entry["throughput"]
        print(f"{mode:<10}{t['photos_per_s']:>9.1f}{t['photos_per_cpu_s']:>10.1f}{t['cpu_ms_per_photo']:>8.2f}"
              + "".join(f"{t['split_cpu_ms'][s]:>10.2f}" for s in STAGES))
        print(f"{'  1920x1080':<19}{t['large_1920x1080_ms_median']:>8.1f} ms{t['large_1920x1080_cpu_ms_median']:>6.1f}"
              + "".join(f"{t['large_split_cpu_ms_median'][s]:>10.2f}" for s in STAGES))
    if "video" in results:
        v = results["video"]
        print(f"video {v['size'][0]}x{v['size'][1]}, {v['frames']} frames, FaceTracker ({v['detector_runs']} detector "
              f"runs): {v['frames_per_s']:.1f} frames/s ({v['frames_per_cpu_s']:.1f} per CPU s); detector on every "
              f"frame: {v['frames_per_s_detector_every_frame']:.1f} frames/s "
              f"({v['frames_per_cpu_s_detector_every_frame']:.1f} per CPU s)")
        print(f"{'  video, CPU ms per frame':<37}" + "".join(f"{v['split_cpu_ms'][s]:>10.2f}" for s in STAGES))
    cold = results["cold_start"]
    print(f"cold start (new process, import + predictor + one photo): {cold['process_s']:.2f} s "
          f"({cold['in_process_s']:.2f} s after the interpreter started)")
    print("load average before/after:", [round(v, 2) for v in results["load_average_before"]], "/",
          [round(v, 2) for v in results["load_average_after"]])


if __name__ == "__main__":
    main()
