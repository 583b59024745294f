"""The weights registry: named, checksummed weights with model cards.

Registered weights live in the top-level ``weights/`` folder of the repository,
installed by ``setup.py`` as the package ``fpezoo._weights``. They are found, in
this order, in ``$FPEZOO_WEIGHTS_DIR`` (when set), in the installed
``fpezoo._weights`` package, and in ``<repo>/weights`` of a source checkout.

``weights/registry.json`` maps each name to an entry::

    {
      "fpenet_68_w16": {
        "file": "fpenet_68_w16.weights.h5",       # in the weights folder
        "sha256": "<hex digest of that file>",
        "builder": "FPENet",                        # fpezoo.<name> or "module.attr"
        "config": {"num_keypoints": 68, "width": 16},  # builder keyword arguments
        "card": "fpenet_68_w16.md",                 # model card (training data, terms, scores)
        "scheme": "ibug68"                          # keypoint scheme, see fpezoo.schemes
      }
    }

Weights files are Keras ``.weights.h5`` files (``model.save_weights``). They are
matched to a model layer by layer name, so weights trained for another keypoint
count load into every layer but the keypoint head (``keypoint_head`` and the
``keypoint_head_*`` layers of families with several), which starts fresh (with a
warning that names the layers).

A name may pin the weights it means by a prefix (8 or more hex digits) of their
sha256: ``"fpenet68_w32@sha256:0199d41e"``. Recipes that start from registered
weights pin them, so that after the name is given new weights the recipe fails
with a clear error (saying where to find the pinned ones) instead of silently
starting from other weights.

Command line: ``fpezoo card NAME`` prints the model card of registered weights;
``fpezoo card`` lists the registered names.
"""

import hashlib
import importlib
import json
import os
import pathlib
import sys
import warnings

import h5py

from fpezoo.models.common import KEYPOINT_HEAD

REGISTRY_FILE = "registry.json"
WEIGHTS_SUFFIX = ".weights.h5"
ENTRY_KEYS = ("file", "sha256", "builder", "config", "card", "scheme")
PIN_MARK = "@sha256:"
MIN_PIN_DIGITS = 8


def weights_dir():
    """The folder holding ``registry.json`` and the registered weights files."""
    override = os.environ.get("FPEZOO_WEIGHTS_DIR")
    if override:
        return pathlib.Path(override)
    try:
        package = importlib.import_module("fpezoo._weights")
        return pathlib.Path(package.__file__).parent
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parents[1] / "weights"


def registry():
    """The registry: ``{name: entry}`` (see the module docstring)."""
    path = weights_dir() / REGISTRY_FILE
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as file:
        entries = json.load(file)
    for name, entry in entries.items():
        missing = [key for key in ENTRY_KEYS if key not in entry]
        if missing:
            raise ValueError(
                f"Registry entry {name!r} in {path} lacks {missing}. Received: entry={entry!r}"
            )
    return entries


def split_pin(name):
    """Splits a pinned name ``"NAME@sha256:HEX"`` into ``(NAME, HEX)``.

    Args:
        name: a registered name, pinned or not.

    Returns:
        ``(NAME, HEX)``, or ``(name, None)`` for a name without a pin.

    Raises:
        ValueError: the pin is not 8 to 64 lowercase hex digits.
    """
    base, mark, pin = name.partition(PIN_MARK)
    if not mark:
        return name, None
    if not MIN_PIN_DIGITS <= len(pin) <= 64 or pin.strip("0123456789abcdef"):
        raise ValueError(
            f"A pinned weights name is NAME{PIN_MARK}HEX, HEX being {MIN_PIN_DIGITS} to 64 "
            f"lowercase hex digits that start the sha256 of the weights file. Received: weights={name!r}"
        )
    return base, pin


def registry_entry(name):
    """The registry entry of ``name``, checked against the name's pin if it has one.

    Args:
        name: a registered name, or a pinned one (``"NAME@sha256:HEX"``).

    Returns:
        The entry (see the module docstring).

    Raises:
        ValueError: unknown name (the error lists the known names), malformed
            pin, or weights registered under the name whose sha256 does not
            start with the pin (the error says how to find the pinned ones).
    """
    base, pin = split_pin(name)
    entries = registry()
    if base not in entries:
        known = ", ".join(sorted(entries)) or "none registered yet"
        raise ValueError(
            f"Unknown weights name {base!r}. Known names: {known}; or pass a path to a "
            f"'{WEIGHTS_SUFFIX}' file. Received: weights={name!r}"
        )
    entry = entries[base]
    if pin is not None and not entry["sha256"].startswith(pin):
        raise ValueError(
            f"The weights registered as {base!r} in {weights_dir()} have sha256 "
            f"{entry['sha256'][:12]}..., not the pinned {pin}...: the name was given new weights "
            "since the pin was written. Point $FPEZOO_WEIGHTS_DIR at a weights folder that holds "
            "the pinned ones; in a git checkout, `git log --reverse --format=%h -S "
            f"{pin} -- weights/registry.json` names the commit that registered them first, and "
            "`git archive COMMIT weights | tar -x -C DIR` writes its weights folder to "
            f"DIR/weights. Received: weights={name!r}"
        )
    return entry


