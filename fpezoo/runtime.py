"""One home for inference: model sources, their runners, and the crop -> run -> invert loop.

The predictor (:class:`fpezoo.LandmarkDetector`), ``fpezoo evaluate``, the
benchmarks and ``fpezoo convert`` all go through this module:

1. **Resolution.** :func:`load_runner` turns a model source (a registered
   weights name, a ``.keras`` file, a ``.weights.h5`` file with its builder, the
   OpenVINO ``.xml`` of landmarks-regression-retail-0009, an exported ``.onnx``
   or ``.tflite`` file, a Keras model or a builder) into a runner;
   :func:`load_keras_model` into a Keras model.
2. **Runners.** :class:`KerasRunner`, :class:`OnnxRunner` and
   :class:`LiteRTRunner` share one interface: ``runner(crops) -> (keypoints
   (N, K, 2), confidence (N, K))`` for float32 crops ``(N, H, W, C)`` of raw
   0-255 values, and ``runner.spec`` (:class:`ModelSpec`: the crop size, colour,
   scheme and framing the model takes). Exported files carry their spec as
   metadata (:mod:`fpezoo.deploy.metadata`).
3. **The loop.** :func:`predict_boxes` crops each face box from its image
   (:func:`face_crop`, turned upright by the face's roll), runs the crops in
   batches (:func:`run_batches`) and maps the keypoints back to the image;
   optionally a second, upright pass re-crops the faces whose landmarks show a
   roll the crop did not correct (:func:`landmark_roll`), and a roll search
   finds the roll of faces whose crops no detector set upright.

A registered name runs on LiteRT by default: its ``.tflite`` export is written
once per weights file (keyed by the file's sha256) into the user's cache folder
(:func:`cache_dir`), so later runs import neither Keras nor TensorFlow.
"""

import dataclasses
import importlib
import importlib.util
import math
import os
import pathlib
import tempfile
import warnings
from typing import Optional

import numpy as np

from fpezoo.coordinates import (
    angle_difference,
    compose,
    crop_transform,
    invert_points,
    rotation_transform,
    transform_points,
    transform_scale,
    warp,
    warp_block_size,
)
from fpezoo.data.records import convert_color, landmark_box
from fpezoo.imageio import COLORS

