"""TensorRT engines from the ONNX export (the path NVIDIA supports now).

``fpezoo convert MODEL --to tensorrt --precision fp16 --output model.plan`` exports
ONNX (opset <= 18), checks the graph against TensorRT's ONNX operator support
list, prints the equivalent ``trtexec`` command, and builds a serialized engine
with the ``tensorrt`` Python API (optional extra: ``pip install fpezoo[tensorrt]``
on a machine with an NVIDIA GPU).

API notes (TensorRT 10.x, checked against NVIDIA's documentation):

* Networks are always explicit-batch (implicit batch was removed in 10.0); a
  dynamic batch axis needs an optimisation profile (min / opt / max shapes), and
  the engine is built with ``builder.build_serialized_network``.
* FP16 and INT8 use the weak-typing builder flags ``BuilderFlag.FP16`` /
  ``BuilderFlag.INT8``. INT8 here is *implicit* quantisation with an
  ``IInt8EntropyCalibrator2``: deprecated since TensorRT 10.1 ("superseded by
  explicit quantization", i.e. Q/DQ nodes from NVIDIA's Model Optimizer) and
  removed in TensorRT 11, which also removes ``BuilderFlag.FP16`` (strong typing:
  the ONNX file must carry the precision). With TensorRT >= 11 this module builds
  FP32 engines and refuses FP16/INT8 with an explanation.
* With a dynamic batch, calibration runs at the profile's ``opt`` batch
  (``config.set_calibration_profile``).

**Not yet run on a GPU**: this machine has no GPU and no ``tensorrt`` package.
Everything up to the engine build is tested here (operator support, opset,
calibration batches and cache); :func:`build_engine` and the device side of the
calibrator have not been executed.
"""

import functools
import json
import os
import pathlib
import shlex

import numpy as np

OPERATORS_FILE = pathlib.Path(__file__).with_name("tensorrt_onnx_operators.json")
MAX_OPSET = 18
DEFAULT_OPT_BATCH = 8
# Inputs that TensorRT needs as constants (initializers or Constant outputs):
# op type -> input indices (onnx-tensorrt's restrictions).
CONSTANT_INPUTS = {
    "Conv": (1,), "ConvTranspose": (1,), "Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,),
    "TopK": (1,), "CumSum": (1,),
}
RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                           "asymmetric", "align_corners")


@functools.lru_cache(maxsize=1)
def operator_support():
    """TensorRT's ONNX operator support list (``tensorrt_onnx_operators.json``)."""
    with open(OPERATORS_FILE, encoding="utf-8") as file:
        return json.load(file)


def tensorrt_problems(onnx_model):
    """What in an ONNX model would keep TensorRT's ONNX parser from building it.

    Checks the opset (<= 18), that every node is a default-domain operator in
    TensorRT's support list, and the list's restrictions that apply to
    fpezoo's graphs: constant weights and axes, and supported ``Resize`` modes.

    Args:
        onnx_model: an ``onnx.ModelProto``.

    Returns:
        A list of problems (strings); empty when the graph is supported.
    """
    from onnx import helper

    support = set(operator_support()["supported"])
    problems = []
    opset = max((entry.version for entry in onnx_model.opset_import if entry.domain in ("", "ai.onnx")),
                default=0)
    if opset > MAX_OPSET:
        problems.append(f"opset {opset} is above {MAX_OPSET}")
    graph = onnx_model.graph
    constants = {init.name for init in graph.initializer}
    constants.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    for node in graph.node:
        label = f"{node.op_type} node {node.name!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label} is in domain {node.domain!r} (a plugin would be needed)")
            continue
        if node.op_type not in support:
            problems.append(f"{label}: {node.op_type} is not in TensorRT's ONNX operator list")
            continue
        for index in CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                problems.append(f"{label}: input {index} ({node.input[index]}) must be a constant")
        if node.op_type == "Resize":
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            mode = attributes.get("mode", b"nearest").decode()
            coordinates = attributes.get("coordinate_transformation_mode", b"half_pixel").decode()
            if mode not in RESIZE_MODES or coordinates not in RESIZE_COORDINATE_MODES:
                problems.append(f"{label}: mode={mode}, coordinate_transformation_mode="
                                f"{coordinates} are not supported")
    return problems