def sha256(path):
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(weights):
    """Turns a registered name or a path into the path of a checked weights file.

    Args:
        weights: a registered name, or a path to a ``.weights.h5`` file.

    Returns:
        The file path. For a registered name the file's sha256 matches the
        registry.

    Raises:
        ValueError: unknown name, wrong suffix or checksum mismatch.
        FileNotFoundError: the file does not exist.
    """
    text = os.fspath(weights)
    if text.endswith(".h5") or os.sep in text or "/" in text:
        path = pathlib.Path(text)
        if not text.endswith(WEIGHTS_SUFFIX):
            raise ValueError(
                f"Weights files must be Keras '{WEIGHTS_SUFFIX}' files (model.save_weights). "
                f"Received: weights={text!r}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"Weights file not found. Received: weights={text!r}")
        return path
    entry = registry_entry(text)
    path = weights_dir() / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(
            f"The file of registered weights {text!r} is missing from {path.parent} "
            f"(expected {entry['file']}). Received: weights={text!r}"
        )
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"Checksum mismatch for registered weights {text!r}: {path} has sha256 {digest}, "
            f"the registry expects {entry['sha256']} (the file is corrupt or was replaced). "
            f"Received: weights={text!r}"
        )
    return path


def read_layer_weights(path):
    """Reads a Keras ``.weights.h5`` file, indexed by layer name.

    Returns:
        ``(flat, nested)``: ``flat`` maps the name of each layer without
        sub-layers to its arrays (in ``layer.weights`` order); ``nested`` lists
        the names of layers with sub-layers, whose arrays cannot be matched by
        name alone (such models load with Keras's own loader).

    Raises:
        ValueError: the file is not a readable Keras weights file (truncated or
            corrupt).
    """
    try:
        with h5py.File(path, "r") as file:
            if "layers" not in file:
                raise ValueError(
                    f"{path} is not a Keras weights file (no 'layers' group). "
                    f"Received: weights={os.fspath(path)!r}"
                )
            flat, nested = {}, []
            for key, group in file["layers"].items():
                variables = group.get("vars")
                name = variables.attrs.get("name", key) if variables is not None else key
                if isinstance(name, bytes):
                    name = name.decode()
                if any(child != "vars" for child in group):
                    nested.append(name)
                    continue
                if variables is not None and len(variables):
                    flat[name] = [variables[str(i)][()] for i in range(len(variables))]
            return flat, nested
    except (OSError, KeyError, RuntimeError) as error:
        raise ValueError(
            f"Cannot read weights from {path}: the file is truncated or corrupt ({error}). "
            f"Received: weights={os.fspath(path)!r}"
        ) from None


def load_weights(model, weights):
    """Loads a registered name or a ``.weights.h5`` file into ``model``.

    Layers are matched by name. When only keypoint-head layers (``keypoint_head``
    and layers named ``keypoint_head_*``, whose shapes depend on the keypoint
    count) differ, as for weights trained for another scheme, every other layer
    loads and a warning names the layers that start fresh.

    Args:
        model: a Keras model (e.g. built by :func:`fpezoo.FPENet`).
        weights: a registered name (sha256-checked) or a path.

    Returns:
        The names of the layers that start fresh (empty when all loaded).

    Raises:
        ValueError: unknown name, checksum mismatch, corrupt file, or weights of
            another model (naming the first mismatching layer).
        FileNotFoundError: the file does not exist.
    """
    path = resolve_weights(weights)
    file_layers, nested = read_layer_weights(path)
    model_layers = [layer for layer in model.layers if layer.weights]
    fresh = []
    for layer in model_layers:
        if layer.name in nested:
            continue
        problem = _mismatch(layer, file_layers.get(layer.name))
        if problem is None:
            continue
        if _is_keypoint_head(layer.name) and len(layer.weights) == len(file_layers.get(layer.name, ())):
            fresh.append(layer.name)
            continue
        raise ValueError(
            f"The weights in {path} belong to another model: the first mismatching layer is "
            f"{layer.name!r} ({problem}). Received: weights={os.fspath(weights)!r}"
        )
    model_names = {layer.name for layer in model_layers}
    extra = [name for name in list(file_layers) + nested if name not in model_names]
    if extra:
        raise ValueError(
            f"The weights in {path} belong to another model: the file has layer {extra[0]!r}, "
            f"which this model lacks. Received: weights={os.fspath(weights)!r}"
        )
    if nested:
        if fresh:
            raise ValueError(
                f"Partial loading needs layers without sub-layers; {nested} have some. "
                f"Received: weights={os.fspath(weights)!r}"
            )
        model.load_weights(path)
        return fresh
    for layer in model_layers:
        if layer.name not in fresh:
            layer.set_weights(file_layers[layer.name])
    if fresh:
        warnings.warn(
            f"Weights {os.fspath(weights)!r} were trained for another keypoint count: loaded "
            f"every layer except {fresh}, which start(s) fresh (random initialisation).",
            stacklevel=2,
        )
    return fresh


