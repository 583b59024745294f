"""The metadata ``fpezoo convert`` writes into ONNX and LiteRT files, and its reader.

An export runs like the model it came from only with that model's crop: its
keypoint scheme, its framing and the size and colour of the crops it takes.
``fpezoo convert`` records them, with the sha256 of the source weights, as one
JSON object under the key ``"fpezoo"``:

* ONNX: an entry of the model's ``metadata_props`` (shown by Netron, read by
  ``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``);
* LiteRT: a metadata entry of the ``.tflite`` flatbuffer (``Model.metadata``,
  beside the converter's ``min_runtime_version``), its data in a buffer of the
  model. ``ai_edge_litert``'s interpreter does not expose metadata, so it is
  read with the flatbuffer schema that ``ai_edge_litert`` ships.

Fields (:data:`FIELDS`): ``scheme`` (keypoint scheme name, or null when the
source is not registered), ``enlarge`` (crop side over the longer side of the
face's landmark box, the registered ``"crop"``; null: none recorded),
``input_size`` (``[height, width]`` of the crops), ``input_color``
(``"grayscale"``, ``"rgb"`` or ``"bgr"``), ``weights_sha256`` (of the source
weights file; null for an in-memory Keras model), ``source`` (the registered name
or file name converted) and ``fpezoo_version``.

:func:`exported_model_info` is the one place that turns a file's metadata and
input shape into what a runner needs; files without metadata (written before it
existed, or by other tools) fall back on their input shape.
"""

import dataclasses
import json
import numbers
import os
import pathlib
from typing import Optional

from fpezoo.imageio import COLORS

METADATA_KEY = "fpezoo"
FIELDS = ("scheme", "enlarge", "input_size", "input_color", "weights_sha256", "source", "fpezoo_version")
EXPORT_SUFFIXES = (".onnx", ".tflite")


@dataclasses.dataclass(frozen=True)
class ExportedModelInfo:
    """What a runner of an exported file needs to crop faces as its source model did.

    Attributes:
        input_size: ``(height, width)`` of the crops.
        input_color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``.
        scheme: keypoint scheme name, or None when the file does not say.
        enlarge: the recorded crop framing, or None (callers use their default).
        weights_sha256: sha256 of the source weights, or None.
    """

    input_size: tuple
    input_color: str
    scheme: Optional[str]
    enlarge: Optional[float]
    weights_sha256: Optional[str]


def encode(metadata):
    """The JSON text stored under :data:`METADATA_KEY`.

    Args:
        metadata: a dict with the keys of :data:`FIELDS`.

    Raises:
        ValueError: a key is missing or unknown.
    """
    if set(metadata) != set(FIELDS):
        raise ValueError(
            f"Export metadata has exactly the fields {FIELDS}. Received: metadata keys={sorted(metadata)}"
        )
    return json.dumps({key: metadata[key] for key in FIELDS}, sort_keys=False)


def add_onnx_metadata(onnx_model, metadata):
    """Stores ``metadata`` in ``onnx_model.metadata_props`` (replacing an earlier entry)."""
    for entry in list(onnx_model.metadata_props):
        if entry.key == METADATA_KEY:
            onnx_model.metadata_props.remove(entry)
    entry = onnx_model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = encode(metadata)


