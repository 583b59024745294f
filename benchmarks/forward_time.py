"""CPU forward time, parameters and FLOPs per face of the fpezoo models.

Usage::

    python benchmarks/forward_time.py [--batches 1 64] [--repeats 20]
                                      [--only fpenet] [--output forward_time.json]

For every entry of ``MODELS`` it builds the model with random weights, times
``model(x, training=False)`` inside a ``tf.function`` at each batch size (after
warm-up; the median of ``--repeats`` runs) and prints a table; the same numbers
are written as JSON.

FLOPs are counted analytically from the layer shapes: 2 FLOPs per multiply-add
of every ``Conv2D``, ``Conv2DTranspose``, ``DepthwiseConv2D``,
``SeparableConv2D`` and ``Dense`` layer (bias, activations, pooling and decoding
are not counted). Cross-check: TensorFlow's profiler (``float_operation`` on the
frozen batch-1 graph) counts 0.119 / 1.672 / 0.539 GFLOPs for FPENet w16 hm80 /
w64 hm80 / w64 hm40 where this count gives 0.116 / 1.667 / 0.537.

To add a model, add one line to ``MODELS``: a label, the name of an ``fpezoo``
builder and its keyword arguments.
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fpezoo  # noqa: E402

# label -> (fpezoo builder name, keyword arguments). One line per model.
MODELS = {
    "fpenet w64 hm80 (TAO base)": ("FPENet", {"num_keypoints": 68, "width": 64}),
    "fpenet w64 hm40": ("FPENet", {"num_keypoints": 68, "width": 64, "heatmap_size": 40}),
    "fpenet w32 hm80": ("FPENet", {"num_keypoints": 68, "width": 32}),
    "fpenet w32 hm40": ("FPENet", {"num_keypoints": 68, "width": 32, "heatmap_size": 40}),
    "fpenet w16 hm80": ("FPENet", {"num_keypoints": 68, "width": 16}),
    "fpenet w16 hm40": ("FPENet", {"num_keypoints": 68, "width": 16, "heatmap_size": 40}),
    "retail5 (OMZ retail-0009)": ("RetailLandmarks5", {}),
    "fan 4x256 in256 (FAN-4)": ("FAN", {"num_stacks": 4}),
    "fan 1x256 in256": ("FAN", {"num_stacks": 1}),
    "fan 1x128 in128": ("FAN", {"num_stacks": 1, "width": 128, "input_size": 128}),
    "fan 1x64 in128 (lite)": ("FAN", {"num_stacks": 1, "width": 64, "input_size": 128}),
    "fan3d 4x256 + resnet152": ("FAN", {"num_stacks": 4, "dimensions": 3}),
    "fan3d 1x64 in128 + r50 w32": ("FAN", {"num_stacks": 1, "width": 64, "input_size": 128, "dimensions": 3, "depth_blocks": (3, 4, 6, 3), "depth_width": 32}),
    "fan3d 1x64 in128 + lite": ("FAN", {"num_stacks": 1, "width": 64, "input_size": 128, "dimensions": 3, "depth_blocks": (1, 1, 1, 1), "depth_width": 16}),
}


def _spatial(shape):
    return int(np.prod([d for d in shape[1:-1]]))


def layer_flops(layer):
    """FLOPs per sample of one layer (2 per multiply-add), 0 for uncounted types."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        kernel_h, kernel_w = layer.kernel_size
        channels = layer.input.shape[-1]
        depthwise = kernel_h * kernel_w * channels * layer.depth_multiplier
        pointwise = channels * layer.depth_multiplier * layer.filters
        return 2 * _spatial(layer.output.shape) * (depthwise + pointwise)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel_h, kernel_w = layer.kernel_size
        channels = layer.input.shape[-1]
        return 2 * _spatial(layer.output.shape) * kernel_h * kernel_w * channels * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kernel_h, kernel_w = layer.kernel_size
        return 2 * _spatial(layer.input.shape) * kernel_h * kernel_w * layer.input.shape[-1] * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        kernel_h, kernel_w = layer.kernel_size
        per_output = kernel_h * kernel_w * layer.input.shape[-1] // layer.groups
        return 2 * _spatial(layer.output.shape) * per_output * layer.filters
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.input.shape[1:])) * layer.units
    return 0


def model_flops(model):
    """FLOPs per sample of a functional model, nested models included."""
    total = 0
    for layer in model.layers:
        total += model_flops(layer) if isinstance(layer, keras.Model) else layer_flops(layer)
    return total


def time_forward(model, batch, repeats):
    """Median seconds of one forward pass of ``batch`` random faces."""
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ValueError(f"Benchmark entries need a fixed input shape. Received: input_shape={shape}")
    dtype = model.inputs[0].dtype
    faces = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, *shape)).astype(dtype))
    forward = tf.function(lambda x: model(x, training=False))
    for _ in range(3):
        tf.nest.map_structure(lambda t: t.numpy(), forward(faces))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), forward(faces))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", default="", help="run only entries whose label contains this")
    parser.add_argument("--output", default="forward_time.json")
    args = parser.parse_args(argv)

    rows = []
    for label, (builder, kwargs) in MODELS.items():
        if args.only not in label:
            continue
        model = getattr(fpezoo, builder)(**kwargs)
        row = {
            "model": label, "builder": builder, "config": kwargs,
            "input_shape": list(model.inputs[0].shape[1:]),
            "params": int(model.count_params()),
            "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "gflops_per_face": model_flops(model) / 1e9,
        }
        for batch in args.batches:
            seconds = time_forward(model, batch, args.repeats)
            row[f"batch{batch}_ms"] = 1000 * seconds
            row[f"batch{batch}_faces_per_s"] = batch / seconds
        rows.append(row)
        keras.backend.clear_session()

    header = f"{'model':<28} {'params':>9} {'GFLOPs':>7}" + "".join(
        f" {'b' + str(b) + ' ms':>10} {'b' + str(b) + ' faces/s':>13}" for b in args.batches)
    print(header)
    for row in rows:
        print(f"{row['model']:<28} {row['params']:>9,} {row['gflops_per_face']:>7.3f}" + "".join(
            f" {row[f'batch{b}_ms']:>10.2f} {row[f'batch{b}_faces_per_s']:>13.1f}"
            for b in args.batches))
    environment = {
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "note": "CPU shared with other processes while measured; times are under load.",
    }
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump({"environment": environment, "results": rows}, file, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
