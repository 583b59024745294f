"""Triton Inference Server model repositories.

``fpezoo convert MODEL --to triton --output model_repository`` writes::

    model_repository/
      <name>/
        config.pbtxt
        1/model.onnx        (--triton-backend onnx: onnxruntime, the default)
        1/model.plan        (--triton-backend tensorrt: a TensorRT engine)

``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``) names the
input ``images`` and the outputs ``keypoints`` and ``confidence`` with their data
types and dims as read from the ONNX export. With a dynamic batch axis the dims
leave the batch out, ``max_batch_size`` bounds it, and ``dynamic_batching``
groups concurrent requests; with a fixed batch, ``max_batch_size`` is 0 and the
dims include it.

:func:`read_config` parses the subset of the text format these files use, so a
repository can be checked against the model it serves.

The ``tensorrt`` backend is **not yet run on a GPU** (see
:mod:`fpezoo.deploy.tensorrt`).
"""

import os
import re

# ONNX TensorProto element type -> Triton data type.
ONNX_TO_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 2: "TYPE_UINT8",
                        3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}
PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "tensorrt": "model.plan"}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_model_name(name):
    """Checks that ``name`` can be a Triton model folder name."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or name in (".", ".."):
        raise ValueError(
            "A Triton model name must be letters, digits, '_', '-' or '.'. "
            f"Received: model_name={name!r}"
        )
    return name


def tensor_configs(onnx_model):
    """``(inputs, outputs)``: lists of ``{"name", "data_type", "dims"}`` of an
    ONNX graph, dims with -1 for dynamic axes (batch included)."""
    def describe(value):
        tensor_type = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
        return {"name": value.name, "data_type": ONNX_TO_TRITON_TYPES[tensor_type.elem_type],
                "dims": dims}

    graph = onnx_model.graph
    return [describe(v) for v in graph.input], [describe(v) for v in graph.output]


def config_text(onnx_model, name, backend="onnx", max_batch_size=64):
    """The ``config.pbtxt`` text for an ONNX export served by ``backend``.

    Args:
        onnx_model: the exported ``onnx.ModelProto`` (for a plan: the ONNX file
            the engine was built from).
        name: the model name (its folder in the repository).
        backend: ``"onnx"`` or ``"tensorrt"``.
        max_batch_size: largest batch (0: the batch axis is fixed and part of the
            dims; then no dynamic batching).

    Returns:
        The text.
    """
    check_model_name(name)
    inputs, outputs = tensor_configs(onnx_model)
    lines = [f'name: "{name}"', f'platform: "{PLATFORMS[backend]}"',
             f"max_batch_size: {max_batch_size}"]
    for section, tensors in (("input", inputs), ("output", outputs)):
        entries = []
        for tensor in tensors:
            dims = tensor["dims"]
            if max_batch_size:
                if dims[0] != -1:
                    raise ValueError(
                        "Dynamic batching needs a dynamic batch axis; export with batch_size=None "
                        f"or pass max_batch_size=0. Received: {tensor['name']} dims={dims}"
                    )
                dims = dims[1:]
            entries.append(
                f'  {{\n    name: "{tensor["name"]}"\n    data_type: {tensor["data_type"]}\n'
                f"    dims: [ {', '.join(map(str, dims))} ]\n  }}"
            )
        lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
    if max_batch_size:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def write_config(path, onnx_path, name, backend="onnx", max_batch_size=64):
    """Writes ``config.pbtxt`` for the ONNX file ``onnx_path`` (see :func:`config_text`)."""
    import onnx

    text = config_text(onnx.load(os.fspath(onnx_path)), name, backend, max_batch_size)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def read_config(path):
    """Parses a ``config.pbtxt`` into nested dicts and lists.

    Handles the protobuf text format that Triton configs use: ``key: value``,
    ``key { ... }``, ``key [ {...}, {...} ]``, lists of scalars and comments.
    Repeated keys become lists. Numbers become ints or floats, quoted strings
    strings, and enum names (``TYPE_FP32``) strings.
    """
    with open(path, encoding="utf-8") as file:
        tokens = _tokens(file.read())
    message = _parse_message(tokens, closing=None)
    return message


def _tokens(text):
    tokens = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise ValueError(f"Cannot parse config text near {text[position:position + 20]!r}. "
                             f"Received: position={position}")
        position = match.end()
        comment, string, punctuation, word = match.groups()
        if comment:
            continue
        tokens.append(("string", string[1:-1]) if string else (punctuation or word, None))
    tokens.reverse()
    return tokens


def _parse_message(tokens, closing):
    message = {}
    while tokens:
        key, _ = tokens.pop()
        if key == closing:
            return message
        token, _ = tokens[-1]
        if token == ":":
            tokens.pop()
            token, _ = tokens[-1]
        if token == "{":
            tokens.pop()
            value = _parse_message(tokens, "}")
        elif token == "[":
            tokens.pop()
            value = _parse_list(tokens)
        else:
            value = _scalar(*tokens.pop())
        if key in message:
            existing = message[key]
            message[key] = (existing if isinstance(existing, list) else [existing]) + (
                value if isinstance(value, list) else [value])
        else:
            message[key] = value
    if closing is not None:
        raise ValueError(f"Unbalanced braces in the config. Received: missing={closing!r}")
    return message


def _parse_list(tokens):
    values = []
    while tokens:
        token, text = tokens.pop()
        if token == "]":
            return values
        if token == ",":
            continue
        values.append(_parse_message(tokens, "}") if token == "{" else _scalar(token, text))
    raise ValueError("Unbalanced brackets in the config. Received: missing=']'")


def _scalar(token, text):
    if token == "string":
        return text
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token
