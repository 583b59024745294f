"""Training throughput of FPENet beside the input pipeline's, on this CPU.

Usage::

    python benchmarks/training_throughput.py [--widths 64 32] [--batch-size 64]
        [--steps 20] [--pipeline-batches 30] [--output training_throughput.json]

Two measurements, in faces per second:

* **training**: ``model.fit`` steps of FPENet-68 (80x80x1 input, Wing loss,
  AdamW, the setup of ``fpezoo train``) on one batch held in memory, so only
  the forward and backward passes are timed (after a warm-up epoch);
* **pipeline**: batches of the training input pipeline
  (:func:`fpezoo.data.pipeline.make_dataset` with augmentation and crop jitter,
  AFLW crops from ``$FPEZOO_DATA`` or ``../shared/data``), iterated without a
  model.

When the pipeline delivers more faces per second than training consumes, the
pipeline is not the bottleneck (``tf.data`` runs it in parallel with the
training steps; on a shared CPU both compete for the same cores). Prints a
table and writes the numbers as JSON.
"""

import argparse
import json
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fpezoo  # noqa: E402
from fpezoo import losses  # noqa: E402
from input_pipeline import faces_per_second  # noqa: E402  (benchmarks/ is on sys.path)

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def training_faces_per_second(width, batch_size, steps):
    """Faces/s of ``fit`` on FPENet-68 of ``width`` (one in-memory batch, repeated)."""
    keras.utils.set_random_seed(0)
    model = fpezoo.FPENet(num_keypoints=68, width=width)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=losses.WingLoss(scheme="ibug68"))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, 80, 80, 1)).astype("float32")
    labels = np.concatenate(
        [rng.uniform(10, 70, (batch_size, 68, 2)), np.ones((batch_size, 68, 1))], axis=-1
    ).astype("float32")
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # warm-up: tracing
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def pipeline_faces_per_second(data_dir, batch_size, batches):
    """Faces/s of the augmented training pipeline on AFLW crops (human + teacher labels)."""
    from fpezoo.data import pipeline, readers

    folder = data_dir / "aflw-crops"
    human = readers.read_aflw_crops(folder)[:4000]
    teacher = readers.read_aflw_crops(folder, teacher=True)[:4000]
    sources = [
        pipeline.make_dataset(records, input_shape=(80, 80, 1), color="grayscale", augment=True,
                              jitter=0.05, batch_size=None, shuffle=True, repeat=True,
                              scheme="ibug68", seed=index)
        for index, records in enumerate((human, teacher))
    ]
    dataset = pipeline.mix_sources(sources, [1.0, 1.0], batch_size=batch_size, seed=0)
    return faces_per_second(dataset, batches, batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per width")
    parser.add_argument("--pipeline-batches", type=int, default=30)
    parser.add_argument("--output", default="training_throughput.json")
    args = parser.parse_args()

    data_dir = pathlib.Path(os.environ.get("FPEZOO_DATA") or PROJECT_ROOT.parent / "shared" / "data")
    rows = []
    if (data_dir / "aflw-crops").is_dir():
        rate = pipeline_faces_per_second(data_dir, args.batch_size, args.pipeline_batches)
        rows.append({"what": "input pipeline (augmented AFLW crops)", "faces_per_second": rate})
    else:
        print(f"skipping the pipeline: no AFLW crops in {data_dir} (set FPEZOO_DATA)")
    for width in args.widths:
        rate = training_faces_per_second(width, args.batch_size, args.steps)
        rows.append({"what": f"training FPENet-68 width {width}", "faces_per_second": rate})

    environment = {
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "batch_size": args.batch_size,
        "note": "wall-clock on a possibly shared CPU",
    }
    print(f"{'measurement':<42} faces/s   (batch {args.batch_size}, {os.cpu_count()} CPUs)")
    for row in rows:
        print(f"{row['what']:<42} {row['faces_per_second']:8.1f}")
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump({"environment": environment, "results": rows}, file, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