def add_litert_metadata(flatbuffer, metadata):
    """A copy of the ``.tflite`` flatbuffer with ``metadata`` in a metadata entry.

    Args:
        flatbuffer: the model's bytes.
        metadata: a dict with the keys of :data:`FIELDS`.

    Returns:
        The new model bytes.
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.metadata = [entry for entry in (model.metadata or []) if entry.name != METADATA_KEY.encode()]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(encode(metadata).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(model_file):
    """The metadata of an exported model: ``{}`` when it has none.

    Args:
        model_file: a ``.onnx`` or ``.tflite`` path, or the bytes of a LiteRT model.

    Returns:
        The dict written by ``fpezoo convert`` (keys of :data:`FIELDS`), or ``{}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not an ``.onnx`` or ``.tflite`` file, or metadata that is not
            a JSON object.
    """
    if isinstance(model_file, (bytes, bytearray)):
        return _decode(_litert_metadata(bytes(model_file), "<bytes>"), "<bytes>")
    path = pathlib.Path(model_file)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(f"Exported models are {EXPORT_SUFFIXES} files. Received: model_file={os.fspath(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"Exported model not found. Received: model_file={os.fspath(path)!r}")
    if suffix == ".tflite":
        return _decode(_litert_metadata(path.read_bytes(), path), path)
    import onnx

    props = {entry.key: entry.value for entry in onnx.load(os.fspath(path), load_external_data=False).metadata_props}
    return _decode(props.get(METADATA_KEY), path)


def exported_model_info(model_file, input_shape, input_color=None):
    """What a runner needs of an exported model: its metadata, checked against its input.

    Args:
        model_file: a ``.onnx`` or ``.tflite`` path, or the bytes of a LiteRT model.
        input_shape: the model's input shape ``(N, H, W, C)``; unknown
            dimensions are None or names (ONNX's ``"height"``).
        input_color: colour order of the crops; None: the recorded one, else
            grayscale for 1 channel and RGB for 3.

    Returns:
        An :class:`ExportedModelInfo`.

    Raises:
        ValueError: the crop size is neither recorded nor fixed by the input,
            the recorded size contradicts a fixed input, or the colour does not
            fit the input's channels.
    """
    metadata = read_metadata(model_file)
    name = "<bytes>" if isinstance(model_file, (bytes, bytearray)) else os.fspath(model_file)
    shape = tuple(input_shape)
    dims = [int(value) if isinstance(value, numbers.Integral) and value > 0 else None for value in shape[1:4]]
    if len(shape) != 4 or dims[2] is None:
        raise ValueError(
            "An exported landmark model takes crops (N, H, W, C) with a known channel count. "
            f"Received: input_shape={shape}, model_file={name!r}"
        )
    recorded = metadata.get("input_size")
    if recorded is not None:
        size = tuple(int(value) for value in recorded)
        if any(fixed is not None and fixed != wanted for fixed, wanted in zip(dims[:2], size)):
            raise ValueError(
                f"The recorded crop size {size} contradicts the model's input. "
                f"Received: input_shape={shape}, model_file={name!r}"
            )
    elif None in dims[:2]:
        raise ValueError(
            "This export takes crops of any size and records no crop size: re-export it with "
            f"`fpezoo convert`, which records it. Received: input_shape={shape}, model_file={name!r}"
        )
    else:
        size = tuple(dims[:2])
    color = input_color or metadata.get("input_color") or ("grayscale" if dims[2] == 1 else "rgb")
    if color not in COLORS or (color == "grayscale") != (dims[2] == 1):
        raise ValueError(
            f"`input_color` must be one of {COLORS} and fit the model's {dims[2]} input "
            f"channel(s). Received: input_color={color!r}, model_file={name!r}"
        )
    enlarge = metadata.get("enlarge")
    return ExportedModelInfo(input_size=size, input_color=color, scheme=metadata.get("scheme"),
                             enlarge=None if enlarge is None else float(enlarge),
                             weights_sha256=metadata.get("weights_sha256"))


def _litert_metadata(flatbuffer, where):
    """The text of the :data:`METADATA_KEY` entry of a ``.tflite`` flatbuffer, or None.

    Raises:
        ValueError: the bytes are not a LiteRT flatbuffer.
    """
    import struct

    from ai_edge_litert import schema_py_generated as schema

    if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":  # the file identifier of the LiteRT schema
        raise ValueError(f"Not a LiteRT (.tflite) model. Received: model_file={os.fspath(where)!r}")
    try:
        model = schema.Model.GetRootAs(flatbuffer, 0)
        for index in range(model.MetadataLength()):
            entry = model.Metadata(index)
            if entry.Name() == METADATA_KEY.encode():
                return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8")
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise ValueError(f"A damaged LiteRT model ({error}). Received: model_file={os.fspath(where)!r}") from None
    return None


def _decode(text, where):
    if text is None:
        return {}
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise ValueError(
            f"The {METADATA_KEY!r} metadata of an export must be a JSON object. "
            f"Received: metadata={text[:200]!r}, model_file={os.fspath(where)!r}"
        )
    return metadata