def _mismatch(layer, arrays):
    if arrays is None:
        return "absent from the file"
    expected = [tuple(weight.shape) for weight in layer.weights]
    found = [tuple(array.shape) for array in arrays]
    if expected != found:
        return f"model expects shapes {expected}, the file has {found}"
    return None


def _is_keypoint_head(layer_name):
    """Whether a layer's shapes depend on the keypoint count (see ``KEYPOINT_HEAD``)."""
    return layer_name == KEYPOINT_HEAD or layer_name.startswith(KEYPOINT_HEAD + "_")


def model_card(name):
    """The model card (Markdown text) of registered weights ``name``."""
    entry = registry_entry(name)
    path = weights_dir() / entry["card"]
    if not path.is_file():
        raise FileNotFoundError(
            f"The model card of {name!r} is missing (expected {path}). Received: name={name!r}"
        )
    return path.read_text(encoding="utf-8")


def registered_builder(builder):
    """The model builder a registry entry (or a training config) names.

    Args:
        builder: the name of an ``fpezoo`` builder (``"FPENet"``,
            ``"RetailLandmarks5"``, ``"FAN"``), or ``"module.attribute"`` for a
            builder defined elsewhere.

    Returns:
        The builder: a callable taking ``weights=`` and the builder's keyword
        arguments, returning a Keras model.

    Raises:
        ValueError: the name does not resolve to a callable.
    """
    if not isinstance(builder, str) or not builder:
        raise ValueError(
            "A builder is the name of an fpezoo builder such as 'FPENet', 'RetailLandmarks5' or "
            f"'FAN', or 'module.attribute'. Received: builder={builder!r}"
        )
    module_name, _, attribute = builder.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name or "fpezoo"), attribute)
    except (ModuleNotFoundError, AttributeError) as error:
        raise ValueError(
            f"Unknown builder {builder!r} ({error}): use the name of an fpezoo builder such as "
            f"'FPENet', 'RetailLandmarks5' or 'FAN', or 'module.attribute'. Received: builder={builder!r}"
        ) from None
    if not callable(found):
        raise ValueError(f"The builder {builder!r} is not callable. Received: builder={builder!r}")
    return found


def build_registered(name, **overrides):
    """Builds the model that registered weights ``name`` describe, with them loaded.

    Args:
        name: a registered name.
        **overrides: builder arguments that replace the registered config (e.g.
            ``include_preprocessing=True``).

    Returns:
        The model returned by the entry's builder.
    """
    entry = registry_entry(name)
    config = {**entry["config"], **overrides}
    return registered_builder(entry["builder"])(weights=name, **config)


def configure_parser(parser):
    """Options of ``fpezoo card``."""
    parser.add_argument("name", nargs="?", help="registered weights name (omit to list them)")


def run(args):
    """``fpezoo card [NAME]``: print a model card, or list the registered names."""
    if args.name is None:
        entries = registry()
        if not entries:
            print(f"No weights registered in {weights_dir() / REGISTRY_FILE}.")
        for name, entry in sorted(entries.items()):
            print(f"{name}\t{entry['builder']}\t{entry['scheme']}\t{json.dumps(entry['config'])}")
        return 0
    try:
        card = model_card(args.name)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    entry = registry_entry(args.name)
    print(card.rstrip())
    print()
    print(f"file: {entry['file']}  sha256: {entry['sha256']}")
    print(f"builder: {entry['builder']}({json.dumps(entry['config'])})  scheme: {entry['scheme']}")
    return 0
