"""The convert command: export fpezoo models for deployment.

One function and one command for every target::

    fpezoo convert fpenet_68_w16 --to onnx --output fpenet.onnx
    fpezoo-convert model.keras --to litert --precision int8 \\
        --calibration mtfl:../shared/data/mtfl/train.txt --output fpenet_int8.tflite
    python -m fpezoo.deploy.convert weights.weights.h5 --builder FPENet \\
        --builder-config '{"width": 16}' --to triton --output model_repository
    fpezoo convert landmarks-regression-retail-0009.xml --to onnx --output retail-0009.onnx

The last form imports the official OpenVINO IR of landmarks-regression-retail-0009
(``.xml`` with its ``.bin`` beside it) with
:func:`fpezoo.models.retail.import_openvino_retail`, so the official model exports
to every target.

Targets: ``savedmodel`` (a TensorFlow SavedModel folder), ``onnx`` (opset <= 18,
through tf2onnx >= 1.17), ``litert`` (a ``.tflite`` file: FP32, FP16 weights, or
INT8 post-training quantisation of the network calibrated on real face crops, the
decoder kept in float: see :func:`export_litert`),
``tensorrt`` (a serialized engine ``.plan`` built from the ONNX export, see
:mod:`fpezoo.deploy.tensorrt`), ``tftrt`` (a TF-TRT SavedModel, see
:mod:`fpezoo.deploy.tftrt`) and ``triton`` (a Triton model repository, see
:mod:`fpezoo.deploy.triton`).

Every export takes the model's input tensor, named ``images``: a batch of face
crops (N, H, W, C) of raw 0-255 values, and returns ``keypoints`` (N, K, 2) in
the crop's pixels and ``confidence`` (N, K): the preprocessing and decoding
layers of the Keras model are part of the exported graph. ONNX and LiteRT files
(and the ONNX model of a Triton repository) record the crop they expect:
keypoint scheme, framing, input size and colour, and the source weights' sha256
(:mod:`fpezoo.deploy.metadata`, :func:`export_metadata`), which
``fpezoo evaluate`` reads.

Outputs are written atomically: into a temporary path in the output's folder,
renamed into place only when complete, so a failed conversion leaves nothing
half-written. An existing output is replaced only with ``force=True``
(``--force``).
"""

import argparse
import contextlib
import json
import numbers
import os
import pathlib
import shutil
import sys
import tempfile
import warnings

import numpy as np

from fpezoo.deploy.metadata import INPUT_COLORS, add_litert_metadata, add_onnx_metadata

TARGETS = ("savedmodel", "onnx", "litert", "tensorrt", "tftrt", "triton")
PRECISIONS = ("fp32", "fp16", "int8")
# Precisions each target can produce (triton: those of its backend).
TARGET_PRECISIONS = {
    "savedmodel": ("fp32",),
    "onnx": ("fp32",),
    "litert": PRECISIONS,
    "tensorrt": PRECISIONS,
    "tftrt": PRECISIONS,
    "triton": PRECISIONS,
}
INPUT_NAME = "images"
OUTPUT_NAMES = ("keypoints", "confidence")
DEFAULT_OPSET = 17
MAX_OPSET = 18
DEFAULT_CALIBRATION_IMAGES = 256
DEFAULT_MAX_BATCH_SIZE = 64
# Sources that are files (any other string is a registered weights name).
SOURCE_FILE_SUFFIXES = (".keras", ".weights.h5", ".xml")
# LiteRT operators kept in float32 by INT8 quantisation: the arithmetic of the
# soft-argmax, heatmap-argmax and regression decoders (see export_litert).
LITERT_FLOAT_OPS = ("EXP", "SUM", "DIV", "REDUCE_MAX", "MUL", "SUB", "PACK", "RESHAPE")
# Data readers usable as calibration sources ("reader:path"): name -> function
# of fpezoo.data.readers taking the path.
CALIBRATION_READERS = {
    "mtfl": "read_mtfl",
    "aflw_crops": "read_aflw_crops",
    "aflw2000_3d": "read_aflw2000_3d",
    "coco": "read_coco_keypoints",
    "tao": "read_tao_json",
}


