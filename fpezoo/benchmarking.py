"""Inference speed of every model family on every CPU backend: ``fpezoo benchmark``.

For each model (``MODELS``: family and variant) and backend (``BACKENDS``):

* latency of one face (batch 1): median and 90th percentile, in ms;
* throughput at batch 64, in faces per second;
* FLOPs per face, counted on the ONNX export (2 per multiply-add of ``Conv``,
  ``ConvTranspose``, ``MatMul`` and ``Gemm``; pooling, activations and decoding
  are not counted), and the GFLOP/s achieved at batch 64 and at batch 1;
* beside them, the float32 GEMM rate (GFLOP/s) NumPy reaches in the same run,
  on all cores and on one core (a 1024x1024 matrix product).

Backends: ``keras`` (``model.predict_on_batch``), ``keras_compiled`` (the model
call in a ``tf.function``), ``savedmodel`` (the exported SavedModel's serving
signature), ``onnxruntime_1t`` / ``onnxruntime_2t`` (1 or 2 intra-op threads),
``litert_fp32`` / ``litert_fp16`` / ``litert_int8`` (``ai-edge-litert``, one
thread, XNNPACK). Every backend runs the same exported graph, preprocessing and
decoding included. Models have random weights (speed does not depend on them);
INT8 is calibrated on real MTFL crops when ``../shared/data`` is present, else on
random images (ranges then differ, speed does not).

The crop step of the image pipeline (``fpezoo.coordinates.crop_face`` of a face
in a 640x480 frame to the 80x80 input) is timed too, to compare the whole
per-face cost with the goal of 2 ms per face on one core.

Command line::

    fpezoo benchmark [--quick] [--models fpenet_w16_hm40 retail] [--backends onnxruntime_1t]
                     [--output inference_speed.json]

``--quick`` runs the three lightest models with fewer repeats. Prints a table and
writes JSON; ``benchmarks/inference_speed.py`` runs the same. Speed is measured,
never asserted in tests (the CPU may be shared while it runs: the JSON records
the load average).
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# label -> (fpezoo builder, keyword arguments). One line per family / variant.
MODELS = {
    "fpenet_w64_hm80": ("FPENet", {"num_keypoints": 68, "width": 64}),
    "fpenet_w64_hm40": ("FPENet", {"num_keypoints": 68, "width": 64, "heatmap_size": 40}),
    "fpenet_w32_hm40": ("FPENet", {"num_keypoints": 68, "width": 32, "heatmap_size": 40}),
    "fpenet_w24_hm40": ("FPENet", {"num_keypoints": 68, "width": 24, "heatmap_size": 40}),
    "fpenet_w16_hm80": ("FPENet", {"num_keypoints": 68, "width": 16}),
    "fpenet_w16_hm40": ("FPENet", {"num_keypoints": 68, "width": 16, "heatmap_size": 40}),
    "retail": ("RetailLandmarks5", {}),
    "fan_1x128_w64": ("FAN", {"num_keypoints": 68, "num_stacks": 1, "width": 64, "input_size": 128}),
    "fan_4x256_w256": ("FAN", {"num_keypoints": 68}),
}
QUICK_MODELS = ("fpenet_w16_hm40", "fpenet_w16_hm80", "retail")
BACKENDS = ("keras", "keras_compiled", "savedmodel", "onnxruntime_1t", "onnxruntime_2t",
            "litert_fp32", "litert_fp16", "litert_int8")
THROUGHPUT_BATCH = 64
GEMM_SIZE = 1024


def onnx_flops_per_face(onnx_model):
    """FLOPs of one face through an ONNX graph (batch fixed to 1).

    Counts 2 FLOPs per multiply-add of ``Conv``, ``ConvTranspose``, ``MatMul``
    and ``Gemm`` nodes, with shapes from ONNX shape inference.

    Args:
        onnx_model: an ``onnx.ModelProto`` whose single input has fixed height,
            width and channels (the batch axis may be dynamic).

    Returns:
        The FLOPs (an int).
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    for dim_index, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        if dim_index == 0:
            dim.Clear()
            dim.dim_value = 1
        elif not dim.HasField("dim_value"):
            raise ValueError(
                "FLOPs need fixed input height, width and channels. "
                f"Received: input dims={model.graph.input[0].type.tensor_type.shape}"
            )
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)

    def shape(name, node):
        if name not in shapes:
            raise ValueError(f"Shape inference left {name!r} of {node.op_type} node {node.name!r} "
                             "unknown. Received: an ONNX graph with dynamic inner shapes")
        return shapes[name]

    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            weights, output = shape(node.input[1], node), shape(node.output[0], node)
            total += 2 * int(np.prod(output)) * int(np.prod(weights[1:]))
        elif node.op_type == "ConvTranspose":
            weights, inputs = shape(node.input[1], node), shape(node.input[0], node)
            total += 2 * int(np.prod(inputs)) * int(np.prod(weights[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            left, output = shape(node.input[0], node), shape(node.output[0], node)
            inner = left[-2] if node.op_type == "Gemm" and _attribute(node, "transA") else left[-1]
            total += 2 * int(np.prod(output)) * inner
    return total


def _attribute(node, name):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), 0)


def gemm_gflops(size=GEMM_SIZE, repeats=5):
    """Float32 GEMM rate of NumPy in this process (GFLOP/s, best of ``repeats``)."""
    rng = np.random.default_rng(0)
    left = rng.standard_normal((size, size), dtype=np.float32)
    right = rng.standard_normal((size, size), dtype=np.float32)
    left @ right
    best = min(_seconds(lambda: left @ right) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def single_core_gemm_gflops(size=GEMM_SIZE):
    """The same GEMM in a child process limited to one BLAS thread."""
    environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                       MKL_NUM_THREADS="1")
    code = f"from fpezoo.benchmarking import gemm_gflops; print(gemm_gflops({size}))"
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                            text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def _seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def time_runs(function, repeats, warmup=3):
    """Seconds of each of ``repeats`` calls of ``function`` after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    return [_seconds(function) for _ in range(repeats)]


def crop_milliseconds(repeats):
    """Median ms of cropping one face of a 640x480 frame to 80x80 with ``crop_face``."""
    try:
        from fpezoo.coordinates import crop_face
    except ImportError:
        return None
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    box = (250, 150, 390, 310)
    times = time_runs(lambda: crop_face(frame, box, output_size=(80, 80)), repeats)
    return 1000 * statistics.median(times)


def _calibration_crops(size, channels, count=64):
    """Real MTFL crops at ``size`` when the shared data is here, else random ones."""
    from fpezoo.deploy.convert import CalibrationImages
    from fpezoo.evaluation import data_dir

    folder = data_dir() / "mtfl" / "AFLW"
    if folder.is_dir():
        color = "grayscale" if channels == 1 else "rgb"
        return CalibrationImages(folder, size, channels, color, limit=count).array(), "mtfl"
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (count, *size, channels)).astype("float32"), "random"


def _runners(model, backends, work):
    """``{backend: function(images) -> outputs}`` for the requested backends."""
    from fpezoo.deploy import export
    from fpezoo.runtime import LiteRTRunner, OnnxRunner

    spec = export.export_signature(model, needs_fixed_size=True)
    runners = {}
    if "keras" in backends:
        runners["keras"] = model.predict_on_batch
    if "keras_compiled" in backends:
        import tensorflow as tf

        compiled = tf.function(lambda x: model(x, training=False))
        runners["keras_compiled"] = lambda x: [t.numpy() for t in compiled(tf.constant(x))]
    needs_saved_model = any(b in backends for b in ("savedmodel", "litert_fp32", "litert_fp16",
                                                    "litert_int8"))
    saved_model = os.path.join(work, "saved_model")
    if needs_saved_model:
        export.export_saved_model(model, spec, saved_model)
    if "savedmodel" in backends:
        import tensorflow as tf

        serving = tf.saved_model.load(saved_model).signatures["serving_default"]
        runners["savedmodel"] = lambda x: {k: v.numpy() for k, v in serving(images=tf.constant(x)).items()}
    onnx_path = os.path.join(work, "model.onnx")
    export.export_onnx(model, spec, onnx_path)
    for threads in (1, 2):
        if f"onnxruntime_{threads}t" in backends:
            runners[f"onnxruntime_{threads}t"] = OnnxRunner(onnx_path, num_threads=threads)
    calibration_source = None
    for precision in ("fp32", "fp16", "int8"):
        if f"litert_{precision}" not in backends:
            continue
        crops = None
        if precision == "int8":
            crops, calibration_source = _calibration_crops(spec.shape[1:3], spec.shape[3])
        path = os.path.join(work, f"model_{precision}.tflite")
        export.export_litert(saved_model, path, precision, crops)
        runners[f"litert_{precision}"] = LiteRTRunner(path)
    return runners, onnx_path, calibration_source


def benchmark_model(label, builder, config, backends, latency_repeats, throughput_repeats):
    """Rows (one per backend) for one model; see the module docstring."""
    import keras
    import onnx

    import fpezoo

    model = getattr(fpezoo, builder)(**config)
    height, width, channels = model.inputs[0].shape[1:]
    rng = np.random.default_rng(0)
    single = rng.uniform(0, 255, (1, height, width, channels)).astype("float32")
    batch = rng.uniform(0, 255, (THROUGHPUT_BATCH, height, width, channels)).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fpezoo-benchmark-") as work:
        runners, onnx_path, calibration_source = _runners(model, backends, work)
        flops = onnx_flops_per_face(onnx.load(onnx_path))
        for backend in backends:
            if backend not in runners:
                continue
            run = runners[backend]
            latency = time_runs(lambda run=run: run(single), latency_repeats)
            throughput = time_runs(lambda run=run: run(batch), throughput_repeats, warmup=1)
            faces_per_second = THROUGHPUT_BATCH / statistics.median(throughput)
            median_ms = 1000 * statistics.median(latency)
            rows.append({
                "model": label, "builder": builder, "config": config, "backend": backend,
                "input_shape": [height, width, channels], "params": int(model.count_params()),
                "mflops_per_face": flops / 1e6,
                "latency_ms_median": median_ms,
                "latency_ms_p90": 1000 * float(np.percentile(latency, 90)),
                "throughput_faces_per_s": faces_per_second,
                "gflops_per_s_batch64": flops * faces_per_second / 1e9,
                "gflops_per_s_batch1": flops / (median_ms / 1000) / 1e9,
                "int8_calibration": calibration_source if backend == "litert_int8" else None,
            })
    keras.backend.clear_session()
    return rows


def run_benchmark(models=None, backends=BACKENDS, quick=False):
    """Runs the benchmark; returns ``{"environment": ..., "results": [rows]}``."""
    models = list(models or (QUICK_MODELS if quick else MODELS))
    for name in models:
        if name not in MODELS:
            raise ValueError(f"Unknown benchmark model; choose from {list(MODELS)}. Received: model={name!r}")
    for name in backends:
        if name not in BACKENDS:
            raise ValueError(f"Unknown backend; choose from {list(BACKENDS)}. Received: backend={name!r}")
    latency_repeats, throughput_repeats = (20, 3) if quick else (100, 10)
    environment = {
        "machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
        "load_average_before": list(os.getloadavg()),
        "gemm_gflops_all_cores": gemm_gflops(), "gemm_gflops_one_core": single_core_gemm_gflops(),
        "crop_ms_median": crop_milliseconds(latency_repeats),
        "quick": quick,
    }
    results = []
    for name in models:
        builder, config = MODELS[name]
        results.extend(benchmark_model(name, builder, config, backends, latency_repeats,
                                       throughput_repeats))
    environment["load_average_after"] = list(os.getloadavg())
    return {"environment": environment, "results": results}


def format_table(report):
    """The results as a fixed-width text table."""
    environment = report["environment"]
    lines = [
        f"{'model':<16} {'backend':<15} {'MFLOPs':>8} {'b1 med ms':>9} {'b1 p90 ms':>9} "
        f"{'b64 faces/s':>11} {'GFLOP/s b64':>11} {'GFLOP/s b1':>10}"
    ]
    for row in report["results"]:
        lines.append(
            f"{row['model']:<16} {row['backend']:<15} {row['mflops_per_face']:>8.1f} "
            f"{row['latency_ms_median']:>9.3f} {row['latency_ms_p90']:>9.3f} "
            f"{row['throughput_faces_per_s']:>11.1f} {row['gflops_per_s_batch64']:>11.2f} "
            f"{row['gflops_per_s_batch1']:>10.2f}"
        )
    lines.append(
        f"NumPy float32 GEMM {GEMM_SIZE}^3: {environment['gemm_gflops_all_cores']:.1f} GFLOP/s on "
        f"{environment['cpu_count']} cores, {environment['gemm_gflops_one_core']:.1f} GFLOP/s on one"
    )
    if environment.get("crop_ms_median") is not None:
        lines.append(f"crop_face 640x480 -> 80x80: {environment['crop_ms_median']:.3f} ms median")
    lines.append(f"load average before/after: {environment['load_average_before']} / "
                 f"{environment['load_average_after']}")
    return "\n".join(lines)


def configure_parser(parser):
    """Options of ``fpezoo benchmark``."""
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_MODELS)}, fewer repeats")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="models to run")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--output", default="inference_speed.json", help="JSON file to write")


def command_line(args):
    """The ``fpezoo benchmark`` command that reruns ``args`` (recorded in the JSON)."""
    words = ["fpezoo", "benchmark"] + (["--quick"] if args.quick else [])
    if args.models:
        words += ["--models", *args.models]
    if list(args.backends) != list(BACKENDS):
        words += ["--backends", *args.backends]
    return shlex.join(words + ["--output", args.output])


def run(args):
    """Runs ``fpezoo benchmark``: prints the table and writes the JSON with its command."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = run_benchmark(args.models, args.backends, args.quick)
    report["command"] = command_line(args)
    print(format_table(report))
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {args.output}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fpezoo benchmark", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