# Side of the square crop around a face's landmark box, in multiples of the
# box's longer side, for models that record none: the training crops of AFLW
# (fpezoo's main training source) are 1.456 times their 68 landmarks' box
# (median of 10,137 teacher-labelled crops, IQR 1.42-1.53; the MTFL crops are
# looser, 2.21). Measured by ``python benchmarks/detection.py --crop-statistics``.
DEFAULT_ENLARGE = 1.46
BACKENDS = ("auto", "keras", "litert")
EXPORTED_SUFFIXES = (".onnx", ".tflite")
# Files that hold a Keras model or its weights (with a builder, or the OpenVINO IR).
KERAS_SOURCE_SUFFIXES = (".keras", ".weights.h5", ".xml")
# Modules whose Keras objects (layers, losses, metrics, schedules, models) a
# saved ``.keras`` model may name.
SERIALIZABLE_MODULES = (
    "fpezoo.layers", "fpezoo.losses", "fpezoo.metrics", "fpezoo.schedules", "fpezoo.models.common",
    "fpezoo.models.fpenet", "fpezoo.models.retail", "fpezoo.models.fan",
)
# Side of the image region cut around a box before cropping, in multiples of
# the crop's side (or of the box's, if longer): covers the crop turned by any
# angle (its diagonal, sqrt(2) sides) and the pixels that bilinear sampling and
# block averaging read beyond it, so a 20000x20000 photo is never warped (or
# copied) whole.
CROP_WINDOW_MARGIN = 1.5
# The upright pass re-crops a face when the roll of its landmarks differs from
# the roll its crop was turned by by more than this many degrees.
UPRIGHT_PASS_MIN_DEGREES = 20.0
# The roll search's starting turns: each face's crop is also run turned by these.
ROLL_SEARCH_TURNS = (0.0, 90.0, 180.0, 270.0)
# The roll search scores an upright re-crop by its mean confidence times
# exp(-|landmark roll - crop roll| / this many degrees): a re-crop the model
# sees upright is both confident and consistent with the roll it was turned by.
# Chosen on the validation split of the training faces (scale 10 or 30 degrees,
# confidence alone, agreement between turns; notes in docs/DESIGN.md).
ROLL_SEARCH_CONSISTENCY_DEGREES = 30.0
# The points of the five-point scheme that give a face's roll: eyes, mouth corners.
FIVE_POINT_EYES = (0, 1)
FIVE_POINT_MOUTH = (3, 4)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the crop -> run -> invert loop needs to know of a landmark model.

    Attributes:
        name: the registered name or file the model came from (or the Keras
            model's name).
        input_size: ``(height, width)`` of the crops.
        input_color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``.
        num_keypoints: K.
        scheme: keypoint scheme name (:mod:`fpezoo.schemes`), or None.
        enlarge: the crop framing the model was trained with (crop side over
            the longer side of the face's landmark box), or None.
        weights_sha256: sha256 of the weights (or exported file), or None.
    """

    name: str
    input_size: tuple
    input_color: str
    num_keypoints: int
    scheme: Optional[str] = None
    enlarge: Optional[float] = None
    weights_sha256: Optional[str] = None


# --------------------------------------------------------------------------- resolution
def default_model_name():
    """The registered weights the predictor and ``fpezoo demo`` use by default.

    The registry entry marked ``"default": true``, else the first 68-point
    (``ibug68``) entry by name, else the first entry.

    Raises:
        LookupError: no weights are registered.
    """
    from fpezoo.weights import REGISTRY_FILE, registry, weights_dir

    entries = registry()
    if not entries:
        raise LookupError(
            f"No trained weights are registered yet ({weights_dir() / REGISTRY_FILE} is empty), so "
            "there is no default model: pass model= (a Keras model, a builder or a '.keras' file). "
            "Received: model=None"
        )
    marked = sorted(name for name, entry in entries.items() if entry.get("default"))
    ibug = sorted(name for name, entry in entries.items() if entry.get("scheme") == "ibug68")
    return (marked or ibug or sorted(entries))[0]


def registered_entry(source):
    """The registry entry of a model source that is a registered name, else None.

    Raises:
        ValueError: a string that is neither a model file nor a registered name
            (the message lists the registered names).
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    if text.endswith(KERAS_SOURCE_SUFFIXES + EXPORTED_SUFFIXES):
        return None
    from fpezoo.weights import registry_entry

    return registry_entry(text)


def registered_enlarge(source):
    """The crop framing of a model source: its registered ``"crop": {"enlarge"}``, else :data:`DEFAULT_ENLARGE`."""
    entry = registered_entry(source) or {}
    return float(entry.get("crop", {}).get("enlarge", DEFAULT_ENLARGE))


def register_serializable_objects():
    """Imports the modules that register fpezoo's Keras objects, so ``.keras`` files load."""
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


def load_keras_model(source=None, builder=None, builder_config=None, arg_name="source"):
    """Resolves a model source into a Keras model.

    Args:
        source: None (the default registered weights,
            :func:`default_model_name`), a registered weights name, a
            ``.keras`` file, a ``.weights.h5`` file (with ``builder``), the
            OpenVINO IR ``.xml`` of landmarks-regression-retail-0009, a Keras
            model, or a builder called without arguments.
        builder: builder name for a ``.weights.h5`` file (see
            :func:`fpezoo.weights.registered_builder`).
        builder_config: builder keyword arguments (dict); for an ``.xml``, the
            keyword arguments of
            :func:`fpezoo.models.retail.import_openvino_retail`; for a
            registered name, overrides its registered arguments.
        arg_name: the caller's name of ``source``, for error messages.

    Returns:
        The Keras model.

    Raises:
        FileNotFoundError: a model file that does not exist.
        ValueError: a ``.weights.h5`` file without its builder, a builder for a
            source that has its own, or an exported file (run those with
            :func:`load_runner`).
        TypeError: any other kind of source.
    """
    import keras

    if source is None:
        source = default_model_name()
    config = dict(builder_config or {})
    if isinstance(source, keras.Model):
        if builder is not None or config:
            raise ValueError(
                "`builder` and `builder_config` apply to weights files and registered names, "
                f"not to a Keras model. Received: builder={builder!r}, builder_config={builder_config!r}"
            )
        return source
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.endswith(EXPORTED_SUFFIXES):
            raise ValueError(
                "An exported .onnx/.tflite file holds no Keras model: run it with "
                f"fpezoo.runtime.load_runner (or `fpezoo evaluate/predict`). Received: {arg_name}={text!r}"
            )
        is_weights = text.endswith(".weights.h5")
        if is_weights and builder is None:
            raise ValueError(
                "A '.weights.h5' file holds no architecture: it needs the builder that makes its "
                "model, e.g. builder='FPENet' (--builder FPENet) and its arguments (--builder-config). "
                f"Received: {arg_name}={text!r}, builder=None"
            )
        if not is_weights and builder is not None:
            raise ValueError(
                "`builder` goes with a '.weights.h5' file (registered names, .keras files and the "
                f"OpenVINO .xml know their model). Received: {arg_name}={text!r}, builder={builder!r}"
            )
        if text.endswith(KERAS_SOURCE_SUFFIXES) and not os.path.isfile(text):
            raise FileNotFoundError(f"Model file not found. Received: {arg_name}={text!r}")
        if is_weights:
            from fpezoo.weights import registered_builder

            return registered_builder(builder)(weights=text, **config)
        if text.endswith(".keras"):
            register_serializable_objects()
            return keras.saving.load_model(text, safe_mode=True)
        if text.endswith(".xml"):
            from fpezoo.models.retail import import_openvino_retail

            return import_openvino_retail(text, **config)
        from fpezoo.weights import build_registered

        return build_registered(text, **config)
    if callable(source):
        built = source()
        if isinstance(built, keras.Model):
            return built
    raise TypeError(
        "A model source is a registered weights name, a '.keras', '.weights.h5', OpenVINO '.xml', "
        f"'.onnx' or '.tflite' file, a Keras model or a model builder. Received: {arg_name}={source!r}"
    )


def keras_model_spec(model, input_color=None, entry=None, name=None):
    """The :class:`ModelSpec` of a Keras landmark model.

    Args:
        model: the Keras model. When its input has no fixed size, the output
            size of its ``FacePreprocessing`` layer gives the crop size.
        input_color: the crops' colour order; None reads it from the model (one
            channel: grayscale; else the preprocessing layer's colour, or RGB).
        entry: its registry entry (scheme, crop framing, sha256), or None.
        name: the source's name (default: the model's name).

    Raises:
        ValueError: the crop size cannot be known, or the colour does not match
            the model's input channels.
    """
    from fpezoo.deploy.export import model_crop_size, model_input_color

    size = model_crop_size(model)
    if size is None:
        raise ValueError(
            "The model's input has no fixed size and no FacePreprocessing layer to say which "
            f"size to crop faces to. Received: input_shape={tuple(model.inputs[0].shape[1:])}"
        )
    channels = model.inputs[0].shape[-1]
    input_color = input_color or model_input_color(model)
    if input_color not in COLORS or (input_color == "grayscale") != (channels == 1):
        raise ValueError(
            f"`input_color` must be one of {COLORS} and match the model's {channels} "
            f"input channel(s). Received: input_color={input_color!r}"
        )
    entry = entry or {}
    num_keypoints = int(model.outputs[0].shape[1])
    return ModelSpec(
        name=name or model.name, input_size=(int(size[0]), int(size[1])), input_color=input_color,
        num_keypoints=num_keypoints, scheme=entry.get("scheme") or scheme_for(num_keypoints),
        enlarge=entry.get("crop", {}).get("enlarge"), weights_sha256=entry.get("sha256"),
    )


def scheme_for(num_keypoints):
    """The keypoint scheme of ``num_keypoints`` points, or None when no scheme has that many."""
    from fpezoo.schemes import scheme_for_num_keypoints

    try:
        return scheme_for_num_keypoints(num_keypoints).name
    except (ValueError, KeyError):
        return None


def load_runner(model=None, backend="auto", input_color=None, builder=None, builder_config=None,
                num_threads=1):
    """A runner for a model source (see :func:`load_keras_model` for the sources).

    Args:
        model: the model source; ``.onnx`` and ``.tflite`` files run with
            :class:`OnnxRunner` and :class:`LiteRTRunner` (their crop from the
            metadata ``fpezoo convert`` records).
        backend: for Keras sources: ``"keras"`` runs the Keras model;
            ``"litert"`` runs its LiteRT export on ``num_threads`` threads
            (registered names: the cached export, :func:`cached_litert_file`;
            other models are exported anew, which takes seconds and needs
            TensorFlow); ``"auto"``: ``"litert"`` for registered names when
            ``ai-edge-litert`` is installed, else ``"keras"``.
        input_color: the crops' colour order (None: the model's).
        builder, builder_config: see :func:`load_keras_model`.
        num_threads: LiteRT and ONNX Runtime threads.

    Returns:
        A :class:`KerasRunner`, :class:`OnnxRunner` or :class:`LiteRTRunner`.

    Raises:
        ValueError: an unknown backend, or a backend for an exported file.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}. Received: backend={backend!r}")
    if isinstance(model, pathlib.Path):
        model = os.fspath(model)
    if isinstance(model, str) and model.lower().endswith(EXPORTED_SUFFIXES):
        if backend == "keras":
            raise ValueError(
                "An exported file runs with its own runtime (ONNX Runtime or LiteRT), not Keras. "
                f"Received: model={model!r}, backend={backend!r}"
            )
        runner_class = OnnxRunner if model.lower().endswith(".onnx") else LiteRTRunner
        return runner_class(model, input_color=input_color, num_threads=num_threads)
    if model is None:
        model = default_model_name()
    entry = registered_entry(model) if builder is None and not builder_config else None
    if backend == "auto":
        backend = "litert" if entry is not None and importlib.util.find_spec("ai_edge_litert") else "keras"
    if backend == "litert" and entry is not None:
        runner = LiteRTRunner(cached_litert_file(model), input_color=input_color, num_threads=num_threads)
        runner.spec = dataclasses.replace(runner.spec, name=os.fspath(model), weights_sha256=entry["sha256"])
        return runner
    keras_model = load_keras_model(model, builder, builder_config, arg_name="model")
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if entry is None and name is not None and name.endswith(".keras"):
        from fpezoo.weights import sha256

        entry = {"sha256": sha256(name)}
    spec = keras_model_spec(keras_model, input_color, entry, name)
    if backend == "litert":
        return LiteRTRunner(_litert_export(keras_model, spec.input_size), input_color=spec.input_color,
                            num_threads=num_threads, spec=spec)
    return KerasRunner(keras_model, spec)


def cache_dir():
    """The folder fpezoo caches exports in: ``$FPEZOO_CACHE``, else ``$XDG_CACHE_HOME/fpezoo``, else ``~/.cache/fpezoo``."""
    override = os.environ.get("FPEZOO_CACHE")
    if override:
        return pathlib.Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "fpezoo"


def cached_litert_file(name):
    """The LiteRT export of registered weights, written once per weights file.

    The file is ``<cache_dir>/litert/<name>-<sha256 prefix>.tflite``, keyed by
    the sha256 of the weights file as it is now (checked against the registry
    first), so new weights get a new export. A cached file whose recorded
    weights sha256 differs is exported again. Exporting needs TensorFlow and
    takes a few seconds; reading a cached file needs neither.

    Args:
        name: a registered weights name (optionally pinned, ``NAME@sha256:...``).

    Returns:
        The ``.tflite`` path; the model's bytes when the cache folder cannot
        be written (with a warning).

    Raises:
        ValueError: the weights file does not match its registered sha256.
    """
    from fpezoo.deploy.metadata import read_metadata
    from fpezoo.weights import registry_entry, sha256, split_pin, weights_dir

    entry = registry_entry(name)
    weights_file = weights_dir() / entry["file"]
    digest = sha256(weights_file)
    if digest != entry["sha256"]:
        raise ValueError(
            f"The weights file {weights_file} does not match its registered sha256 {entry['sha256'][:12]}...: "
            f"reinstall fpezoo or register the file anew. Received: sha256={digest[:12]}..."
        )
    path = cache_dir() / "litert" / f"{split_pin(name)[0]}-{digest[:16]}.tflite"
    if path.is_file():
        try:
            if read_metadata(path).get("weights_sha256") == digest:
                return path
        except (OSError, ValueError):
            pass  # unreadable or from another version: export it again
    from fpezoo.deploy.export import export_litert_file
    from fpezoo.weights import build_registered

    model = build_registered(name)
    input_size = keras_model_spec(model).input_size  # models that take any size: their preprocessing's
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".partial",
                                         delete=False) as staging:
            staged = pathlib.Path(staging.name)
    except OSError as error:  # no writable cache: export for this process only
        warnings.warn(f"Cannot write the LiteRT cache {path.parent} ({error}); exporting for this run only.",
                      stacklevel=2)
        return _litert_export(model, input_size, entry=entry, source_name=name)
    try:
        export_litert_file(model, staged, entry=entry, source_name=name, input_size=input_size)
        os.replace(staged, path)  # atomic: a concurrent reader sees the old file or the whole new one
    finally:
        staged.unlink(missing_ok=True)
    return path


def _litert_export(model, input_size, entry=None, source_name=None):
    """The LiteRT flatbuffer of a Keras model, with its metadata (exported into a temporary folder)."""
    from fpezoo.deploy.export import export_litert_file

    with tempfile.TemporaryDirectory(prefix="fpezoo_litert_") as folder:
        path = pathlib.Path(folder) / "model.tflite"
        export_litert_file(model, path, entry=entry, source_name=source_name, input_size=input_size)
        return path.read_bytes()


# --------------------------------------------------------------------------- runners
class KerasRunner:
    """Runs a Keras landmark model on batches of crops.

    Args:
        model: the Keras model.
        spec: its :class:`ModelSpec` (default: :func:`keras_model_spec`).
    """

    backend = "keras"

    def __init__(self, model, spec=None):
        self.model = model
        self.spec = spec or keras_model_spec(model)

    def __call__(self, crops):
        """``(keypoints (N, K, 2 or 3), confidence (N, K))`` for float32 crops ``(N, H, W, C)``."""
        outputs = self.model.predict_on_batch(np.asarray(crops, dtype="float32"))
        return np.asarray(outputs[0]), np.asarray(outputs[1])


class OnnxRunner:
    """Runs an exported ONNX landmark model (``fpezoo convert --to onnx``) with ONNX Runtime.

    Args:
        path: the ``.onnx`` file; its input is ``(N, H, W, C)`` and its outputs
            include keypoints ``(N, K, 2)`` (and confidence ``(N, K)``). Its
            crop (scheme, framing, size, colour) is read from the metadata
            ``fpezoo convert`` records (:func:`fpezoo.deploy.metadata.exported_model_info`).
        input_color: colour order of the crops (default: recorded, else
            ``"rgb"`` for 3 channels).
        num_threads: ONNX Runtime intra-op threads.
    """

    backend = "onnxruntime"

    def __init__(self, path, input_color=None, num_threads=1):
        import onnxruntime

        from fpezoo.deploy.metadata import exported_model_info
        from fpezoo.weights import sha256

        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found. Received: model={str(path)!r}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        info = exported_model_info(path, model_input.shape, input_color)
        outputs = self.session.get_outputs()
        keypoint_outputs = [o for o in outputs if len(o.shape) == 3 and o.shape[-1] == 2]
        if not keypoint_outputs:
            raise ValueError(
                "The ONNX model has no keypoints output of shape (N, K, 2). "
                f"Received: outputs={[(o.name, o.shape) for o in outputs]}"
            )
        self.keypoints_name = keypoint_outputs[0].name
        num_keypoints = int(keypoint_outputs[0].shape[1])
        confidence = [o for o in outputs if len(o.shape) == 2 and o.shape[-1] == num_keypoints]
        self.confidence_name = confidence[0].name if confidence else None
        self.spec = ModelSpec(name=str(path), input_size=info.input_size, input_color=info.input_color,
                              num_keypoints=num_keypoints, scheme=info.scheme or scheme_for(num_keypoints),
                              enlarge=info.enlarge, weights_sha256=sha256(path))

    def __call__(self, crops):
        """``(keypoints (N, K, 2), confidence (N, K))``; confidence is 1 when the model has none."""
        names = [self.keypoints_name] + ([self.confidence_name] if self.confidence_name else [])
        results = self.session.run(names, {self.input_name: np.asarray(crops, dtype="float32")})
        keypoints = results[0]
        confidence = results[1] if len(results) > 1 else np.ones(keypoints.shape[:2], "float32")
        return keypoints, confidence


class LiteRTRunner:
    """Runs a LiteRT landmark model (``fpezoo convert --to litert``) with the LiteRT interpreter.

    The interpreter's input is resized to each batch shape (exports have a
    dynamic batch), and the outputs are found by shape, as
    :func:`fpezoo.deploy.export.export_litert` writes them: keypoints
    ``(N, K, 2 or 3)`` and confidence ``(N, K)``.

    Args:
        model: a ``.tflite`` path or the model's bytes (fp32, fp16 or int8;
            float32 input and outputs).
        input_color: colour order of the crops (default: recorded, else
            ``"rgb"`` for 3 channels).
        num_threads: interpreter threads.
        spec: the :class:`ModelSpec` (default: read from the file's metadata,
            :func:`fpezoo.deploy.metadata.exported_model_info`).
    """

    backend = "litert"

    def __init__(self, model, input_color=None, num_threads=1, spec=None):
        from ai_edge_litert.interpreter import Interpreter

        from fpezoo.deploy.metadata import exported_model_info

        if isinstance(model, (bytes, bytearray)):
            self.interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            path = pathlib.Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"LiteRT model not found. Received: model={str(path)!r}")
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        keypoints = [d for d in outputs if len(d["shape"]) == 3]
        confidence = [d for d in outputs if len(d["shape"]) == 2]
        if len(inputs) != 1 or len(keypoints) != 1 or len(confidence) != 1:
            raise ValueError(
                "A LiteRT landmark model has one image input and the outputs keypoints (N, K, 2) and "
                f"confidence (N, K). Received: inputs={[tuple(d['shape']) for d in inputs]}, "
                f"outputs={[tuple(d['shape']) for d in outputs]}"
            )
        self._input_index = inputs[0]["index"]
        self._output_indices = (keypoints[0]["index"], confidence[0]["index"])
        self._allocated_shape = None
        self.input_shape = tuple(int(v) for v in inputs[0]["shape"])
        if spec is None:
            from fpezoo.weights import sha256

            info = exported_model_info(model, self.input_shape, input_color)
            num_keypoints = int(keypoints[0]["shape"][1])
            in_memory = isinstance(model, (bytes, bytearray))
            spec = ModelSpec(name="<bytes>" if in_memory else os.fspath(model), input_size=info.input_size,
                             input_color=info.input_color, num_keypoints=num_keypoints,
                             scheme=info.scheme or scheme_for(num_keypoints), enlarge=info.enlarge,
                             weights_sha256=info.weights_sha256 if in_memory else sha256(model))
        self.spec = spec

    def __call__(self, crops):
        """``(keypoints (N, K, 2), confidence (N, K))`` for float32 crops ``(N, H, W, C)``."""
        crops = np.ascontiguousarray(crops, dtype=np.float32)
        if self._allocated_shape != crops.shape:
            self.interpreter.resize_tensor_input(self._input_index, crops.shape)
            self.interpreter.allocate_tensors()
            self._allocated_shape = crops.shape
        self.interpreter.set_tensor(self._input_index, crops)
        self.interpreter.invoke()
        return tuple(self.interpreter.get_tensor(index) for index in self._output_indices)


# --------------------------------------------------------------------------- crop -> run -> invert
def window_around(image, box, margin, align=1):
    """The part of ``image`` within ``margin`` box sides of the box centre, and its origin ``(x0, y0)``.

    The origin is a multiple of ``align``, so a warp that first averages
    ``align`` x ``align`` pixel blocks (:func:`fpezoo.coordinates.warp`) sees
    the blocks it would see in the whole image, and the crop comes out the same.
    """
    side = max(box[2] - box[0], box[3] - box[1])
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    height, width = image.shape[:2]
    half = margin * side / 2 + 2  # two pixels for the bilinear neighbours of tiny crops
    x0 = int(np.clip(math.floor(centre_x - half), 0, width - 1)) // align * align
    y0 = int(np.clip(math.floor(centre_y - half), 0, height - 1)) // align * align
    x1 = int(np.clip(math.ceil(centre_x + half), x0 + 1, width))
    y1 = int(np.clip(math.ceil(centre_y + half), y0 + 1, height))
    return image[y0:y1, x0:x1], (x0, y0)  # a view: OpenCV reads it in place


def face_crop(image, box, input_size, enlarge, roll=0.0, image_color="rgb", input_color=None):
    """The model-input crop of a face box and its image -> crop transform.

    The crop is the square of side ``enlarge`` times the box's longer side,
    centred on the box (:func:`fpezoo.coordinates.crop_transform`, the framing
    of the training crops), turned by ``-roll`` about the box centre so the face
    comes out upright. Only a window around the box is warped, so huge images
    are never copied whole; the returned transform maps original-image pixels.
    With ``input_color``, the window is first turned into the model's colour
    order, as the training pipeline loads images in it before warping (and a
    grayscale model warps one channel instead of three).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        box: ``(x_min, y_min, x_max, y_max)`` landmark box of the face, in the
            face's upright frame when ``roll`` is not 0 (centred on the face,
            the size the face has once turned upright).
        input_size: ``(height, width)`` of the crop.
        enlarge: crop side over the box's longer side.
        roll: the face's in-plane rotation in degrees
            (:func:`fpezoo.coordinates.roll_from_eyes`).
        image_color: colour order of ``image``.
        input_color: the model's colour order (:func:`fpezoo.data.records.convert_color`),
            or None to keep the image's.

    Returns:
        ``(crop, transform)``: the crop (float32 0-255 ``(h, w, channels)`` in
        ``input_color``; without it, the image's dtype and channels) and the
        2x3 affine matrix from original-image to crop pixels.
    """
    transform = crop_transform(box, input_size, enlarge=enlarge)
    if roll:
        # The box centre in the pixel-centre units that points and transforms use.
        centre = ((box[0] + box[2]) / 2 - 0.5, (box[1] + box[3]) / 2 - 0.5)
        transform = compose(transform, rotation_transform(-roll, centre))
    window, origin = window_around(image, box, max(enlarge, 1.0) * CROP_WINDOW_MARGIN, warp_block_size(transform))
    # In window pixels: crop = A @ (p + origin) + t, so the translation becomes t + A @ origin.
    local = transform.copy()
    local[:, 2] += transform[:, :2] @ np.asarray(origin, dtype="float64")
    if input_color is None:
        return warp(window, local, input_size), transform
    crop = warp(convert_color(window, image_color, input_color), local, input_size)
    return crop.astype("float32").reshape(crop.shape[:2] + (-1,)), transform


def run_batches(runner, crops, batch_size=16, flip_test=False):
    """Runs crops through a runner in batches, padded to powers of two.

    Padding keeps the batch shapes few (Keras compiles one function per shape,
    LiteRT re-allocates per shape).

    Args:
        runner: a runner of :func:`load_runner`.
        crops: list of ``(h, w, c)`` float32 crops in the model's colour.
        batch_size: largest batch run at once.
        flip_test: also run each crop's mirror image and average the two
            predictions (:func:`fpezoo.schemes.flip_averaged_predictions`;
            needs the runner's scheme).

    Returns:
        ``(keypoints (N, K, D), confidence (N, K))`` float32 in crop pixels:
        ``D`` is 2, or 3 for a model whose keypoints carry depth
        (``fpezoo.FAN(dimensions=3)``; z in crop pixels, larger nearer).
    """
    from fpezoo.schemes import flip_averaged_predictions

    num_keypoints = runner.spec.num_keypoints
    if not len(crops):
        return np.zeros((0, num_keypoints, 2), "float32"), np.zeros((0, num_keypoints), "float32")
    if flip_test and runner.spec.scheme is None:
        raise ValueError(
            "`flip_test` needs the model's keypoint scheme (its left/right pairs). "
            f"Received: scheme=None, num_keypoints={num_keypoints}"
        )
    keypoints, confidence = [], []
    for start in range(0, len(crops), batch_size):
        batch = np.stack(crops[start:start + batch_size]).astype("float32", copy=False)
        count = len(batch)
        padded = 2 ** math.ceil(math.log2(count))
        if padded > count:
            batch = np.concatenate([batch, np.zeros((padded - count,) + batch.shape[1:], batch.dtype)])
        if flip_test:
            batch_keypoints, batch_confidence = flip_averaged_predictions(runner, batch, runner.spec.scheme)
        else:
            batch_keypoints, batch_confidence = runner(batch)
        keypoints.append(np.asarray(batch_keypoints, dtype="float32")[:count])
        confidence.append(np.asarray(batch_confidence, dtype="float32")[:count])
    return np.concatenate(keypoints), np.concatenate(confidence)


def landmark_roll(keypoints, scheme):
    """The roll of faces from their landmarks: the eyes -> mouth axis of their five-point form.

    Args:
        keypoints: ``(K, 2)`` or ``(N, K, 2)`` landmarks in image pixels.
        scheme: their keypoint scheme name.

    Returns:
        Degrees (:func:`fpezoo.coordinates.roll_from_eyes`), a float or an
        ``(N,)`` array; NaN where the scheme has no five-point form or a point
        is not finite.
    """
    from fpezoo.coordinates import roll_from_eyes
    from fpezoo.schemes import convert_keypoints

    keypoints = np.asarray(keypoints, dtype="float64")
    try:
        five, _ = convert_keypoints(keypoints, None, scheme, "five_point")
    except (KeyError, ValueError):
        return np.full(keypoints.shape[:-2], np.nan)[()]
    mouth = five[..., FIVE_POINT_MOUTH, :].mean(axis=-2)
    return roll_from_eyes(five[..., FIVE_POINT_EYES[0], :], five[..., FIVE_POINT_EYES[1], :], mouth)


def upright_landmark_box(keypoints, roll):
    """The box of landmarks seen upright: centred on them, sized as they are once turned by ``-roll``.

    The box :func:`face_crop` takes with that ``roll``, in pixel-corner units
    (the extent of the pixel-centre points, :func:`fpezoo.data.records.landmark_box`,
    moved by half a pixel).
    """
    keypoints = np.asarray(keypoints, dtype="float64")
    centre = (keypoints.min(axis=0) + keypoints.max(axis=0)) / 2
    x_min, y_min, x_max, y_max = landmark_box(transform_points(keypoints, rotation_transform(-roll, centre)))
    middle = transform_points(((x_min + x_max) / 2, (y_min + y_max) / 2), rotation_transform(roll, centre)) + 0.5
    half_w, half_h = (x_max - x_min) / 2, (y_max - y_min) / 2
    return (middle[0] - half_w, middle[1] - half_h, middle[0] + half_w, middle[1] + half_h)


@dataclasses.dataclass
class CropPrediction:
    """The landmarks of one face box, in its image's pixels.

    Attributes:
        keypoints: ``(K, 2)`` float64.
        confidence: ``(K,)`` float32.
        roll: degrees the crop that gave them was turned by.
        depth: ``(K,)`` float64 depth of a 3D model's points in image pixels
            (larger nearer the camera, offset arbitrary), else None.
        model_runs: crops of this face run through the model: 2 when the
            upright pass ran (whichever result was kept), 8 with the roll
            search (fewer for a face whose landmarks are not finite), else 1.
    """

    keypoints: np.ndarray
    confidence: np.ndarray
    roll: float
    depth: Optional[np.ndarray] = None
    model_runs: int = 1


def predict_boxes(runner, images, boxes, rolls=None, enlarge=None, image_color="rgb", batch_size=16,
                  flip_test=False, upright_pass=False, roll_search=False):
    """Crop -> run -> invert: the landmarks of face boxes, in their images' pixels.

    Args:
        runner: a runner of :func:`load_runner`.
        images: the images, each ``(H, W, C)`` or ``(H, W)`` in ``image_color``.
        boxes: one ``(image index, box)`` pair per face; the box is the face's
            landmark box in its upright frame (see :func:`face_crop`).
        rolls: one roll in degrees per face (None: all 0).
        enlarge: crop side over the box's longer side, one for all boxes or
            one per box (None: the model's framing, else :data:`DEFAULT_ENLARGE`).
        image_color: colour order of ``images``.
        batch_size: largest batch of crops run at once.
        flip_test: see :func:`run_batches`.
        upright_pass: faces whose landmarks show a roll more than
            :data:`UPRIGHT_PASS_MIN_DEGREES` away from their crop's are cropped
            again around their landmarks, turned upright by that roll, and run
            again; the second prediction is kept when its mean confidence is
            at least the first's. It corrects crops of turned faces that no
            detector keypoints set upright (given boxes, ``fpezoo evaluate
            --rotation``), for one more model run of those faces only.
        roll_search: for faces whose roll nothing gives (boxes alone, at any
            in-plane angle): each crop is run turned by
            :data:`ROLL_SEARCH_TURNS` on top of its roll, each of the four
            predictions is cropped again upright by its landmarks' roll and
            run, and the re-crop kept is the one with the highest mean
            confidence times ``exp(-|its landmarks' roll - its crop's roll| /``
            :data:`ROLL_SEARCH_CONSISTENCY_DEGREES` ``)``. Eight model runs per
            face; replaces ``upright_pass``. A model sees a face turned by 90
            degrees or more far worse than upright (``fpenet68_w32``: 6.2 %
            instead of 3.5 % on near-frontal AFLW2000-3D faces), so a single
            crop of a face at an unknown angle is often wrong.

    Returns:
        A list of :class:`CropPrediction`, one per box.
    """
    if enlarge is None:
        enlarge = runner.spec.enlarge if runner.spec.enlarge is not None else DEFAULT_ENLARGE
    enlarges = [float(enlarge)] * len(boxes) if np.ndim(enlarge) == 0 else [float(value) for value in enlarge]
    rolls = [0.0] * len(boxes) if rolls is None else [float(roll) for roll in rolls]
    if len(rolls) != len(boxes) or len(enlarges) != len(boxes):
        raise ValueError(
            "`rolls` and a list of `enlarge` need one value per box. "
            f"Received: len(rolls)={len(rolls)}, len(enlarge)={len(enlarges)}, len(boxes)={len(boxes)}")

    def crop_and_run(faces, face_rolls, face_enlarges):
        crops, transforms = [], []
        for (index, box), roll, face_enlarge in zip(faces, face_rolls, face_enlarges):
            crop, transform = face_crop(images[index], box, runner.spec.input_size, face_enlarge, roll,
                                        image_color, runner.spec.input_color)
            crops.append(crop)
            transforms.append(transform)
        keypoints, confidence = run_batches(runner, crops, batch_size, flip_test)
        return [CropPrediction(invert_points(points[:, :2], transform), scores, roll,
                               points[:, 2] / transform_scale(transform) if points.shape[1] > 2 else None)
                for points, scores, roll, transform in zip(keypoints, confidence, face_rolls, transforms)]

    if roll_search and runner.spec.scheme is not None and boxes:
        return _roll_searched(crop_and_run, runner.spec.scheme, boxes, rolls, enlarges)
    predictions = crop_and_run(boxes, rolls, enlarges)
    if not upright_pass or runner.spec.scheme is None or not predictions:
        return predictions
    found = landmark_roll(np.stack([p.keypoints for p in predictions]), runner.spec.scheme)
    off = angle_difference(found, np.asarray(rolls))
    again = [i for i in np.flatnonzero(np.abs(off) > UPRIGHT_PASS_MIN_DEGREES)
             if np.isfinite(predictions[i].keypoints).all()]
    if not again:
        return predictions
    second = crop_and_run([(boxes[i][0], upright_landmark_box(predictions[i].keypoints, found[i])) for i in again],
                          [float(found[i]) for i in again], [enlarges[i] for i in again])
    for i, prediction in zip(again, second):
        kept = prediction if prediction.confidence.mean() >= predictions[i].confidence.mean() else predictions[i]
        predictions[i] = dataclasses.replace(kept, model_runs=2)
    return predictions


def _roll_searched(crop_and_run, scheme, boxes, rolls, enlarges):
    """The roll search of :func:`predict_boxes` (see there)."""
    turned = [crop_and_run(boxes, [roll + turn for roll in rolls], enlarges) for turn in ROLL_SEARCH_TURNS]
    found = landmark_roll(np.stack([[p.keypoints for p in predictions] for predictions in turned]), scheme)
    candidates = [(face, turn) for face in range(len(boxes)) for turn in range(len(turned))
                  if np.isfinite(found[turn, face]) and np.isfinite(turned[turn][face].keypoints).all()]
    recropped = crop_and_run(
        [(boxes[face][0], upright_landmark_box(turned[turn][face].keypoints, found[turn, face]))
         for face, turn in candidates],
        [float(found[turn, face]) for face, turn in candidates], [enlarges[face] for face, _ in candidates])
    scores = np.zeros(0)
    if recropped:
        drift = np.abs(angle_difference(landmark_roll(np.stack([p.keypoints for p in recropped]), scheme),
                                        np.array([p.roll for p in recropped])))
        scores = np.array([p.confidence.mean() for p in recropped]) * np.exp(-drift / ROLL_SEARCH_CONSISTENCY_DEGREES)
    best = {}
    for (face, _), prediction, score in zip(candidates, recropped, scores):
        if np.isfinite(score) and (face not in best or score > best[face][0]):
            best[face] = (score, prediction)
    runs = len(turned) + np.bincount([face for face, _ in candidates], minlength=len(boxes))
    return [dataclasses.replace(best[face][1] if face in best else turned[0][face], model_runs=int(runs[face]))
            for face in range(len(boxes))]