def convert(source, output, to="onnx", precision="fp32", calibration=None,
            num_calibration_images=DEFAULT_CALIBRATION_IMAGES, batch_size=None,
            max_batch_size=DEFAULT_MAX_BATCH_SIZE, input_size=None, input_color=None, force=False,
            builder=None, builder_config=None, opset=DEFAULT_OPSET, triton_backend="onnx",
            model_name=None, calibration_cache=None, calibration_enlarge=None):
    """Exports a model for deployment.

    Args:
        source: a Keras model, a registered weights name (see
            :mod:`fpezoo.weights`), a ``.keras`` file, a ``.weights.h5`` file
            (with ``builder``), or the OpenVINO IR ``.xml`` of
            landmarks-regression-retail-0009 (imported with
            :func:`fpezoo.models.retail.import_openvino_retail`, its ``.bin``
            next to it).
        output: path of the export: a ``.onnx``, ``.tflite`` or ``.plan`` file,
            or a folder for ``savedmodel`` and ``tftrt``; for ``triton`` the
            model repository, into which the folder ``<model_name>`` is written.
        to: target, one of ``TARGETS``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"`` (see
            ``TARGET_PRECISIONS``).
        calibration: INT8 calibration images: a folder of face crops, or
            ``"reader:path"`` with a reader of :mod:`fpezoo.data.readers`
            (``CALIBRATION_READERS``, e.g. ``"mtfl:../shared/data/mtfl/train.txt"``),
            whose faces are cropped by their boxes.
        num_calibration_images: how many images calibrate INT8 (the first ones
            of the source, in its order).
        batch_size: None for a dynamic batch axis, or a fixed batch size.
        max_batch_size: largest batch of a dynamic TensorRT engine or Triton model.
        input_size: ``(height, width)`` of the crops the export takes, required
            when the model accepts any size and the target needs a fixed one
            (``litert``, ``tensorrt``, ``tftrt``, ``triton``).
        input_color: channel layout of the crops (``"grayscale"``, ``"rgb"`` or
            ``"bgr"``) used to prepare calibration images; default: read from the
            model's preprocessing layer, else grayscale for 1 channel and RGB for 3.
        force: replace an existing output.
        builder: name of an ``fpezoo`` builder (e.g. ``"FPENet"``) for a
            ``.weights.h5`` source (see :func:`fpezoo.weights.registered_builder`).
        builder_config: keyword arguments of the builder (for a registered name:
            arguments that replace the registered ones, e.g.
            ``{"include_preprocessing": True}``; for an OpenVINO ``.xml``:
            those of ``import_openvino_retail``).
        opset: ONNX opset (at most 18).
        triton_backend: ``"onnx"`` (onnxruntime, FP32) or ``"tensorrt"`` (a
            TensorRT plan) for ``to="triton"``.
        model_name: name of the model in a Triton repository (default: the
            Keras model's name).
        calibration_cache: TensorRT INT8 calibration cache file (default: the
            output path with ``.calibration.cache`` appended); reused when it
            exists.
        calibration_enlarge: crop side over the longer side of a calibration
            record's box (see :class:`CalibrationImages`). None: the registered
            crop of a registered name (its ``"crop": {"enlarge": ...}``, as the
            predictor crops), else :data:`fpezoo.predictor.DEFAULT_ENLARGE`.

    Returns:
        The ``pathlib.Path`` of the export.

    Raises:
        ValueError: a bad argument (the message ends with ``Received: ...``).
        FileExistsError: the output exists and ``force`` is False.
        FileNotFoundError: a missing source, calibration folder or file.
        RuntimeError: TensorRT or TF-TRT is not available here.
    """
    _check_choice(to, TARGETS, "to")
    _check_choice(precision, PRECISIONS, "precision")
    if precision not in TARGET_PRECISIONS[to] or (
            to == "triton" and triton_backend == "onnx" and precision != "fp32"):
        raise ValueError(
            f"Target {to!r} exports {TARGET_PRECISIONS[to] if to != 'triton' else 'fp32 with the onnx backend'} "
            "(fp16/int8 are for litert, tensorrt, tftrt and triton with triton_backend='tensorrt'). "
            f"Received: precision={precision!r}"
        )
    _check_choice(triton_backend, ("onnx", "tensorrt"), "triton_backend")
    if not isinstance(opset, int) or not 7 <= opset <= MAX_OPSET:
        raise ValueError(
            f"`opset` must be an integer from 7 to {MAX_OPSET} (TensorRT's ONNX parser and "
            f"onnxruntime both support it). Received: opset={opset!r}"
        )
    if batch_size is not None:
        _check_positive_int(batch_size, "batch_size")
    _check_positive_int(max_batch_size, "max_batch_size")
    if precision == "int8" and calibration is None and not (
            to in ("tensorrt", "triton") and calibration_cache and os.path.isfile(calibration_cache)):
        raise ValueError(
            "INT8 needs calibration images: a folder of face crops or 'reader:path' "
            f"(readers: {', '.join(CALIBRATION_READERS)}). Received: calibration=None"
        )
    output = pathlib.Path(output)
    model = load_model(source, builder=builder, builder_config=builder_config)
    spec = export_signature(model, batch_size=batch_size, input_size=input_size,
                            needs_fixed_size=to in ("litert", "tensorrt", "tftrt", "triton"))
    metadata = export_metadata(model, source, spec, input_color)
    calibration_images = None
    if calibration is not None and precision == "int8":
        calibration_images = CalibrationImages(
            calibration, image_size=spec.shape[1:3], channels=spec.shape[3],
            color=input_color or model_input_color(model), limit=num_calibration_images,
            enlarge=calibration_enlarge if calibration_enlarge is not None else registered_enlarge(source))

    if to == "triton":
        from fpezoo.deploy import triton

        model_name = model_name or model.name
        triton.check_model_name(model_name)
        target_path = output / model_name
    else:
        target_path = output
    with atomic_output(target_path, force) as staging:
        with tempfile.TemporaryDirectory(prefix="fpezoo-convert-") as work:
            work = pathlib.Path(work)
            if to == "savedmodel":
                export_saved_model(model, spec, staging)
            elif to == "onnx":
                export_onnx(model, spec, staging, opset=opset, metadata=metadata)
            elif to == "litert":
                export_saved_model(model, spec, work / "saved_model")
                export_litert(work / "saved_model", staging, precision, calibration_images, metadata)
            elif to == "tftrt":
                from fpezoo.deploy import tftrt

                tftrt.check_available()
                export_saved_model(model, spec, work / "saved_model")
                tftrt.convert_saved_model(work / "saved_model", staging, precision,
                                          calibration_images, batch_size or 1)
            elif to == "tensorrt":
                export_onnx(model, spec, work / "model.onnx", opset=opset, metadata=metadata)
                _build_engine(work / "model.onnx", staging, precision, calibration_images,
                              batch_size, max_batch_size,
                              calibration_cache or f"{output}.calibration.cache", output)
            else:
                from fpezoo.deploy import triton

                version = staging / "1"
                version.mkdir(parents=True)
                export_onnx(model, spec, work / "model.onnx", opset=opset, metadata=metadata)
                if triton_backend == "onnx":
                    shutil.copyfile(work / "model.onnx", version / "model.onnx")
                else:
                    _build_engine(work / "model.onnx", version / "model.plan", precision,
                                  calibration_images, batch_size, max_batch_size,
                                  calibration_cache or f"{target_path}.calibration.cache",
                                  target_path / "1" / "model.plan")
                triton.write_config(staging / "config.pbtxt", work / "model.onnx", model_name,
                                    backend=triton_backend,
                                    max_batch_size=0 if batch_size else max_batch_size)
    return target_path


