"""Exporters of Keras landmark models: SavedModel, ONNX and LiteRT files with their metadata.

The building blocks of :func:`fpezoo.deploy.convert.convert` (which resolves the
model source, checks the request and writes atomically) and of the runtime's
LiteRT cache (:func:`fpezoo.runtime.cached_litert_file`). Every export takes
the model's input tensor, named ``images``: a batch of face crops
``(N, H, W, C)`` of raw 0-255 values, and returns ``keypoints`` ``(N, K, 2)``
in the crop's pixels and ``confidence`` ``(N, K)``.
"""

import contextlib
import os
import pathlib
import tempfile
import warnings

from fpezoo.deploy.metadata import add_litert_metadata, add_onnx_metadata

INPUT_NAME = "images"
OUTPUT_NAMES = ("keypoints", "confidence")
DEFAULT_OPSET = 17
MAX_OPSET = 18
# LiteRT operators kept in float32 by INT8 quantisation: the arithmetic of the
# soft-argmax, heatmap-argmax and regression decoders (see export_litert).
LITERT_FLOAT_OPS = ("EXP", "SUM", "DIV", "REDUCE_MAX", "MUL", "SUB", "PACK", "RESHAPE")


def size_pair(value):
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
        size = size_pair(input_size)
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


def model_crop_size(model):
    """``(height, width)`` of the crops ``model`` takes, or None when nothing says.

    Its input's size when fixed; else the output size of its
    :class:`fpezoo.layers.FacePreprocessing` layer (which resizes any crop).
    """
    from fpezoo.layers import FacePreprocessing

    size = tuple(model.inputs[0].shape[1:3])
    if None not in size:
        return size
    preprocessing = [layer.output_size for layer in model.layers if isinstance(layer, FacePreprocessing)]
    return tuple(preprocessing[0]) if preprocessing else None


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


@contextlib.contextmanager
def _quiet_stdout():
    """Silences the converters' progress prints (they write to stdout)."""
    with contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
        try:
            yield
        finally:
            sink.close()




def export_metadata(model, spec, entry=None, source_name=None, source_sha256=None, input_color=None):
    """The metadata an export records (see :mod:`fpezoo.deploy.metadata`).

    Args:
        model: the Keras model exported.
        spec: its :func:`export_signature`.
        entry: the registry entry of the registered weights it was built from
            (gives the scheme, crop and weights sha256), or None.
        source_name: the registered name or file name converted (None: the
            model's name).
        source_sha256: sha256 of the source file, for sources that are not
            registered names.
        input_color: the crops' colour order (None: :func:`model_input_color`).

    Returns:
        A dict with the keys of :data:`fpezoo.deploy.metadata.FIELDS`.
    """
    import fpezoo

    size = tuple(spec.shape[1:3])
    if None in size:
        size = model_crop_size(model)
    entry = entry or {}
    return {
        "scheme": entry.get("scheme"),
        "enlarge": entry.get("crop", {}).get("enlarge"),
        "input_size": None if size is None else [int(value) for value in size],
        "input_color": input_color or model_input_color(model),
        "weights_sha256": entry.get("sha256", source_sha256),
        "source": source_name or model.name,
        "fpezoo_version": fpezoo.__version__,
    }


def export_litert_file(model, path, entry=None, source_name=None, input_size=None):
    """Writes the float32 LiteRT file of a Keras landmark model, with its metadata.

    Args:
        model: the Keras model.
        path: the ``.tflite`` file to write (not atomically: write into a
            temporary name and rename).
        entry, source_name: see :func:`export_metadata`.
        input_size: ``(height, width)`` for a model that accepts any crop size.
    """
    spec = export_signature(model, input_size=input_size, needs_fixed_size=True)
    metadata = export_metadata(model, spec, entry=entry, source_name=source_name)
    with tempfile.TemporaryDirectory(prefix="fpezoo-litert-") as work:
        export_saved_model(model, spec, pathlib.Path(work) / "saved_model")
        export_litert(pathlib.Path(work) / "saved_model", path, metadata=metadata)
