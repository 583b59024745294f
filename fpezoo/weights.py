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

Registered weights carry their architecture: a builder given a registered
``weights=`` name takes the entry's ``config`` for every argument the caller did
not pass, so ``fpezoo.FPENet(weights="fpenet68_w32")`` builds width 32 with 40x40
heatmaps. A passed argument that contradicts the entry fails before building,
except the keypoint count and the input arguments (:data:`FREE_ARGUMENTS`).
:func:`list_pretrained` lists the names with their builder, config, scheme and
crop.

Weights files are Keras ``.weights.h5`` files (``model.save_weights``). A file
loaded by path can be checked with ``sha256=`` (its full hex digest); files that
HDF5 cannot read, or that hold NaN or infinite values, fail with an error naming
the file. They are matched to a model layer by layer name, so weights trained
for another keypoint count load into every layer but the keypoint head
(``keypoint_head`` and the ``keypoint_head_*`` layers of families with several),
which starts fresh (with a warning that names the layers).

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
import numpy as np

REGISTRY_FILE = "registry.json"
WEIGHTS_SUFFIX = ".weights.h5"
ENTRY_KEYS = ("file", "sha256", "builder", "config", "card", "scheme")
PIN_MARK = "@sha256:"
MIN_PIN_DIGITS = 8
# Name of the layer that predicts one channel (or value pair) per keypoint in
# every model family. It, and any other layer whose shapes depend on the keypoint
# count (named "keypoint_head_<something>", e.g. FAN's intermediate heads), start
# fresh when weights trained for another keypoint count are loaded.
KEYPOINT_HEAD = "keypoint_head"
# Builder arguments that may differ from a registered config: the keypoint count
# (the keypoint head starts fresh) and the arguments that change how the model
# is called, not its weights.
FREE_ARGUMENTS = ("num_keypoints", "input_shape", "input_tensor", "include_preprocessing",
                  "input_color", "name")


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


def is_registered_name(weights):
    """Whether a ``weights`` argument is a registered name (maybe pinned) rather than a path.

    Args:
        weights: a ``weights`` argument of a builder: None, a name or a path.

    Returns:
        True for a string or path-like object that does not look like a file
        path (no ``.h5`` suffix, no folder separator).
    """
    if not isinstance(weights, (str, os.PathLike)):
        return False
    text = os.fspath(weights)
    return not (text.endswith(".h5") or os.sep in text or "/" in text)