# --------------------------------------------------------------------------- sources


def registered_entry(source):
    """The registry entry of a :func:`convert` ``source`` that is a registered name, else None."""
    if not isinstance(source, (str, os.PathLike)) or os.fspath(source).endswith(SOURCE_FILE_SUFFIXES):
        return None
    from fpezoo.weights import registry_entry

    return registry_entry(os.fspath(source))


def registered_enlarge(source):
    """The crop enlargement the model of a :func:`convert` ``source`` expects.

    Args:
        source: a ``source`` of :func:`convert`.

    Returns:
        The registered ``"crop": {"enlarge": ...}`` of a registered name, else
        :data:`fpezoo.predictor.DEFAULT_ENLARGE` (models and files carry no
        framing).
    """
    from fpezoo.predictor import DEFAULT_ENLARGE

    entry = registered_entry(source) or {}
    return float(entry.get("crop", {}).get("enlarge", DEFAULT_ENLARGE))


def export_metadata(model, source, spec, input_color=None):
    """The metadata an export records (see :mod:`fpezoo.deploy.metadata`).

    Args:
        model: the Keras model exported.
        source: the ``source`` of :func:`convert` it came from.
        spec: its :func:`export_signature`.
        input_color: the crops' colour order (None: :func:`model_input_color`).

    Returns:
        A dict with the keys of :data:`fpezoo.deploy.metadata.FIELDS`: a
        registered name gives its scheme, crop and weights sha256; a file its
        own sha256 (for an OpenVINO ``.xml``, that of its ``.bin``); a Keras
        model none of them.
    """
    import fpezoo
    from fpezoo.layers import FacePreprocessing
    from fpezoo.weights import sha256

    entry = registered_entry(source)
    if entry is not None:
        name, digest = os.fspath(source), entry["sha256"]
    elif isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        name, digest = path.name, sha256(path.with_suffix(".bin") if path.suffix == ".xml" else path)
    else:
        name, digest = model.name, None
    size = tuple(spec.shape[1:3])
    if None in size:
        preprocessing = [layer.output_size for layer in model.layers if isinstance(layer, FacePreprocessing)]
        size = preprocessing[0] if preprocessing else None
    return {
        "scheme": entry["scheme"] if entry is not None else None,
        "enlarge": entry.get("crop", {}).get("enlarge") if entry is not None else None,
        "input_size": None if size is None else [int(value) for value in size],
        "input_color": input_color or model_input_color(model),
        "weights_sha256": digest,
        "source": name,
        "fpezoo_version": fpezoo.__version__,
    }


