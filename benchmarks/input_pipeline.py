"""Throughput (faces/s) of the fpezoo input pipeline on this machine's CPU.

Usage::

    PYTHONPATH=. python benchmarks/input_pipeline.py [--batches 30] [--repeats 3]
        [--batch-size 64] [--data ../shared/data] [--output input_pipeline.json]

For two real sources it times batches of 80x80x1 FPENet inputs (decode, crop,
augmentation, ``y_true``), after two warm-up batches:

* ``aflw2000-3d``: 450x450 JPEG photos cropped from the face box;
* ``aflw-crops``: 120x120 JPEG loose crops (the 21 human points converted to
  the 68-point scheme, as in mixed supervision).

and three ways of running the per-face Python work:

* ``map``: ``fpezoo.data.pipeline.make_dataset`` (``tf.numpy_function`` in a
  ``map`` with ``num_parallel_calls=AUTOTUNE``), with and without augmentation;
* ``generator``: one ``Dataset.from_generator`` (a single Python thread);
* ``generator x N``: N generators interleaved with ``num_parallel_calls=N``.

Each variant is timed ``--repeats`` times, round-robin with the others (so a
burst of load from other processes hits all variants alike); the table gives
the median and the range. It prints a table and writes the numbers as JSON.
"""

import argparse
import json
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fpezoo.data import pipeline, readers  # noqa: E402

INPUT_SHAPE = (80, 80, 1)


def generator_dataset(maker, batch_size, workers, seed):
    """The same examples as ``make_dataset`` made by ``workers`` Python generators."""
    count = len(maker.records)
    height, width, channels = maker.input_shape
    signature = (
        tf.TensorSpec((height, width, channels), tf.float32),
        tf.TensorSpec((maker.num_keypoints, 3), tf.float32),
    )

    def examples(worker):
        rng = np.random.default_rng([seed, int(worker)])
        while True:
            for index in rng.permutation(count)[int(worker)::workers]:
                yield maker(index, int(rng.integers(2**62)))

    def one_worker(worker):
        return tf.data.Dataset.from_generator(examples, args=(worker,), output_signature=signature)

    if workers == 1:
        dataset = one_worker(0)
    else:
        dataset = tf.data.Dataset.range(workers).interleave(
            one_worker, cycle_length=workers, num_parallel_calls=workers, deterministic=False)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def faces_per_second(dataset, batches, batch_size):
    iterator = iter(dataset)
    for _ in range(2):  # warm-up: threads, autotuning, file cache
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per variant")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default=os.environ.get("FPEZOO_DATA", "../shared/data"))
    parser.add_argument("--output", default="input_pipeline.json")
    args = parser.parse_args()

    data = pathlib.Path(args.data)
    if not data.is_dir():
        parser.error(f"the shared data folder is missing. Received: --data={args.data}")
    sources = {
        "aflw2000-3d": (readers.read_aflw2000_3d(data / "aflw2000-3d"), {"enlarge": 1.2, "jitter": 0.05}),
        "aflw-crops": (readers.read_aflw_crops(data / "aflw-crops"), {"enlarge": 1.0, "jitter": 0.05}),
    }
    workers = os.cpu_count() or 1
    rows = []
    for source, (records, crop) in sources.items():
        common = {"input_shape": INPUT_SHAPE, "scheme": "ibug68", "batch_size": args.batch_size,
                  "shuffle": True, "repeat": True, "seed": 0}
        variants = {
            "map, augmented": pipeline.make_dataset(records, augment=True, **crop, **common),
            "map, evaluation (no augmentation)": pipeline.make_dataset(
                records, augment=None, enlarge=crop["enlarge"], **common),
        }
        maker = pipeline.ExampleMaker(records, INPUT_SHAPE, augment=True, scheme="ibug68", **crop)
        variants["generator, augmented"] = generator_dataset(maker, args.batch_size, 1, 0)
        variants[f"generator x {workers}, augmented"] = generator_dataset(maker, args.batch_size, workers, 0)
        rates = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant, dataset in variants.items():
                rates[variant].append(faces_per_second(dataset, args.batches, args.batch_size))
        for variant, measured in rates.items():
            median = float(np.median(measured))
            rows.append({"source": source, "variant": variant, "faces_per_second": round(median, 1),
                         "measurements": [round(rate, 1) for rate in measured]})
            print(f"{source:12s}  {variant:36s}  {median:8.1f} faces/s  "
                  f"({min(measured):.0f}-{max(measured):.0f})", flush=True)

    result = {
        "input_shape": list(INPUT_SHAPE),
        "batch_size": args.batch_size,
        "timed_batches": args.batches,
        "repeats": args.repeats,
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "rows": rows,
    }
    pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