def resolve_weights(weights, sha256=None):
    """Turns a registered name or a path into the path of a checked weights file.

    Args:
        weights: a registered name, or a path to a ``.weights.h5`` file.
        sha256: optional hex SHA-256 digest (64 digits) the file must have; a
            registered name is checked against the registry in any case.

    Returns:
        The file path.

    Raises:
        ValueError: unknown name, wrong suffix, malformed ``sha256`` or checksum
            mismatch.
        FileNotFoundError: the file does not exist.
    """
    text = os.fspath(weights)
    if is_registered_name(text):
        entry = registry_entry(text)
        path = weights_dir() / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(
                f"The file of registered weights {text!r} is missing from {path.parent} "
                f"(expected {entry['file']}). Received: weights={text!r}"
            )
        _check_digest(path, entry["sha256"], f"registered weights {text!r}", "the registry expects",
                      f"weights={text!r}")
    else:
        path = pathlib.Path(text)
        if not text.endswith(WEIGHTS_SUFFIX):
            raise ValueError(
                f"Weights files must be Keras '{WEIGHTS_SUFFIX}' files (model.save_weights). "
                f"Received: weights={text!r}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"Weights file not found. Received: weights={text!r}")
    if sha256 is not None:
        _check_digest(path, _expected_digest(sha256), "the weights file", "not the expected",
                      f"sha256={sha256!r}")
    return path


def _expected_digest(sha256):
    """The ``sha256`` argument as 64 lowercase hex digits."""
    digest = sha256.lower() if isinstance(sha256, str) else ""
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError(
            "`sha256` must be the 64 hex digits of the weights file's SHA-256 digest "
            f"(e.g. from `sha256sum`). Received: sha256={sha256!r}"
        )
    return digest


def _check_digest(path, expected, what, expectation, received):
    """Raises a checksum-mismatch error naming ``what`` when ``path``'s sha256 is not ``expected``."""
    digest = sha256(path)
    if digest != expected:
        raise ValueError(
            f"Checksum mismatch for {what}: {path} has sha256 {digest}, {expectation} {expected} "
            f"(the file is damaged or was replaced). Received: {received}"
        )


def read_layer_weights(path):
    """Reads a Keras ``.weights.h5`` file, indexed by layer name.

    Returns:
        ``(flat, nested)``: ``flat`` maps the name of each layer without
        sub-layers to its arrays (in ``layer.weights`` order); ``nested`` lists
        the names of layers with sub-layers, whose arrays cannot be matched by
        name alone (such models load with Keras's own loader).

    Raises:
        ValueError: the file is not a readable Keras weights file (truncated or
            corrupt: HDF5 cannot read it), or holds NaN or infinite values.
    """
    received = f"Received: weights={os.fspath(path)!r}"
    flat, nested = {}, []
    try:
        with h5py.File(path, "r") as file:
            layers = file.get("layers")
            if layers is None:
                raise ValueError(f"{path} is not a Keras weights file (no 'layers' group). {received}")
            for key, group in layers.items():
                if not isinstance(group, h5py.Group):
                    raise OSError(f"layer {key!r} is not an HDF5 group")
                variables = group.get("vars")
                name = variables.attrs.get("name", key) if variables is not None else key
                if isinstance(name, bytes):
                    name = name.decode()
                if any(child != "vars" for child in group):
                    nested.append(name)
                    continue
                if variables is not None and len(variables):
                    flat[name] = [variables[str(i)][()] for i in range(len(variables))]
    except (OSError, KeyError, RuntimeError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Cannot read weights from {path}: the file is truncated or corrupt ({error}). {received}"
        ) from None
    for name, arrays in flat.items():
        if not all(np.isfinite(array).all() for array in arrays if np.issubdtype(array.dtype, np.number)):
            raise ValueError(
                f"The weights in {path} hold NaN or infinite values (layer {name!r}): the file is "
                f"damaged, or was saved from a diverged training run. {received}"
            )
    return flat, nested


def load_weights(model, weights, sha256=None):
    """Loads a registered name or a ``.weights.h5`` file into ``model``.

    Layers are matched by name. When only keypoint-head layers (``keypoint_head``
    and layers named ``keypoint_head_*``, whose shapes depend on the keypoint
    count) differ, as for weights trained for another scheme, every other layer
    loads and a warning names the layers that start fresh.

    Args:
        model: a Keras model (e.g. built by :func:`fpezoo.FPENet`).
        weights: a registered name (sha256-checked) or a path.
        sha256: optional hex SHA-256 digest the file must have (see
            :func:`resolve_weights`).

    Returns:
        The names of the layers that start fresh (empty when all loaded).

    Raises:
        ValueError: unknown name, checksum mismatch, corrupt file or NaN/Inf
            values, or weights of another model (naming the first mismatching
            layer).
        FileNotFoundError: the file does not exist.
    """
    path = resolve_weights(weights, sha256)
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


def registered_arguments(builder, arguments):
    """Completes the arguments of a builder call with the registered config of its weights.

    Registered weights carry their architecture: every argument of the entry's
    ``config`` that the caller did not pass takes the registered value. A passed
    argument that contradicts the config fails, except :data:`FREE_ARGUMENTS`
    (another ``num_keypoints`` keeps the trunk and starts the keypoint head
    fresh, see :func:`load_weights`).

    Args:
        builder: the builder being called (as :func:`registered_builder`
            returns it).
        arguments: the arguments the caller passed, by name, ``weights`` among
            them.

    Returns:
        The arguments completed by the registered config; unchanged when
        ``weights`` is not a registered name (None or a path).

    Raises:
        ValueError: unknown name or malformed pin; weights registered for
            another builder; or passed arguments that contradict the registered
            config (the error ends with the registered values:
            ``Received: width=64; fpenet68_w32 is width=32``).
    """
    if not is_registered_name(arguments.get("weights")):
        return dict(arguments)
    name = os.fspath(arguments["weights"])
    entry = registry_entry(name)
    if registered_builder(entry["builder"]) is not builder:
        raise ValueError(
            f"The weights {name!r} are registered for the {entry['builder']!r} builder, not "
            f"{getattr(builder, '__name__', builder)!r}: build them with fpezoo.{entry['builder']}"
            f"(weights={name!r}) or fpezoo.weights.build_registered({name!r}). Received: weights={name!r}"
        )
    config = entry["config"]
    contradicting = [key for key, value in config.items()
                     if key in arguments and key not in FREE_ARGUMENTS and _as_json(arguments[key]) != value]
    if contradicting:
        passed = ", ".join(f"{key}={arguments[key]!r}" for key in contradicting)
        registered = ", ".join(f"{key}={config[key]!r}" for key in contradicting)
        raise ValueError(
            f"Registered weights carry their architecture: {name!r} fills in "
            f"{', '.join(contradicting)}, so leave {'it' if len(contradicting) == 1 else 'them'} out, or "
            f"pass weights=None or a '{WEIGHTS_SUFFIX}' path to build another architecture. "
            f"Received: {passed}; {name} is {registered}"
        )
    return {**config, **arguments}


def _as_json(value):
    """``value`` as it would read back from JSON (tuples become lists), to compare with the registry."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def build_registered(name, **overrides):
    """Builds the model that registered weights ``name`` describe, with them loaded.

    Args:
        name: a registered name (may be pinned, ``"NAME@sha256:HEX"``).
        **overrides: further builder arguments, e.g. ``include_preprocessing=True``
            or another ``num_keypoints``; arguments that contradict the
            registered architecture fail (see :func:`registered_arguments`).

    Returns:
        The model returned by the entry's builder.
    """
    builder = registered_builder(registry_entry(name)["builder"])
    return builder(**registered_arguments(builder, {**overrides, "weights": name}))


def list_pretrained(builder=None):
    """The registered weights names, with what each one builds.

    As keras-hub's ``list_presets`` and timm's ``list_pretrained``; ``fpezoo
    card`` prints the same list.

    Args:
        builder: only the names of this builder (e.g. ``"FPENet"``); None for
            every name.

    Returns:
        ``{name: {"builder": ..., "config": ..., "scheme": ..., "crop": ...}}``
        in name order: the builder and the arguments it takes from the name, the
        keypoint scheme, and the crop framing the weights expect (e.g.
        ``{"enlarge": 1.414}``; empty when the registry gives none).

    Example::

        for name in fpezoo.list_pretrained("FPENet"):
            model = fpezoo.FPENet(num_keypoints=80, weights=name)  # 68-point trunk, new head
    """
    return {
        name: {"builder": entry["builder"], "config": entry["config"], "scheme": entry["scheme"],
               "crop": entry.get("crop", {})}
        for name, entry in sorted(registry().items())
        if builder is None or entry["builder"] == builder
    }


def configure_parser(parser):
    """Options of ``fpezoo card``."""
    parser.add_argument("name", nargs="?", help="registered weights name (omit to list them)")


def run(args):
    """``fpezoo card [NAME]``: print a model card, or list the registered names."""
    if args.name is None:
        names = list_pretrained()
        if not names:
            print(f"No weights registered in {weights_dir() / REGISTRY_FILE}.")
        for name, info in names.items():
            print(f"{name}\t{info['builder']}\t{info['scheme']}\t{json.dumps(info['config'])}\t"
                  f"crop {json.dumps(info['crop'])}")
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