def load_model(source, builder=None, builder_config=None):
    """Resolves the ``source`` of :func:`convert` into a Keras model.

    Args:
        source: a Keras model, a registered weights name, a ``.keras`` file, a
            ``.weights.h5`` file or the OpenVINO IR ``.xml`` of
            landmarks-regression-retail-0009.
        builder: builder name for a ``.weights.h5`` file (see
            :func:`fpezoo.weights.registered_builder`).
        builder_config: builder keyword arguments (dict); for an ``.xml``, the
            keyword arguments of
            :func:`fpezoo.models.retail.import_openvino_retail` (e.g.
            ``{"include_preprocessing": True}``).

    Returns:
        The Keras model.
    """
    import keras

    if isinstance(source, keras.Model):
        if builder is not None or builder_config:
            raise ValueError(
                "`builder` and `builder_config` apply to weights files and registered names, "
                f"not to a Keras model. Received: builder={builder!r}, builder_config={builder_config!r}"
            )
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`source` must be a Keras model, a registered weights name, a '.keras' file, a "
            f"'.weights.h5' file or an OpenVINO '.xml'. Received: source={source!r}"
        )
    text = os.fspath(source)
    config = dict(builder_config or {})
    if text.endswith(".keras"):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"Model file not found. Received: source={text!r}")
        _register_custom_objects()
        return keras.saving.load_model(text, safe_mode=True)
    if text.endswith(".weights.h5"):
        if builder is None:
            raise ValueError(
                "A '.weights.h5' source needs the builder that makes its model, e.g. "
                f"builder='FPENet' (--builder FPENet). Received: source={text!r}, builder=None"
            )
        from fpezoo.weights import registered_builder

        return registered_builder(builder)(weights=text, **config)
    if text.endswith(".xml"):
        if builder not in (None, "RetailLandmarks5"):
            raise ValueError(
                "An OpenVINO '.xml' source is landmarks-regression-retail-0009, imported as "
                f"RetailLandmarks5. Received: source={text!r}, builder={builder!r}"
            )
        if not os.path.isfile(text):
            raise FileNotFoundError(f"OpenVINO IR not found. Received: source={text!r}")
        from fpezoo.models.retail import import_openvino_retail

        return import_openvino_retail(text, **config)
    from fpezoo.weights import build_registered

    return build_registered(text, **config)