def check_onnx_for_tensorrt(onnx_model):
    """Raises ``ValueError`` listing the :func:`tensorrt_problems` of a model."""
    problems = tensorrt_problems(onnx_model)
    if problems:
        raise ValueError(
            "This ONNX graph would not build in TensorRT: " + "; ".join(problems)
            + f". Received: onnx_model={onnx_model.graph.name!r}"
        )


def onnx_input_shape(onnx_model):
    """``(name, dims)`` of the single graph input, -1 for dynamic axes."""
    inputs = onnx_model.graph.input
    if len(inputs) != 1:
        raise ValueError(f"Expected one graph input. Received: inputs={[i.name for i in inputs]}")
    dims = [dim.dim_value if dim.HasField("dim_value") else -1
            for dim in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def batch_range(batch_size, max_batch_size):
    """``(min, opt, max)`` batch of the optimisation profile.

    A fixed ``batch_size`` gives ``(b, b, b)``; a dynamic batch (None) gives
    ``(1, min(8, max), max_batch_size)``.
    """
    if batch_size is not None:
        return batch_size, batch_size, batch_size
    return 1, min(DEFAULT_OPT_BATCH, max_batch_size), max_batch_size


def _shape_text(name, dims, batch):
    return f"{name}:" + "x".join(str(batch if i == 0 else d) for i, d in enumerate(dims))


def trtexec_command(onnx_path, plan_path, precision, input_shape, batches, calibration_cache=None):
    """The ``trtexec`` command that builds the same engine.

    Args:
        onnx_path: the ONNX file.
        plan_path: the engine to write.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        input_shape: ``(name, dims)`` from :func:`onnx_input_shape`.
        batches: ``(min, opt, max)`` from :func:`batch_range`.
        calibration_cache: INT8 calibration cache written by this module's
            calibrator (trtexec cannot calibrate itself; it reads the cache).

    Returns:
        The command line (a string).
    """
    name, dims = input_shape
    command = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    if dims[0] == -1:
        command += [f"--minShapes={_shape_text(name, dims, batches[0])}",
                    f"--optShapes={_shape_text(name, dims, batches[1])}",
                    f"--maxShapes={_shape_text(name, dims, batches[2])}"]
    if precision == "fp16":
        command.append("--fp16")
    elif precision == "int8":
        command += ["--int8", "--fp16"]
        if calibration_cache:
            command.append(f"--calib={calibration_cache}")
    return shlex.join(os.fspath(part) for part in command)


class CalibrationFeeder:
    """The batch and cache logic of the INT8 calibrator, without TensorRT.

    TensorRT's calibrator (see :func:`build_engine`) wraps this class: it asks
    for the next host batch, copies it to the device, and reads or writes the
    calibration cache through it.

    Args:
        calibration_images: a :class:`fpezoo.deploy.convert.CalibrationImages`
            (or None when only a cache is used).
        batch_size: the calibration batch (the profile's ``opt`` batch).
        cache_path: calibration cache file; when it exists TensorRT reads it
            instead of calibrating.
    """

    def __init__(self, calibration_images, batch_size, cache_path):
        self.batch_size = int(batch_size)
        self.cache_path = pathlib.Path(cache_path)
        self._batches = iter(()) if calibration_images is None else calibration_images.batches(self.batch_size)
        self.batches_served = 0

    def next_batch(self):
        """The next ``(batch, H, W, C)`` C-contiguous float32 batch, or None at the end."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.batches_served += 1
        return np.ascontiguousarray(batch, dtype=np.float32)

    def read_cache(self):
        """The cache's bytes, or None when there is no cache yet."""
        if self.cache_path.is_file() and self.cache_path.stat().st_size:
            return self.cache_path.read_bytes()
        return None

    def write_cache(self, cache):
        """Writes the cache atomically (temporary file, then rename)."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.cache_path.with_name(self.cache_path.name + ".partial")
        partial.write_bytes(bytes(cache))
        os.replace(partial, self.cache_path)


def _import_tensorrt(command):
    try:
        import tensorrt
    except ImportError:
        raise RuntimeError(
            "Building a TensorRT engine needs the `tensorrt` Python package and an NVIDIA GPU "
            "(pip install 'fpezoo[tensorrt]'). Or export ONNX (fpezoo convert ... --to onnx) and "
            f"build on the GPU machine with: {command}. Received: tensorrt=not installed"
        ) from None
    return tensorrt


def build_engine(onnx_path, plan_path, precision="fp32", calibration_images=None,
                 batches=(1, DEFAULT_OPT_BATCH, 64), calibration_cache=None,
                 workspace_bytes=1 << 30, trtexec_hint=None):
    """Builds and writes a serialized TensorRT engine from an ONNX file.

    **Not yet run on a GPU** (none here): written against TensorRT 10.x's Python API.

    Args:
        onnx_path: the ONNX export (input ``images`` NHWC, outputs ``keypoints``,
            ``confidence``).
        plan_path: where to write the engine.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"`` (INT8 layers fall back to
            FP16 where faster or unsupported).
        calibration_images: crops for INT8 (a ``CalibrationImages``).
        batches: ``(min, opt, max)`` batch of the optimisation profile.
        calibration_cache: INT8 cache file, read when present, written otherwise.
        workspace_bytes: builder workspace memory limit.
        trtexec_hint: the ``trtexec`` command to suggest when ``tensorrt`` is
            absent (default: one for ``onnx_path`` and ``plan_path``).

    Raises:
        RuntimeError: ``tensorrt`` is absent (the message gives the ``trtexec``
            command), TensorRT >= 11 was asked for FP16/INT8, or the build failed.
        ValueError: the graph has operators TensorRT does not support.
    """
    import onnx

    onnx_model = onnx.load(os.fspath(onnx_path))
    check_onnx_for_tensorrt(onnx_model)
    input_name, dims = onnx_input_shape(onnx_model)
    command = trtexec_hint or trtexec_command(onnx_path, plan_path, precision, (input_name, dims),
                                              batches, calibration_cache if precision == "int8" else None)
    trt = _import_tensorrt(command)
    major = int(trt.__version__.split(".")[0])
    if precision != "fp32" and not hasattr(trt.BuilderFlag, precision.upper()):
        raise RuntimeError(
            f"TensorRT {trt.__version__} removed the {precision.upper()} builder flag (strong "
            "typing): quantise or cast the ONNX file with NVIDIA Model Optimizer first, then "
            f"build it as fp32. Received: precision={precision!r}"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser failed: {errors}. Received: onnx_path={onnx_path!r}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    shapes = [tuple(batch if i == 0 else d for i, d in enumerate(dims)) for batch in batches]
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    calibrator = None
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        feeder = CalibrationFeeder(calibration_images, batches[1],
                                   calibration_cache or f"{plan_path}.calibration.cache")
        calibrator = _entropy_calibrator(trt, feeder, shapes[1])
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build the engine (see its log above). Received: "
                           f"onnx_path={os.fspath(onnx_path)!r}, precision={precision!r}")
    pathlib.Path(plan_path).write_bytes(bytes(serialized))


def _cuda_runtime():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise RuntimeError(
                "INT8 calibration copies batches to the GPU with cuda-python "
                "(pip install cuda-python). Received: cuda-python=not installed"
            ) from None
    return runtime


def _entropy_calibrator(trt, feeder, batch_shape):
    """A ``trt.IInt8EntropyCalibrator2`` fed by a :class:`CalibrationFeeder`.

    **Not yet run on a GPU.** One device buffer of the calibration batch shape is
    allocated with cuda-python and refilled for every batch.
    """
    cudart = _cuda_runtime()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.nbytes = int(np.prod(batch_shape)) * 4
            error, self.device_buffer = cudart.cudaMalloc(self.nbytes)
            if int(error):
                raise RuntimeError(f"cudaMalloc failed. Received: error={error}")

        def get_batch_size(self):
            return feeder.batch_size

        def get_batch(self, names):
            batch = feeder.next_batch()
            if batch is None:
                return None
            (error,) = cudart.cudaMemcpy(self.device_buffer, batch.ctypes.data, self.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
            if int(error):
                raise RuntimeError(f"cudaMemcpy failed. Received: error={error}")
            return [int(self.device_buffer)]

        def read_calibration_cache(self):
            return feeder.read_cache()

        def write_calibration_cache(self, cache):
            feeder.write_cache(cache)

        def __del__(self):
            cudart.cudaFree(self.device_buffer)

    return EntropyCalibrator()
