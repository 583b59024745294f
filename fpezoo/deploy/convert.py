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

import numpy as np

from fpezoo.data import readers
from fpezoo.deploy.export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    size_pair,
    export_litert,
    export_metadata,
    export_onnx,
    export_saved_model,
    export_signature,
    model_input_color,
)
from fpezoo.imageio import COLORS
from fpezoo.runtime import DEFAULT_ENLARGE, load_keras_model, registered_enlarge, registered_entry

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
DEFAULT_CALIBRATION_IMAGES = 256
DEFAULT_MAX_BATCH_SIZE = 64


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
            (:data:`fpezoo.data.readers.READERS`, e.g. ``"mtfl:../shared/data/mtfl/train.txt"``),
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
            predictor crops), else :data:`fpezoo.runtime.DEFAULT_ENLARGE`.

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
            f"(readers: {', '.join(readers.READERS)}). Received: calibration=None"
        )
    output = pathlib.Path(output)
    model = load_keras_model(source, builder=builder, builder_config=builder_config)
    spec = export_signature(model, batch_size=batch_size, input_size=input_size,
                            needs_fixed_size=to in ("litert", "tensorrt", "tftrt", "triton"))
    metadata = export_metadata(model, spec, input_color=input_color, **_source_identity(source, model))
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


def _source_identity(source, model):
    """The ``entry``, ``source_name`` and ``source_sha256`` of :func:`export_metadata` for a source.

    A registered name gives its entry; a file its name and its own sha256 (for
    an OpenVINO ``.xml``, that of its ``.bin``); a Keras model its name only.
    """
    from fpezoo.weights import sha256

    entry = registered_entry(source)
    if entry is not None:
        return {"entry": entry, "source_name": os.fspath(source)}
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        return {"source_name": path.name,
                "source_sha256": sha256(path.with_suffix(".bin") if path.suffix == ".xml" else path)}
    return {"source_name": model.name}


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
            ``"reader:path"`` with a reader of :data:`fpezoo.data.readers.READERS`: each
            record's face is cropped by its box with
            :func:`fpezoo.coordinates.crop_face`, enlarged by ``enlarge`` (or
            the whole image is resized when the record has no box: the loose
            crops of MTFL and AFLW).
        image_size: ``(height, width)`` of the model input.
        channels: 1 or 3.
        color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``: channel layout of the input.
        limit: use at most this many images (the first ones of the source).
        enlarge: crop side over the longer side of a record's box: the crop the
            model expects (None: :data:`fpezoo.runtime.DEFAULT_ENLARGE`).
    """

    def __init__(self, source, image_size, channels, color="grayscale",
                 limit=DEFAULT_CALIBRATION_IMAGES, enlarge=None):
        self.image_size = size_pair(image_size)
        if channels not in (1, 3):
            raise ValueError(f"Calibration crops have 1 or 3 channels. Received: channels={channels!r}")
        _check_choice(color, COLORS, "input_color")
        if (color == "grayscale") != (channels == 1):
            raise ValueError(
                f"{channels} channel(s) cannot hold {color!r} crops. Received: input_color={color!r}"
            )
        _check_positive_int(limit, "num_calibration_images")
        if enlarge is None:
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
    if separator and reader in readers.READERS:
        records = readers.READERS[reader](reader_path)
        items = [(record.image, record.box) for record in records]
    elif os.path.isdir(text):
        files = sorted(path for path in pathlib.Path(text).iterdir()
                       if path.suffix.lower() in IMAGE_SUFFIXES)
        items = [(path, None) for path in files]
    elif separator and len(reader) > 1:
        raise ValueError(
            f"Unknown calibration reader {reader!r}; use a folder of images or one of "
            f"{', '.join(f'{name}:PATH' for name in readers.READERS)}. Received: calibration={text!r}"
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
                             f"in {', '.join(readers.READERS)}")
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
    parser.add_argument("--input-color", choices=COLORS,
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