def _register_custom_objects():
    """Imports the modules that register fpezoo's layers, for ``.keras`` files."""
    import importlib

    for module in ("fpezoo.layers", "fpezoo.models.common", "fpezoo.models.fpenet",
                   "fpezoo.models.retail", "fpezoo.models.fan"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def export_signature(model, batch_size=None, input_size=None, needs_fixed_size=False):
    """The ``tf.TensorSpec`` named ``images`` that an export of ``model`` takes.

    Args:
        model: a Keras model with one image input and outputs
            ``[keypoints, confidence]``.
        batch_size: None (dynamic) or a fixed batch size.
        input_size: ``(height, width)`` for a model that accepts any size.
        needs_fixed_size: raise when height and width stay unknown.

    Returns:
        The spec ``(batch, height, width, channels)``.
    """
    import tensorflow as tf

    if len(model.inputs) != 1 or len(model.outputs) != 2:
        raise ValueError(
            "Exports need a model with one image input and the outputs [keypoints, "
            f"confidence]. Received: model with {len(model.inputs)} input(s) and "
            f"{len(model.outputs)} output(s)"
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(
            "Exports need an image input (batch, height, width, channels). "
            f"Received: input shape {shape}"
        )
    height, width = shape[1:3]
    if input_size is not None:
        size = _size_pair(input_size)
        for known, wanted in zip((height, width), size):
            if known is not None and known != wanted:
                raise ValueError(
                    f"This model takes {height}x{width} crops; `input_size` can only fix sizes "
                    f"the model leaves open. Received: input_size={tuple(input_size)}"
                )
        height, width = size
    if needs_fixed_size and (height is None or width is None):
        raise ValueError(
            "This model accepts crops of any size; this target needs a fixed one: pass "
            f"input_size=(height, width) (--input-size HxW). Received: input_size={input_size!r}"
        )
    return tf.TensorSpec((batch_size, height, width, shape[3]), model.inputs[0].dtype,
                         name=INPUT_NAME)


def model_input_color(model):
    """Channel layout of the crops ``model`` takes.

    Read from the model's :class:`fpezoo.layers.FacePreprocessing` layer when it
    has one; otherwise grayscale for 1 channel and RGB for 3.
    """
    from fpezoo.layers import FacePreprocessing

    for layer in model.layers:
        if isinstance(layer, FacePreprocessing):
            return layer.input_color
    return "grayscale" if model.inputs[0].shape[-1] == 1 else "rgb"


# --------------------------------------------------------------------------- exporters


def _serving_function(model):
    def serve(images):
        keypoints, confidence = model(images, training=False)
        return {OUTPUT_NAMES[0]: keypoints, OUTPUT_NAMES[1]: confidence}

    return serve


def export_saved_model(model, spec, path):
    """Writes a SavedModel whose ``serving_default`` maps ``images`` to
    ``{"keypoints", "confidence"}``."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", _serving_function(model), input_signature=[spec])
    archive.write_out(os.fspath(path), verbose=False)


def export_onnx(model, spec, path, opset=DEFAULT_OPSET, metadata=None):
    """Writes an ONNX model with input ``images`` and outputs ``keypoints``, ``confidence``.

    Converted by Keras's exporter (tf2onnx), then the outputs are renamed, the
    dynamic axes named (``batch``, ``height``, ``width``), ``metadata`` (see
    :func:`export_metadata`; None: none) stored in ``metadata_props``, and the
    graph checked with ``onnx.checker`` and for its opset.
    """
    import onnx

    with tempfile.TemporaryDirectory(prefix="fpezoo-onnx-") as work:
        raw_path = os.path.join(work, "raw.onnx")
        with _quiet_stdout(), warnings.catch_warnings():
            # Keras's tf2onnx patch probes `hasattr(np, "object")`, which NumPy 2 answers
            # with a FutureWarning that says nothing to a user.
            warnings.filterwarnings("ignore", message=r".*`np\.object`", category=FutureWarning)
            model.export(raw_path, format="onnx", input_signature=[spec], opset_version=opset,
                         verbose=False)
        onnx_model = onnx.load(raw_path)
    _name_onnx_outputs(onnx_model)
    _name_dynamic_axes(onnx_model)
    onnx_model.producer_name = "fpezoo"
    if metadata is not None:
        add_onnx_metadata(onnx_model, metadata)
    onnx.checker.check_model(onnx_model, full_check=True)
    used_opset = onnx_opset(onnx_model)
    if used_opset > MAX_OPSET:
        raise ValueError(
            f"The exporter produced opset {used_opset}, above {MAX_OPSET}. Received: opset={opset}"
        )
    onnx.save(onnx_model, os.fspath(path))


def onnx_opset(onnx_model):
    """The default-domain opset of an ONNX model."""
    return max(entry.version for entry in onnx_model.opset_import if entry.domain in ("", "ai.onnx"))


def _name_onnx_outputs(onnx_model):
    """Renames the graph outputs to ``keypoints`` (rank 3) and ``confidence`` (rank 2)."""
    graph = onnx_model.graph
    renames = {}
    for output in graph.output:
        rank = len(output.type.tensor_type.shape.dim)
        renames[output.name] = OUTPUT_NAMES[0] if rank == 3 else OUTPUT_NAMES[1]
    if sorted(renames.values()) != sorted(OUTPUT_NAMES):
        raise ValueError(
            "Expected ONNX outputs of rank 3 (keypoints) and rank 2 (confidence). "
            f"Received: outputs={[(o.name, len(o.type.tensor_type.shape.dim)) for o in graph.output]}"
        )
    for node in graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    for output in graph.output:
        output.name = renames[output.name]
    # Keep the documented order: keypoints first.
    ordered = sorted(graph.output, key=lambda o: OUTPUT_NAMES.index(o.name))
    del graph.output[:]
    graph.output.extend(ordered)


def _name_dynamic_axes(onnx_model):
    """Names the dynamic axes: ``batch``, ``height``, ``width`` of the input, and
    ``batch`` of the outputs."""
    graph = onnx_model.graph
    values = [(value, ("batch", "height", "width")) for value in graph.input]
    values += [(value, ("batch",)) for value in graph.output]
    for value, names in values:
        for dim, name in zip(value.type.tensor_type.shape.dim, names):
            if not dim.HasField("dim_value"):
                dim.dim_param = name


def export_litert(saved_model_dir, path, precision="fp32", calibration_images=None, metadata=None):
    """Converts a SavedModel to a LiteRT (``.tflite``) model.

    Only LiteRT built-in operators are allowed, so the file runs in
    ``ai-edge-litert`` without the TensorFlow (Flex) delegate. ``metadata``
    (see :func:`export_metadata`; None: none) is stored in the flatbuffer.

    * ``fp32``: float32.
    * ``fp16``: float16 weights (dequantised to float32 at load on CPU).
    * ``int8``: post-training quantisation of the network: int8 weights and
      activations in the convolutions, pooling, concatenations and additions,
      ranges from the representative crops of ``calibration_images``; the
      decoders' arithmetic (:data:`LITERT_FLOAT_OPS`) stays float32, and so do
      the input and outputs, so the file is a drop-in replacement. (Quantising
      the soft-argmax too collapses FPENet: its sums over a heatmap span 1 to
      ~1600 and its division loses everything in int8; measured on the stage-3
      ``fpenet68_w32`` weights: 30.7 px mean error against Keras on 64 AFLW 80x80 crops, 0.77 px
      with the decoder in float.)
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        if calibration_images is None:
            raise ValueError("LiteRT INT8 needs calibration images. Received: calibration=None")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        representative = lambda: ([crop[None]] for crop in calibration_images)  # noqa: E731
        converter.representative_dataset = representative
        with _quiet_stdout(), warnings.catch_warnings():
            # The debugger runs TensorFlow's own tf.lite.Interpreter, which warns that it
            # is deprecated in favour of ai_edge_litert's (which fpezoo runs).
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated",
                                    category=UserWarning)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_ops=list(LITERT_FLOAT_OPS)),
            )
            flatbuffer = debugger.get_nondebug_quantized_model()
    else:
        with _quiet_stdout():
            flatbuffer = converter.convert()
    if metadata is not None:
        flatbuffer = add_litert_metadata(flatbuffer, metadata)
    pathlib.Path(path).write_bytes(flatbuffer)


