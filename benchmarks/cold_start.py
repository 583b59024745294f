"""Cold start of ``fpezoo predict photo.jpg``: wall time and where it goes.

Each measurement is a fresh process (the median of ``--repeats``):

* ``fpezoo predict PHOTO --output OUT.jsonl`` with the default model and
  detector, by the wall clock, with the LiteRT cache of the default weights
  empty (the first run on a machine: the export is written, which needs
  TensorFlow) and filled (every later run);
* the same steps in one process, timed one by one (``breakdown``): importing
  the predictor, loading the model (:func:`fpezoo.runtime.load_runner`),
  building the face detector, the first photo (decode, detection, landmarks),
  and whether TensorFlow or Keras was imported on the way;
* the floors, measured in the same run: ``python -c pass`` (the interpreter)
  and ``python -c "import numpy, cv2, PIL.Image, ai_edge_litert.interpreter"``
  (the libraries the fast path needs), and ``fpezoo --version``, ``fpezoo
  --help`` and ``fpezoo card`` (which must not import TensorFlow).

Usage::

    python benchmarks/cold_start.py --output docs/benchmarks/cold_start.json

The photo is the bundled demo portrait (``fpezoo.demo.DEMO_IMAGE``) unless
``--photo`` names another. Times depend on the machine's load and disk cache:
the load average is recorded before and after.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

BREAKDOWN = r"""
import json, sys, time
start = time.perf_counter()
marks = {}
from fpezoo.predictor import LandmarkDetector
from fpezoo.detection import get_detector
from fpezoo.imageio import load_image
from fpezoo.runtime import load_runner
marks["import"] = time.perf_counter()
runner = load_runner(None)
marks["model"] = time.perf_counter()
detector = get_detector("default")
marks["detector"] = time.perf_counter()
predictor = LandmarkDetector(runner.spec.name, detector=detector)
marks["predictor"] = time.perf_counter()
image = load_image(sys.argv[1])
marks["decode"] = time.perf_counter()
faces = predictor.predict(image)
marks["first_photo"] = time.perf_counter()
previous, steps = start, {}
for name, mark in marks.items():
    steps[name] = mark - previous
    previous = mark
print(json.dumps({"steps_s": steps, "total_s": previous - start, "faces": len(faces),
                  "backend": predictor.backend, "model": runner.spec.name,
                  "tensorflow_imported": "tensorflow" in sys.modules, "keras_imported": "keras" in sys.modules}))
"""


def timed(command, env, repeats):
    """Median and all wall times of ``command`` run ``repeats`` times (each must succeed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=None, help="photo to run (default: the bundled demo portrait)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="cold_start.json")
    args = parser.parse_args()
    from fpezoo.demo import DEMO_IMAGE

    photo = pathlib.Path(args.photo or DEMO_IMAGE)
    if not photo.is_file():
        sys.exit(f"Photo not found. Received: photo={str(photo)!r}")
    fpezoo_command = [sys.executable, "-m", "fpezoo"]
    results = {"photo": str(photo.name), "repeats": args.repeats, "load_average_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="fpezoo-cold-") as folder:
        folder = pathlib.Path(folder)
        env = {**os.environ, "FPEZOO_CACHE": str(folder / "cache")}

        def predict_command(name):
            return fpezoo_command + ["predict", str(photo), "--output", str(folder / name), "--force", "--no-progress"]

        first = []
        for run in range(args.repeats):  # each with an empty cache
            fresh = {**env, "FPEZOO_CACHE": str(folder / f"empty{run}")}
            first.append(timed(predict_command("first.jsonl"), fresh, 1)["runs_s"][0])
        results["predict_empty_cache"] = {"median_s": round(statistics.median(first), 3), "runs_s": first}
        subprocess.run(predict_command("warm-up.jsonl"), env=env, check=True, capture_output=True)  # fills the cache
        results["predict_cached"] = timed(predict_command("cached.jsonl"), env, args.repeats)
        faces = [json.loads(line) for line in (folder / "cached.jsonl").read_text().splitlines()]
        results["faces_found"] = sum(len(record.get("faces", [])) for record in faces)
        breakdowns = []
        for _ in range(args.repeats):
            output = subprocess.run([sys.executable, "-c", BREAKDOWN, str(photo)], env=env, check=True,
                                    capture_output=True, text=True)
            breakdowns.append(json.loads(output.stdout.strip().splitlines()[-1]))
        steps = {name: round(statistics.median(b["steps_s"][name] for b in breakdowns), 3)
                 for name in breakdowns[0]["steps_s"]}
        results["breakdown_cached"] = {**breakdowns[0], "steps_s": steps,
                                       "total_s": round(statistics.median(b["total_s"] for b in breakdowns), 3)}
        results["floors"] = {
            "python": timed([sys.executable, "-c", "pass"], env, args.repeats),
            "libraries": timed([sys.executable, "-c", "import numpy, cv2, PIL.Image, ai_edge_litert.interpreter"],
                               env, args.repeats),
            "fpezoo --version": timed(fpezoo_command + ["--version"], env, args.repeats),
            "fpezoo --help": timed(fpezoo_command + ["--help"], env, args.repeats),
            "fpezoo card": timed(fpezoo_command + ["card"], env, args.repeats),
        }
    results["load_average_after"] = list(os.getloadavg())
    pathlib.Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'measurement':34s} {'median s':>9s}")
    print(f"{'fpezoo predict, empty cache':34s} {results['predict_empty_cache']['median_s']:9.3f}")
    print(f"{'fpezoo predict, cached LiteRT':34s} {results['predict_cached']['median_s']:9.3f}")
    for name, value in results["floors"].items():
        print(f"{name:34s} {value['median_s']:9.3f}")
    print("breakdown (one process, cached): " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
          + f"; TensorFlow imported: {results['breakdown_cached']['tensorflow_imported']}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
