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
time spent waiting for the core). The split (CPU time) runs the same steps one
by one: decode
(:func:`fpezoo.imageio.load_image`), detect (:meth:`LandmarkDetector.detect`,
with the quarter-turn search of the mode), crop, landmarks (the model on the
batch of crops) and map back (inverse crop transform, visibility, and with
``"best"`` the choice among each face's turns). A
1920x1080 JPEG (an AFLW2000-3D photo scaled to 1080 rows on a grey canvas) is
timed the same way (``--large-repeats`` times). Cold start runs ``python -c``
in a fresh process: import, build the predictor, one photo.

Usage::

    python benchmarks/end_to_end.py --model fpenet68_w32 --count 200 \\
        --output docs/benchmarks/end_to_end.json

Data come from ``$FPEZOO_DATA`` or ``../shared/data``. Speed depends on the
machine's load: the load average is recorded before and after.
"""

import argparse
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

from fpezoo import evaluation  # noqa: E402
from fpezoo.coordinates import quarter_turn_transform  # noqa: E402
from fpezoo.data.pipeline import invert_transform, transform_points  # noqa: E402
from fpezoo.detection import landmark_box  # noqa: E402
from fpezoo.imageio import load_image  # noqa: E402
from fpezoo.predictor import LandmarkDetector, _most_likely_faces  # noqa: E402

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


def split_once(predictor, path, times):
    """The steps of ``predictor.predict(path)`` one by one, adding CPU seconds to ``times``."""
    clock = time.process_time
    start = clock()
    image = load_image(path)
    times["decode"] += clock() - start
    start = clock()
    detections = predictor.detect(image, merge=False)
    times["detect"] += clock() - start
    start = clock()
    calibration = predictor.detector.landmark_box_calibration
    crops, transforms, rolls = [], [], []
    for detection in detections:
        roll = predictor._roll(detection.points)
        crop, transform = predictor.crop(image, landmark_box(detection.box, calibration, roll), roll=roll)
        crops.append(crop)
        transforms.append(transform)
        rolls.append(roll)
    times["crop"] += clock() - start
    start = clock()
    keypoints, confidence = predictor._run_model(crops)
    times["landmarks"] += clock() - start
    start = clock()
    faces = [predictor._face(image, detection, crop_keypoints, crop_confidence, transform, roll)
             for detection, crop_keypoints, crop_confidence, transform, roll in zip(
                 detections, keypoints, confidence, transforms, rolls)]
    if predictor.rotations == "best":
        _most_likely_faces(faces)
    times["map_back"] += clock() - start


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
    large_times = dict.fromkeys(STAGES, 0.0)
    for _ in range(large_repeats):
        split_once(predictor, str(large_path), large_times)
    return {
        "photos": len(paths), "photos_per_s": len(paths) / wall, "photos_per_cpu_s": len(paths) / cpu,
        "ms_per_photo": 1000 * wall / len(paths), "cpu_ms_per_photo": 1000 * cpu / len(paths),
        "split_cpu_ms": {stage: 1000 * seconds / len(paths) for stage, seconds in times.items()},
        "large_1920x1080_ms_median": 1000 * float(np.median(large_wall)),
        "large_1920x1080_cpu_ms_median": 1000 * float(np.median(large_cpu)),
        "large_split_cpu_ms": {stage: 1000 * seconds / large_repeats for stage, seconds in large_times.items()},
    }


def make_large_photo(path, folder):
    photo = load_image(path)
    canvas = np.full((1080, 1920, 3), 128, np.uint8)
    canvas[:, 420:1500] = cv2.resize(photo, (1080, 1080), interpolation=cv2.INTER_LINEAR)
    large = pathlib.Path(folder) / "large_1920x1080.jpg"
    Image.fromarray(canvas).save(large, quality=90)
    return large


def weights_sha256(model):
    """The sha256 of registered weights (the default model for None), else None."""
    from fpezoo.predictor import default_model_name
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
    parser.add_argument("--output", default="end_to_end.json")
    args = parser.parse_args()
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
              + "".join(f"{t['large_split_cpu_ms'][s]:>10.2f}" for s in STAGES))
    cold = results["cold_start"]
    print(f"cold start (new process, import + predictor + one photo): {cold['process_s']:.2f} s "
          f"({cold['in_process_s']:.2f} s after the interpreter started)")
    print("load average before/after:", [round(v, 2) for v in results["load_average_before"]], "/",
          [round(v, 2) for v in results["load_average_after"]])


if __name__ == "__main__":
    main()