def litert_runner(model, num_threads=1):
    """Runs a LiteRT landmark model on batches of crops.

    The interpreter's input is resized to each batch shape (exports have a
    dynamic batch), and the outputs are found by shape, as
    :func:`export_litert` writes them: keypoints ``(N, K, 2 or 3)`` and
    confidence ``(N, K)``.

    Args:
        model: a ``.tflite`` path or the model's bytes.
        num_threads: interpreter threads.

    Returns:
        ``run(images) -> (keypoints, confidence)`` for float32 crops
        ``(N, H, W, C)``; ``run.input_shape`` is the model's ``(1, H, W, C)``
        and ``run.num_keypoints`` its K.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
    else:
        path = pathlib.Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"LiteRT model not found. Received: model={str(path)!r}")
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    keypoints = [d for d in outputs if len(d["shape"]) == 3]
    confidence = [d for d in outputs if len(d["shape"]) == 2]
    if len(inputs) != 1 or len(keypoints) != 1 or len(confidence) != 1:
        raise ValueError(
            "A LiteRT landmark model has one image input and the outputs keypoints (N, K, 2) and "
            f"confidence (N, K). Received: inputs={[tuple(d['shape']) for d in inputs]}, "
            f"outputs={[tuple(d['shape']) for d in outputs]}"
        )
    input_index = inputs[0]["index"]
    allocated = {"shape": None}

    def run(images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if allocated["shape"] != images.shape:
            interpreter.resize_tensor_input(input_index, images.shape)
            interpreter.allocate_tensors()
            allocated["shape"] = images.shape
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(keypoints[0]["index"]), interpreter.get_tensor(confidence[0]["index"])

    run.input_shape = tuple(int(v) for v in inputs[0]["shape"])
    run.num_keypoints = int(keypoints[0]["shape"][1])
    return run


def _build_engine(onnx_path, plan_path, precision, calibration_images, batch_size, max_batch_size,
                  cache_path, final_plan_path):
    """Builds a TensorRT engine; prints the equivalent ``trtexec`` command first.

    The command names ``final_plan_path`` and the ONNX file that
    ``fpezoo convert ... --to onnx`` would write beside it.
    """
    import onnx

    from fpezoo.deploy import tensorrt

    input_shape = tensorrt.onnx_input_shape(onnx.load(os.fspath(onnx_path)))
    batches = tensorrt.batch_range(batch_size, max_batch_size)
    final_plan_path = pathlib.Path(final_plan_path)
    command = tensorrt.trtexec_command(final_plan_path.with_suffix(".onnx"), final_plan_path,
                                       precision, input_shape, batches,
                                       cache_path if precision == "int8" else None)
    print(f"Equivalent trtexec command (after `fpezoo convert ... --to onnx --output "
          f"{final_plan_path.with_suffix('.onnx')}`):\n  {command}")
    tensorrt.build_engine(onnx_path, plan_path, precision=precision,
                          calibration_images=calibration_images, batches=batches,
                          calibration_cache=cache_path, trtexec_hint=command)


@contextlib.contextmanager
def _quiet_stdout():
    """Silences the converters' progress prints (they write to stdout)."""
    with contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
        try:
            yield
        finally:
            sink.close()


@contextlib.contextmanager
def atomic_output(path, force=False):
    """Yields a temporary path to write ``path`` (a file or a folder) into.

    The temporary path is in the same folder, so the final rename is atomic for
    a file. When the block raises, nothing is left behind and an existing
    ``path`` is untouched.

    Args:
        path: the final path.
        force: replace an existing ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is False.
    """
    path = pathlib.Path(path)
    if path.exists() and not force:
        raise FileExistsError(
            f"{path} exists; pass force=True (--force) to replace it. Received: output={os.fspath(path)!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial",
                                                dir=path.parent))
    try:
        staged = staging_dir / path.name
        yield staged
        if not staged.exists():
            raise RuntimeError(f"The exporter wrote nothing. Received: output={os.fspath(path)!r}")
        if path.is_dir() and not path.is_symlink():
            path.rename(staging_dir / "replaced")
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)


# --------------------------------------------------------------------------- calibration


class CalibrationImages:
    """Face crops for INT8 calibration, prepared exactly as the model's input.

    Each crop is ``(height, width, channels)`` float32 of raw 0-255 values in the
    model's channel layout: what the exported model's ``images`` input takes (its
    own preprocessing layers then run inside the graph). The same crops feed
    LiteRT's representative dataset, TF-TRT's calibration input function and
    TensorRT's entropy calibrator.

    Args:
        source: a folder of face-crop images (each resized to the input size), or
            ``"reader:path"`` with a reader of ``CALIBRATION_READERS``: each
            record's face is cropped by its box with
            :func:`fpezoo.coordinates.crop_face`, enlarged by ``enlarge`` (or
            the whole image is resized when the record has no box: the loose
            crops of MTFL and AFLW).
        image_size: ``(height, width)`` of the model input.
        channels: 1 or 3.
        color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``: channel layout of the input.
        limit: use at most this many images (the first ones of the source).
        enlarge: crop side over the longer side of a record's box: the crop the
            model expects (None: :data:`fpezoo.predictor.DEFAULT_ENLARGE`).
    """

    def __init__(self, source, image_size, channels, color="grayscale",
                 limit=DEFAULT_CALIBRATION_IMAGES, enlarge=None):
        self.image_size = _size_pair(image_size)
        if channels not in (1, 3):
            raise ValueError(f"Calibration crops have 1 or 3 channels. Received: channels={channels!r}")
        _check_choice(color, INPUT_COLORS, "input_color")
        if (color == "grayscale") != (channels == 1):
            raise ValueError(
                f"{channels} channel(s) cannot hold {color!r} crops. Received: input_color={color!r}"
            )
        _check_positive_int(limit, "num_calibration_images")
        if enlarge is None:
            from fpezoo.predictor import DEFAULT_ENLARGE

            enlarge = DEFAULT_ENLARGE
        if not isinstance(enlarge, numbers.Real) or not 0 < enlarge < np.inf:
            raise ValueError(
                f"The calibration crop enlargement must be a positive number. Received: enlarge={enlarge!r}")
        self.enlarge = float(enlarge)
        self.channels = channels
        self.color = color
        self.limit = limit
        self.source = source
        self._items = _calibration_items(source)[:limit]
        self._crops = None

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self.array())

    def array(self):
        """All crops as one ``(N, height, width, channels)`` float32 array."""
        if self._crops is None:
            self._crops = np.stack([self._crop(item) for item in self._items])
        return self._crops

    def batches(self, batch_size):
        """Yields ``(batch_size, height, width, channels)`` float32 batches.

        The last incomplete batch is dropped (engines calibrate with one batch
        shape); with fewer images than ``batch_size`` there are no batches.
        """
        crops = self.array()
        for start in range(0, len(crops) - batch_size + 1, batch_size):
            yield crops[start:start + batch_size]

    def _crop(self, item):
        import cv2

        from fpezoo.imageio import load_image

        image, box = item
        rgb = load_image(image)
        height, width = self.image_size
        if box is None:
            crop = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            from fpezoo.coordinates import crop_face

            crop = crop_face(rgb, box, output_size=(height, width), enlarge=self.enlarge)[0]
        crop = np.asarray(crop, dtype=np.float32)
        if self.color == "grayscale":
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
        elif self.color == "bgr":
            crop = crop[..., ::-1]
        return np.ascontiguousarray(crop, dtype=np.float32)


def _calibration_items(source):
    """``[(image path or array, box or None)]`` of a calibration source."""
    from fpezoo.imageio import IMAGE_SUFFIXES

    text = os.fspath(source)
    reader, separator, reader_path = text.partition(":")
    if separator and reader in CALIBRATION_READERS:
        import importlib

        readers = importlib.import_module("fpezoo.data.readers")
        records = getattr(readers, CALIBRATION_READERS[reader])(reader_path)
        items = [(record.image, record.box) for record in records]
    elif os.path.isdir(text):
        files = sorted(path for path in pathlib.Path(text).iterdir()
                       if path.suffix.lower() in IMAGE_SUFFIXES)
        items = [(path, None) for path in files]
    elif separator and len(reader) > 1:
        raise ValueError(
            f"Unknown calibration reader {reader!r}; use a folder of images or one of "
            f"{', '.join(f'{name}:PATH' for name in CALIBRATION_READERS)}. Received: calibration={text!r}"
        )
    else:
        raise FileNotFoundError(
            "Calibration images must be a folder of images or 'reader:path'; no such folder. "
            f"Received: calibration={text!r}"
        )
    if not items:
        raise ValueError(f"The calibration source holds no images. Received: calibration={text!r}")
    return items


# --------------------------------------------------------------------------- helpers


def _check_choice(value, choices, arg_name):
    if value not in choices:
        raise ValueError(f"`{arg_name}` must be one of {choices}. Received: {arg_name}={value!r}")
    return value


def _check_positive_int(value, arg_name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{arg_name}` must be a positive integer. Received: {arg_name}={value!r}")
    return value


def _size_pair(value):
    """``(height, width)`` from a pair or a ``"HxW"`` string."""
    try:
        if isinstance(value, str):
            value = value.lower().split("x")
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`input_size` must be (height, width) or 'HxW'. Received: input_size={value!r}"
        ) from None
    if height < 1 or width < 1:
        raise ValueError(f"`input_size` must be positive. Received: input_size={value!r}")
    return height, width


# --------------------------------------------------------------------------- command line


def configure_parser(parser):
    """Options of ``fpezoo convert`` / ``fpezoo-convert``."""
    parser.add_argument("source", help="registered weights name, .keras file, .weights.h5 file "
                                       "or OpenVINO IR .xml of landmarks-regression-retail-0009")
    parser.add_argument("--to", choices=TARGETS, default="onnx", help="target format (default onnx)")
    parser.add_argument("--output", "-o", required=True,
                        help="output file or folder (for triton: the model repository)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--calibration",
                        help="INT8 calibration: a folder of face crops, or READER:PATH with READER "
                             f"in {', '.join(CALIBRATION_READERS)}")
    parser.add_argument("--num-calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--calibration-cache", help="TensorRT INT8 calibration cache file")
    parser.add_argument("--calibration-enlarge", type=float,
                        help="crop side over the longer side of a calibration record's box "
                             "(default: the registered model's crop, else the predictor's default)")
    parser.add_argument("--batch-size", default="dynamic",
                        help="'dynamic' (default) or a fixed batch size")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help="largest batch of a dynamic TensorRT engine / Triton model")
    parser.add_argument("--input-size", help="HxW crop size, for models that accept any size")
    parser.add_argument("--input-color", choices=INPUT_COLORS,
                        help="channel layout of the crops (default: from the model)")
    parser.add_argument("--builder", help="fpezoo builder for a .weights.h5 source, e.g. FPENet")
    parser.add_argument("--builder-config", default="{}",
                        help="JSON keyword arguments of the builder")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--triton-backend", choices=("onnx", "tensorrt"), default="onnx")
    parser.add_argument("--name", help="model name in the Triton repository")
    parser.add_argument("--force", action="store_true", help="replace an existing output")


def run(args):
    """Runs ``fpezoo convert``; returns the exit code (2 on a usage error)."""
    try:
        builder_config = json.loads(args.builder_config)
        if not isinstance(builder_config, dict):
            raise ValueError(
                f"--builder-config must be a JSON object. Received: builder_config={args.builder_config!r}"
            )
        batch_size = None if args.batch_size == "dynamic" else _batch_argument(args.batch_size)
        path = convert(
            args.source, args.output, to=args.to, precision=args.precision,
            calibration=args.calibration, num_calibration_images=args.num_calibration_images,
            batch_size=batch_size, max_batch_size=args.max_batch_size, input_size=args.input_size,
            input_color=args.input_color, force=args.force, builder=args.builder,
            builder_config=builder_config, opset=args.opset, triton_backend=args.triton_backend,
            model_name=args.name, calibration_cache=args.calibration_cache,
            calibration_enlarge=args.calibration_enlarge)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _batch_argument(text):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--batch-size must be 'dynamic' or an integer. Received: batch_size={text!r}") from None


def main(argv=None):
    """Entry point of the ``fpezoo-convert`` console script (quiet as ``fpezoo convert``)."""
    from fpezoo.cli import VERBOSE_HELP, quiet_native_logs

    parser = argparse.ArgumentParser(prog="fpezoo-convert", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    configure_parser(parser)
    args = parser.parse_args(argv)
    with contextlib.nullcontext() if args.verbose else quiet_native_logs():
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
