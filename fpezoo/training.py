"""Training entry point: ``fpezoo.train(config)`` and ``fpezoo train CONFIG.json``.

A training run is described by one JSON-able config (see :data:`DEFAULTS` and
``configs/*.json``)::

    {
      "model": {"builder": "FPENet", "config": {"num_keypoints": 68, "width": 32},
                "weights": null, "freeze_batch_norms": false},
      "scheme": "ibug68",
      "data": {
        "sources": [
          {"reader": "aflw_crops", "path": "../shared/data/aflw-crops", "weight": 1.0},
          {"reader": "aflw_crops", "path": "../shared/data/aflw-crops",
           "options": {"teacher": true, "max_flip_disagreement": 0.05}, "weight": 1.0},
          {"reader": "mtfl", "path": "../shared/data/mtfl/train.txt",
           "drop_off_face_rows": true, "weight": 0.5}
        ],
        "validation_fraction": 0.05,
        "augment": true
      },
      "loss": {"name": "wing", "config": {"width": 10.0, "curvature": 2.0},
               "region_weights": {"eyes": 2.0, "mouth": 1.5}},
      "optimizer": {"name": "adamw", "config": {"weight_decay": 1e-4}},
      "schedule": {"name": "soft_start_annealing", "base_lr": 5e-4},
      "epochs": 60, "batch_size": 64,
      "output_dir": "runs/fpenet68_w32"
    }

``model``: ``builder`` names the builder (:func:`fpezoo.weights.registered_builder`:
an fpezoo builder such as ``"FPENet"``, or ``"module.attribute"``), ``config`` its
keyword arguments; ``weights`` the starting weights: None (random), a registered
name, a ``.weights.h5`` file (e.g. the ``best.weights.h5`` of an earlier stage), or,
for ``RetailLandmarks5``, the OpenVINO IR ``.xml`` of landmarks-regression-retail-0009
(its official weights, :func:`fpezoo.models.retail.import_openvino_retail`);
``grow_from`` instead starts from registered weights of a smaller model of the
same builder, copied into this one with its function preserved (Net2Net): a
narrower model is widened (:func:`fpezoo.models.widen.widen_weights`; e.g.
width-64 FPENet from the trained width 32), and an FPENet with 40x40 heatmaps
gains the last decoder block for this one's 80x80 heatmaps
(:func:`fpezoo.models.fpenet.copy_to_full_resolution_heatmaps`). A registered
name, here or in ``weights``, may pin a sha256 prefix of its file:
``"fpenet68_w32@sha256:0199d41e"`` (see :mod:`fpezoo.weights`);
``freeze_batch_norms`` keeps every ``BatchNormalization`` layer fixed
(``trainable=False``, which also runs it in inference mode), e.g. the imported
retail-0009 batch norms, which are folded affine maps with unit statistics.

Each source is read by a reader of :mod:`fpezoo.data.readers`, its labels are
converted to the training scheme with :func:`fpezoo.schemes.convert_keypoints`
(points the source lacks get visibility 0, so e.g. AFLW's 21 human points
supervise the matching subset of a 68-point model), and the sources are mixed
with their sampling weights. A validation split is carved out of the training
sources, by image (so no image is in both splits, even when two sources label
the same images), and chooses the best weights; benchmarks such as AFLW2000-3D
are refused as training or validation data.

What a run writes in ``output_dir`` (for a multi-worker run, the chief writes
there and worker ``i`` in ``output_dir/workers/worker<i>``):

* ``config.json``: the resolved config;
* ``backup/``: ``keras.callbacks.BackupAndRestore`` state; run the same config
  again after an interruption and training resumes after the last finished
  epoch (weights, optimizer state, learning-rate schedule, best score);
* ``logs/``: TensorBoard logs; ``history.csv``: one line per epoch;
* ``best.weights.h5`` (+ ``best.json`` with the epoch and score) chosen on the
  validation loss, and ``best.keras``, the full model with those weights;
* ``final.weights.h5`` and ``summary.json`` (epochs, steps, faces, time).

Heatmap training: a model whose keypoints come from an argmax (``FAN``) gets
no gradient through them, so it trains with the ``"adaptive_wing"`` loss
(:class:`fpezoo.losses.AdaptiveWingLoss`; ``loss.config`` takes its arguments
such as ``sigma``, while ``input_size``, the frame of the labels, is the
model's input size): ``fit`` runs on
:func:`fpezoo.models.fan.heatmap_training_model`, which shares the FAN's
layers, with one loss per stack on the same keypoint labels (``loss`` is their
sum; with several stacks, each stack's is logged as ``keypoint_head*_loss``)
and the NME metric on the decoded keypoints (logged as ``keypoints_nme_*``).
The returned model, ``best.keras`` and the weights files are the FAN's. A
keypoint loss (``l1``, ``l2``, ``wing``) with such a model, or
``adaptive_wing`` with a model without argmax-decoded heatmaps, is refused
before any data is read. (A 3D FAN's depth network gets no gradient from the
heatmaps.)

Depth training: the ``"depth_l1"`` loss (:class:`fpezoo.losses.DepthL1Loss`,
offset-free L1 on z) trains the depth network of a 3D model
(``FAN(dimensions=3)``) on top of its fixed 2D network, as face-alignment
trained its depth network: every layer outside the depth network
(:func:`fpezoo.models.fan.depth_network_layers`) is frozen (its batch norms run
in inference mode), and the pipeline makes ``(N, K, 4)`` targets = x, y,
visibility, z from each record's ``metadata["depth"]`` (the 3DDFA_V2 teacher
readers keep it), scaled with the augmentation
(:mod:`fpezoo.data.pipeline`). Start from the registered 2D FAN with
``model.grow_from`` (its layers are copied, the depth network starts fresh);
see ``configs/fan68_3d_1x128.json``.

Distribution: ``"distribution": {"strategy": "mirrored"}`` (optionally with
``"devices"``) or ``{"strategy": "multi_worker"}`` (cluster from ``TF_CONFIG``)
runs ``fit`` under ``tf.distribute``; ``batch_size`` is the global batch.
"""

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import pathlib
import sys
import time

import keras

from fpezoo import schemes
from fpezoo.data.readers import READERS
from fpezoo.data.records import in_validation_split
from fpezoo.schedules import get_schedule

DEFAULTS = {
    "model": {"builder": "FPENet", "config": {}, "weights": None, "grow_from": None,
              "freeze_batch_norms": False},
    "scheme": None,
    "data": {
        "sources": [],
        "validation_fraction": 0.05,
        "augment": True,
        "enlarge": 1.0,
        "jitter": 0.05,
        "input_shape": None,
        "color": None,
    },
    "loss": {"name": "wing", "config": {}, "region_weights": None},
    "optimizer": {"name": "adamw", "config": {}},
    "schedule": {"name": "soft_start_annealing"},
    "epochs": 10,
    "batch_size": 64,
    "steps_per_epoch": None,
    "validation_steps": None,
    "output_dir": None,
    "seed": 0,
    "verbose": "auto",
    "distribution": {"strategy": "default"},
}
TOP_LEVEL_KEYS = tuple(DEFAULTS)
MODEL_KEYS = ("builder", "config", "weights", "grow_from", "freeze_batch_norms")
SOURCE_KEYS = ("reader", "path", "options", "weight", "limit", "drop_off_face_rows", "box")
# Source `box` value that frames each face by the box of its points (see read_source).
LANDMARK_BOX = "landmarks"
# Reader name -> function of fpezoo.data.readers taking the path first.
# Benchmarks that must never be trained or validated on.
BENCHMARK_READERS = ("aflw2000_3d",)
LOSSES = {"l1": "L1Loss", "l2": "L2Loss", "wing": "WingLoss",
          "adaptive_wing": "AdaptiveWingLoss", "depth_l1": "DepthL1Loss"}
# Losses on the heatmaps of an argmax-decoded model (see check_loss_fits_model).
HEATMAP_LOSSES = ("adaptive_wing",)
# Losses on the depth of a 3D model, which train its depth network only.
DEPTH_LOSSES = ("depth_l1",)
OPTIMIZERS = {
    "adamw": keras.optimizers.AdamW,
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
}
STRATEGIES = ("default", "mirrored", "multi_worker")
# Config paths that start with this name the shared data folder (fpezoo.evaluation.data_dir).
DATA_ROOT_VARIABLE = "$FPEZOO_DATA"
# Reader options that are paths (resolved like a source's `path`), besides `.npz` files.
PATH_OPTIONS = ("image_root",)
# `model.weights` values that are files rather than registered names.
WEIGHTS_FILE_SUFFIXES = (".weights.h5", ".xml", ".keras")


# --------------------------------------------------------------------------- config
def _merged(base, override):
    """``base`` with ``override``'s keys: dicts merge key by key, except a dict that names its kind
    (``"name"``: the schedule, loss, optimizer), which replaces the base's whole (its other keys
    belong to that name)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict) and "name" not in value:
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _resolve_path(value, folder):
    """A config path: ``$FPEZOO_DATA/...`` in the shared data folder, else relative to ``folder``."""
    if value.startswith(DATA_ROOT_VARIABLE):
        from fpezoo.evaluation import data_dir

        return str(data_dir() / value[len(DATA_ROOT_VARIABLE):].lstrip("/"))
    path = pathlib.Path(value)
    return str(path if path.is_absolute() or folder is None else folder / path)


def _resolve_paths(config, folder):
    """The config with its file paths resolved (:func:`_resolve_path`); ``folder`` None keeps them."""
    config = copy.deepcopy(config)
    for source in config.get("data", {}).get("sources", []):
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = _resolve_path(source["path"], folder)
        options = source.get("options", {}) if isinstance(source, dict) else {}
        for key, value in options.items():
            if isinstance(value, str) and (key in PATH_OPTIONS or value.endswith(".npz")):
                options[key] = _resolve_path(value, folder)
    weights = config.get("model", {}).get("weights")
    if isinstance(weights, str) and weights.endswith(WEIGHTS_FILE_SUFFIXES):
        config["model"]["weights"] = _resolve_path(weights, folder)
    if isinstance(config.get("output_dir"), str):
        config["output_dir"] = _resolve_path(config["output_dir"], folder)
    return config


def load_config(path, _seen=()):
    """Reads a JSON training config, following ``extends`` and resolving its paths.

    A config may name a base config, ``"extends": "base.json"`` (relative to
    the config), and override its keys: dicts merge key by key, other values
    (lists such as ``data.sources``, and dicts with a ``"name"``: ``schedule``,
    ``loss``, ``optimizer``) replace the base's.
    Every path of a file (data ``path``, the ``image_root`` option and
    ``.npz`` options such as ``teacher``, a weights file, ``output_dir``) is
    relative to the file that names it, or starts with ``$FPEZOO_DATA/`` (the
    shared data folder, :func:`fpezoo.evaluation.data_dir`).

    Args:
        path: the JSON file.

    Returns:
        The merged config, with absolute or current-folder-relative paths.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Training config not found. Received: config={str(path)!r}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}). Received: config={str(path)!r}") from None
    if not isinstance(config, dict):
        raise TypeError(f"A training config file must hold a JSON object. Received: config={str(path)!r}")
    config = _resolve_paths(config, path.parent)
    base = config.pop("extends", None)
    if base is None:
        return config
    if not isinstance(base, str):
        raise ValueError(f"`extends` must be a config file path. Received: extends={base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ValueError(f"{path} extends itself through {base_path}. Received: extends={base!r}")
    return _merged(load_config(base_path, (*_seen, path.resolve())), config)


def resolve_config(config):
    """Validates a training config and fills in the defaults.

    Args:
        config: a dict (see the module docstring; its paths are taken as they
            are, except ``$FPEZOO_DATA/``) or a path to a JSON file
            (:func:`load_config`).

    Returns:
        A new dict with every key of :data:`DEFAULTS`.

    Raises:
        ValueError: unknown keys or bad values (the message names them).
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = _resolve_paths(config, None)
    if not isinstance(config, dict):
        raise TypeError(f"`config` must be a dict or a JSON file path. Received: config={config!r}")
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown training config key(s) {unknown}; known keys: {list(TOP_LEVEL_KEYS)}. "
            f"Received: config keys={sorted(config)}"
        )
    resolved = copy.deepcopy(DEFAULTS)
    for key, value in copy.deepcopy(config).items():
        if isinstance(resolved[key], dict) and isinstance(value, dict) and key != "schedule":
            resolved[key].update(value)
        else:
            resolved[key] = value
    for key in ("epochs", "batch_size"):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{key}` must be a positive integer. Received: {key}={value!r}")
    for key in ("steps_per_epoch", "validation_steps"):
        value = resolved[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{key}` must be None or a positive integer. Received: {key}={value!r}")
    fraction = resolved["data"]["validation_fraction"]
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"`data.validation_fraction` must be in [0, 1). Received: validation_fraction={fraction!r}"
        )
    _check_model(resolved["model"])
    for source in resolved["data"]["sources"]:
        _check_source(source)
    if resolved["loss"]["name"] not in LOSSES:
        raise ValueError(
            f"`loss.name` must be one of {sorted(LOSSES)}. Received: loss.name={resolved['loss']['name']!r}"
        )
    if resolved["loss"]["name"] in HEATMAP_LOSSES and "input_size" in resolved["loss"]["config"]:
        raise ValueError(
            "The heatmap loss's `input_size` is the model's input size, which training sets: "
            "remove it from loss.config. "
            f"Received: loss.config.input_size={resolved['loss']['config']['input_size']!r}"
        )
    if resolved["optimizer"]["name"] not in OPTIMIZERS:
        raise ValueError(
            f"`optimizer.name` must be one of {sorted(OPTIMIZERS)}. "
            f"Received: optimizer.name={resolved['optimizer']['name']!r}"
        )
    strategy = resolved["distribution"].get("strategy")
    if strategy not in STRATEGIES:
        raise ValueError(
            f"`distribution.strategy` must be one of {STRATEGIES}. Received: strategy={strategy!r}"
        )
    if resolved["output_dir"] is None:
        raise ValueError("`output_dir` is required. Received: output_dir=None")
    return resolved


def _check_model(model):
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown model key(s) {unknown}; known keys: {list(MODEL_KEYS)}. "
            f"Received: model keys={sorted(model)}"
        )
    from fpezoo.weights import registered_builder

    registered_builder(model["builder"])
    if not isinstance(model.get("config", {}), dict):
        raise ValueError(
            f"`model.config` must be a dict of builder arguments. Received: config={model['config']!r}"
        )
    weights = model.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ValueError(
            "`model.weights` must be None, a registered name or a file path. "
            f"Received: weights={weights!r}"
        )
    if weights is not None and weights.endswith(".xml") and model["builder"] != "RetailLandmarks5":
        raise ValueError(
            "An OpenVINO '.xml' holds landmarks-regression-retail-0009: it initialises the "
            f"'RetailLandmarks5' builder only. Received: builder={model['builder']!r}, "
            f"weights={weights!r}"
        )
    grow_from = model.get("grow_from")
    if grow_from is not None:
        from fpezoo.weights import registry_entry, split_pin

        if weights is not None:
            raise ValueError(
                "`model.grow_from` and `model.weights` both set the starting weights: give one. "
                f"Received: weights={weights!r}, grow_from={grow_from!r}"
            )
        # The builder, not the pin: a recipe stays valid after its pinned weights
        # are replaced; building its model then names the pinned weights.
        grown_builder = registry_entry(split_pin(grow_from)[0])["builder"]
        if grown_builder != model["builder"]:
            raise ValueError(
                f"`model.grow_from` must name weights of the {model['builder']!r} builder. "
                f"Received: grow_from={grow_from!r} (builder {grown_builder!r})"
            )
    freeze = model.get("freeze_batch_norms", False)
    if not isinstance(freeze, bool):
        raise ValueError(
            f"`model.freeze_batch_norms` must be true or false. Received: freeze_batch_norms={freeze!r}"
        )


def _check_source(source):
    if not isinstance(source, dict):
        raise ValueError(f"Each data source must be a dict. Received: source={source!r}")
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown data source key(s) {unknown}; known keys: {list(SOURCE_KEYS)}. "
            f"Received: source={source!r}"
        )
    reader = source.get("reader")
    if reader in BENCHMARK_READERS:
        raise ValueError(
            f"{reader!r} is a benchmark: never train or select checkpoints on it (the validation "
            f"split is carved out of the training sources). Received: reader={reader!r}"
        )
    trainable = sorted(set(READERS) - set(BENCHMARK_READERS))
    if reader not in trainable:
        raise ValueError(f"`reader` must be one of {trainable}. Received: reader={reader!r}")
    if "path" not in source:
        raise ValueError(f"A data source needs a `path`. Received: source={source!r}")
    weight = source.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ValueError(f"A source `weight` must be a positive number. Received: weight={weight!r}")
    box = source.get("box")
    if box is not None and box != LANDMARK_BOX and (
            not isinstance(box, (list, tuple)) or len(box) != 4
            or not box[2] > box[0] or not box[3] > box[1]):
        raise ValueError(
            "A source `box` must be [x_min, y_min, x_max, y_max] with x_max > x_min and "
            f"y_max > y_min, or {LANDMARK_BOX!r}. Received: box={box!r}"
        )


# --------------------------------------------------------------------------- data
def read_source(source, scheme=None):
    """Reads the records of one data source.

    Labels stay in the source's scheme (except with ``"box": "landmarks"``);
    the pipeline converts them to the training scheme
    (:func:`fpezoo.data.pipeline.stack_labels`).

    Args:
        source: a source dict of the config: ``reader``, ``path``, optional
            ``options`` (reader keyword arguments), ``limit`` (first faces
            only), ``drop_off_face_rows`` (drop labels off the face with
            :func:`fpezoo.data.readers.find_off_face_rows`) and ``box``: one
            face box ``[x_min, y_min, x_max, y_max]`` for every image of the
            source (e.g. to frame MTFL's looser 80x80 crops like the AFLW
            ones), or ``"landmarks"``: each face's box is the tight box of its
            points converted to the training scheme, and faces lacking one of
            those points are dropped
            (:func:`fpezoo.data.with_landmark_boxes`, the crop rule of
            the ``retail5_mtfl`` weights).
        scheme: the training scheme (a name); needed by ``"box": "landmarks"``.

    Returns:
        A list of :class:`fpezoo.data.records.LandmarkRecord`.
    """
    from fpezoo.data import readers

    _check_source(source)
    reader = readers.READERS[source["reader"]]
    records = reader(source["path"], **source.get("options", {}))
    if source.get("drop_off_face_rows"):
        flagged = set(readers.find_off_face_rows(records).all.tolist())
        records = [record for index, record in enumerate(records) if index not in flagged]
    if source.get("limit") is not None:
        records = records[: int(source["limit"])]
    if source.get("box") == LANDMARK_BOX:
        if scheme is None:
            raise ValueError(
                f"A source with box={LANDMARK_BOX!r} needs the training scheme whose points make "
                f"the box. Received: scheme=None"
            )
        from fpezoo.data import with_landmark_boxes

        records, _ = with_landmark_boxes(records, scheme)
    elif source.get("box") is not None:
        records = [dataclasses.replace(record, box=tuple(source["box"])) for record in records]
    return records


def build_datasets(config, scheme, input_shape, color):
    """The training and validation ``tf.data`` datasets of a resolved config.

    Returns:
        ``(train_dataset, validation_dataset or None, counts)`` where the
        training dataset repeats forever (mixed with the sources' weights) and
        ``counts`` is ``{"train": faces, "validation": faces, "sources": [...]}``.
    """
    from fpezoo.data import pipeline

    data = config["data"]
    if not data["sources"]:
        raise ValueError(
            "The config lists no data source (data.sources) and no train_data was given. "
            "Received: data.sources=[]"
        )
    fraction, seed = data["validation_fraction"], config["seed"]
    augment = data["augment"]
    if isinstance(augment, dict):
        from fpezoo.data.augment import FaceAugmenter

        augment = FaceAugmenter(**augment)
    crop = {"input_shape": input_shape, "color": color, "scheme": scheme.name,
            "enlarge": data["enlarge"], "depth": config["loss"]["name"] in DEPTH_LOSSES}
    train_sets, weights, validation_records, source_counts = [], [], [], []
    for index, source in enumerate(data["sources"]):
        records = read_source(source, scheme.name)
        train = [r for r in records if not in_validation_split(r, fraction, seed)]
        validation = [r for r in records if in_validation_split(r, fraction, seed)]
        if not train:
            raise ValueError(
                f"Data source {source['path']!r} ({source['reader']}) gave no training face. "
                f"Received: faces={len(records)}"
            )
        source_counts.append({"path": str(source["path"]), "reader": source["reader"],
                              "train": len(train), "validation": len(validation)})
        train_sets.append(pipeline.make_dataset(
            train, augment=augment or None, jitter=data["jitter"], batch_size=None,
            shuffle=True, repeat=True, seed=seed + index, **crop,
        ))
        weights.append(float(source.get("weight", 1.0)))
        validation_records.extend(validation)
    train_dataset = pipeline.mix_sources(train_sets, weights, batch_size=config["batch_size"],
                                         seed=seed)
    validation_dataset = None
    if validation_records:
        validation_dataset = pipeline.make_dataset(
            validation_records, augment=None, batch_size=config["batch_size"], shuffle=False, **crop,
        )
    counts = {
        "train": sum(count["train"] for count in source_counts),
        "validation": len(validation_records),
        "sources": source_counts,
    }
    return train_dataset, validation_dataset, counts


# --------------------------------------------------------------------------- model
def build_model(config):
    """Builds the model of a resolved config, with its starting weights.

    The ``model`` entry's ``weights`` may also be an OpenVINO ``.xml``: its
    weights are imported (:func:`fpezoo.models.retail.import_openvino_retail`)
    and loaded by layer name like a weights file. With ``grow_from``, the
    registered smaller model's weights are grown into this one (see
    :func:`grow_weights`). With ``freeze_batch_norms``, every
    ``BatchNormalization`` layer is frozen.
    """
    import tempfile

    from fpezoo.weights import registered_builder

    model_config = config["model"]
    builder = registered_builder(model_config["builder"])
    weights = model_config.get("weights")
    with tempfile.TemporaryDirectory(prefix="fpezoo_weights_") as folder:
        if weights is not None and weights.endswith(".xml"):
            from fpezoo.models.retail import import_openvino_retail

            imported = pathlib.Path(folder) / "openvino.weights.h5"
            import_openvino_retail(weights).save_weights(imported)
            weights = str(imported)
        model = builder(weights=weights, **model_config.get("config", {}))
    if model_config.get("grow_from") is not None:
        grow_weights(model_config["grow_from"], model, seed=config["seed"])
    if model_config.get("freeze_batch_norms"):
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def grow_weights(name, model, seed=0):
    """Copies registered weights of a smaller model into ``model``, its function preserved.

    Net2Net (Chen, Goodfellow and Shlens, ICLR 2016): when the registered model
    is an FPENet with 40x40 heatmaps and ``model`` has 80x80 ones, it first gains
    the last decoder block
    (:func:`fpezoo.models.fpenet.copy_to_full_resolution_heatmaps`); then it is
    widened to ``model``'s widths (:func:`fpezoo.models.widen.widen_weights`, a
    plain copy where the widths are equal). A 2D FAN grows into the 3D FAN of the
    same architecture: its layers are copied and the depth network starts fresh
    (:func:`fpezoo.models.fan.copy_2d_weights`).

    Args:
        name: registered weights (may be pinned, ``"NAME@sha256:HEX"``).
        model: the model to set, of the registered model's builder.
        seed: seed of the widening's random weight splits.
    """
    from fpezoo.models.common import KEYPOINT_HEAD
    from fpezoo.models.fpenet import FPENet, copy_to_full_resolution_heatmaps
    from fpezoo.models.widen import widen_weights
    from fpezoo.weights import build_registered, registry_entry

    def heatmap_height(landmark_model):
        return landmark_model.get_layer(KEYPOINT_HEAD).output.shape[1]

    source = build_registered(name)
    entry = registry_entry(name)
    if entry["builder"] == "FAN" and source.outputs[0].shape[-1] == 2 and model.outputs[0].shape[-1] == 3:
        from fpezoo.models.fan import copy_2d_weights

        copy_2d_weights(source, model)
        return
    if entry["builder"] == "FPENet" and heatmap_height(model) == 2 * heatmap_height(source):
        full = FPENet(**{**entry["config"], "heatmap_size": None})
        copy_to_full_resolution_heatmaps(source, full)
        source = full
    widen_weights(source, model, seed=seed)


def model_scheme(config, model):
    """The keypoint scheme the model is trained in (config ``scheme`` or by count)."""
    num_keypoints = model.outputs[0].shape[1]
    if config["scheme"] is None:
        return schemes.scheme_for_num_keypoints(num_keypoints)
    scheme = schemes.get_scheme(config["scheme"])
    if scheme.num_keypoints != num_keypoints:
        raise ValueError(
            f"Scheme {scheme.name!r} has {scheme.num_keypoints} points but the model predicts "
            f"{num_keypoints}. Received: scheme={config['scheme']!r}"
        )
    return scheme


def check_loss_fits_model(config, model):
    """Checks that the config's loss can train ``model``.

    Keypoints decoded by :class:`fpezoo.layers.HeatmapArgmax` (FAN) have no
    gradient: such a model trains on its heatmaps with a loss of
    :data:`HEATMAP_LOSSES`, and those losses need such heatmaps (the soft-argmax
    heatmaps of FPENet are not Gaussian targets; train its keypoints instead).

    Raises:
        ValueError: when the loss and the model do not fit.
    """
    from fpezoo.layers import HeatmapArgmax

    name, builder = config["loss"]["name"], config["model"]["builder"]
    dimensions = model.outputs[0].shape[-1]
    if name in DEPTH_LOSSES:
        if dimensions != 3:
            raise ValueError(
                f"Loss {name!r} trains the depth of a 3D model (keypoints (N, K, 3), e.g. FAN "
                f"with dimensions=3); this {builder!r} returns {dimensions} coordinates. "
                f"Received: loss.name={name!r}, builder={builder!r}"
            )
        return
    argmax_decoded = any(isinstance(layer, HeatmapArgmax) for layer in model.layers)
    if argmax_decoded and name not in HEATMAP_LOSSES:
        raise ValueError(
            f"The keypoints of {builder!r} come from an argmax, which has no gradient: train its "
            f"heatmaps with loss.name in {list(HEATMAP_LOSSES)}. "
            f"Received: loss.name={name!r}, builder={builder!r}"
        )
    if name in HEATMAP_LOSSES and not argmax_decoded:
        keypoint_losses = sorted(set(LOSSES) - set(HEATMAP_LOSSES))
        raise ValueError(
            f"Loss {name!r} trains heatmaps decoded by an argmax (FAN's heatmap layers) and "
            f"{builder!r} has none: use a keypoint loss, one of {keypoint_losses}. "
            f"Received: loss.name={name!r}, builder={builder!r}"
        )


def make_loss(loss_config, scheme, input_size=None):
    """The loss of the config's ``loss`` entry (``fpezoo.losses``).

    Args:
        loss_config: the config's ``loss`` entry.
        scheme: the training :class:`fpezoo.schemes.KeypointScheme`.
        input_size: ``(height, width)`` of the model input, the frame of the
            labels; given to the heatmap losses.
    """
    from fpezoo import losses

    options = dict(loss_config.get("config", {}))
    if loss_config["name"] in DEPTH_LOSSES:
        if loss_config.get("region_weights") is not None:
            raise ValueError(
                f"Loss {loss_config['name']!r} weighs every point alike. "
                f"Received: region_weights={loss_config['region_weights']!r}"
            )
        return getattr(losses, LOSSES[loss_config["name"]])(**options)
    if loss_config["name"] in HEATMAP_LOSSES:
        options["input_size"] = input_size
    loss_class = getattr(losses, LOSSES[loss_config["name"]])
    return loss_class(scheme=scheme.name, region_weights=loss_config.get("region_weights"), **options)


def make_trainer(config, model, scheme, input_size):
    """The model ``fit`` trains, with its losses and metrics.

    A keypoint loss trains ``model`` itself. A heatmap loss trains
    :func:`fpezoo.models.fan.heatmap_training_model` of ``model`` (sharing its
    layers), one loss per stack, with the decoded keypoints as a last output
    that carries no loss and the NME metric; its labels are one copy of
    ``y_true`` per output (:func:`labels_per_output`).

    Args:
        config: the resolved config.
        model: the landmark model.
        scheme: the training :class:`fpezoo.schemes.KeypointScheme`.
        input_size: ``(height, width)`` of the model input.

    Returns:
        ``(trainer, loss, metrics)``, the last two for ``trainer.compile``.
    """
    loss = make_loss(config["loss"], scheme, input_size)
    if config["loss"]["name"] in DEPTH_LOSSES:
        return model, loss, []
    metric = default_metric(scheme)
    if config["loss"]["name"] not in HEATMAP_LOSSES:
        return model, loss, [metric]
    from fpezoo.models.fan import heatmap_training_model

    trainer = heatmap_training_model(model, keypoints=True)
    num_stacks = len(trainer.outputs) - 1
    return trainer, [loss] * num_stacks + [None], [[]] * num_stacks + [[metric]]


def labels_per_output(dataset, num_outputs):
    """``dataset`` of ``(images, y_true)`` with ``y_true`` repeated, one per output."""
    return dataset.map(lambda images, y_true: (images, (y_true,) * num_outputs))


def default_metric(scheme):
    """An NME metric the scheme supports (inter-ocular, eye centres or box)."""
    from fpezoo.metrics import NME

    if scheme.outer_eye_corners is not None:
        normalization = "inter_ocular"
    elif scheme.eye_centres is not None:
        normalization = "eye_centres"
    else:
        normalization = "box_diagonal"
    return NME(normalization, scheme=scheme.name, name=f"nme_{normalization}")


def make_optimizer(config, total_steps):
    """The optimizer of the config with its learning-rate schedule."""
    options = dict(config["optimizer"].get("config", {}))
    if "learning_rate" in options:
        raise ValueError(
            "Set the learning rate in `schedule` (e.g. {'name': 'constant', 'base_lr': 1e-3}), "
            f"not in optimizer.config. Received: learning_rate={options['learning_rate']!r}"
        )
    learning_rate = get_schedule(config["schedule"], total_steps)
    return OPTIMIZERS[config["optimizer"]["name"]](learning_rate=learning_rate, **options)


# --------------------------------------------------------------------------- distribution
def make_strategy(distribution):
    """The ``tf.distribute`` strategy of the config's ``distribution`` entry."""
    import tensorflow as tf

    name = distribution.get("strategy", "default")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=distribution.get("devices"))
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "The multi_worker strategy reads the cluster from the TF_CONFIG environment "
                "variable, which is not set. Received: TF_CONFIG=None"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"`distribution.strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")


def worker_role(strategy):
    """``(is_chief, worker_index)`` of this process in a (multi-worker) strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                        and "chief" not in resolver.cluster_spec().as_dict())
    return is_chief, task_id


@contextlib.contextmanager
def _multi_worker_fit_fixes(model, strategy):
    """Works around Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy``.

    Keras 3.15 (keras-team/keras#20585, tensorflow/tensorflow#72388) fails there
    twice: before the first step it all-reduces a whole ``(x, y)`` batch
    structure to build the model symbolically, and after each step it
    all-reduces the scalar logs with ``axis=0``; both raise. The first batch's
    local replica value has the same shapes, and a scalar log is reduced
    across replicas with ``axis=None``. Both patches are undone on exit.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return

    def local_value(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local_value, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, reduce_strategy, reduction):
        if reduce_strategy is strategy and reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v,
                values,
            )
        return original_reduce(values, reduce_strategy, reduction)

    model._maybe_symbolic_build = symbolic_build_from_local_batch
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original_reduce
        del model._maybe_symbolic_build


# --------------------------------------------------------------------------- callbacks
class BestWeightsExport(keras.callbacks.Callback):
    """Saves the weights whenever the monitored value improves (and remembers it).

    Unlike ``ModelCheckpoint(save_best_only=True)``, the best value so far is
    kept in ``best.json`` beside the weights, so a resumed run does not
    overwrite better weights from before the interruption.

    Args:
        directory: folder of ``best.weights.h5`` and ``best.json``.
        monitor: the log to minimise (``"val_loss"`` or ``"loss"``).
        resume: start from the ``best.json`` of the interrupted run (otherwise
            the first epoch's value is the best so far).
        landmark_model: the model whose weights are saved (None: the model
            being fit), e.g. the FAN whose layers a heatmap trainer shares.
    """

    def __init__(self, directory, monitor="val_loss", resume=False, landmark_model=None):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.monitor = monitor
        self.landmark_model = landmark_model
        self.weights_path = self.directory / "best.weights.h5"
        self.record_path = self.directory / "best.json"
        self.best = None
        if resume and self.record_path.is_file() and self.weights_path.is_file():
            self.best = json.loads(self.record_path.read_text())

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        if self.best is None or float(value) < self.best["value"]:
            (self.landmark_model or self.model).save_weights(self.weights_path, overwrite=True)
            self.best = {"epoch": epoch, "monitor": self.monitor, "value": float(value)}
            self.record_path.write_text(json.dumps(self.best, indent=2))


# --------------------------------------------------------------------------- train
def train(config, train_data=None, validation_data=None, callbacks=None, num_train_faces=None):
    """Trains a landmark model from a config (``fpezoo train`` on the command line).

    Args:
        config: a config dict or a JSON file path (see the module docstring).
        train_data: optional ``tf.data.Dataset`` of ``(images, y_true)`` batches
            used instead of the config's data sources (it should repeat, or
            ``steps_per_epoch`` must fit it). For a distributed run, pass a
            function ``() -> Dataset`` so each worker builds its own.
        validation_data: optional dataset (or function) of validation batches,
            used with ``train_data``.
        callbacks: extra Keras callbacks, run after fpezoo's own.
        num_train_faces: with ``train_data``, the number of distinct training
            faces (sets the default ``steps_per_epoch``).

    Returns:
        The trained model (with the final weights; with a heatmap loss, the
        FAN itself, not its heatmap trainer) and a summary dict:
        ``(model, summary)``.
    """
    config = resolve_config(config)
    keras.utils.set_random_seed(config["seed"])
    strategy = make_strategy(config["distribution"])
    is_chief, worker_index = worker_role(strategy)
    output_dir = pathlib.Path(config["output_dir"])
    run_dir = output_dir if is_chief else output_dir / "workers" / f"worker{worker_index}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))

    with strategy.scope():
        model = build_model(config)
    scheme = model_scheme(config, model)
    check_loss_fits_model(config, model)
    if config["loss"]["name"] in DEPTH_LOSSES:
        from fpezoo.models.fan import freeze_all_but_depth

        freeze_all_but_depth(model)
    input_shape, color = _input_format(config, model)

    if train_data is None:
        train_dataset, validation_dataset, counts = build_datasets(config, scheme, input_shape, color)
    else:
        train_dataset = train_data() if callable(train_data) else train_data
        validation_dataset = validation_data() if callable(validation_data) else validation_data
        counts = {"train": num_train_faces, "validation": None, "sources": []}
    steps_per_epoch = config["steps_per_epoch"]
    if steps_per_epoch is None:
        if not counts["train"]:
            raise ValueError(
                "Set `steps_per_epoch` (or num_train_faces) when training on train_data. "
                "Received: steps_per_epoch=None"
            )
        steps_per_epoch = max(1, counts["train"] // config["batch_size"])
    total_steps = steps_per_epoch * config["epochs"]

    with strategy.scope():
        trainer, loss, metrics = make_trainer(config, model, scheme, input_shape[:2])
        trainer.compile(optimizer=make_optimizer(config, total_steps), loss=loss, metrics=metrics)
    if trainer is not model:
        train_dataset = labels_per_output(train_dataset, len(trainer.outputs))
        if validation_dataset is not None:
            validation_dataset = labels_per_output(validation_dataset, len(trainer.outputs))
    monitor = "val_loss" if validation_dataset is not None else "loss"
    resuming = (run_dir / "backup" / "training_metadata.json").is_file()
    if not resuming:  # a fresh run replaces the logs of a finished one
        (run_dir / "history.csv").unlink(missing_ok=True)
    best_export = BestWeightsExport(run_dir, monitor, resume=resuming, landmark_model=model)
    own_callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        best_export,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), update_freq="epoch"),
    ]
    start = time.time()
    with _multi_worker_fit_fixes(trainer, strategy):
        history = trainer.fit(
            train_dataset,
            epochs=config["epochs"],
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # the tf.data pipeline shuffles; Keras warns it ignores its default True
            validation_data=validation_dataset,
            validation_steps=config["validation_steps"],
            callbacks=own_callbacks + list(callbacks or []),
            verbose=_verbosity(config["verbose"]),
        )
    seconds = time.time() - start
    model.save_weights(run_dir / "final.weights.h5", overwrite=True)
    epochs_run = len(history.epoch)
    summary = {
        "epochs": config["epochs"],
        "first_epoch_this_run": history.epoch[0] if history.epoch else config["epochs"],
        "epochs_run": epochs_run,
        "steps_per_epoch": steps_per_epoch,
        "optimizer_iterations": int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)),
        "num_replicas": strategy.num_replicas_in_sync,
        "faces": counts,
        "best": best_export.best,
        "seconds_this_run": round(seconds, 1),
        "scheme": scheme.name,
    }
    if best_export.best is not None:
        best_model = build_model({**config, "model": {**config["model"], "weights": None}})
        best_model.load_weights(best_export.weights_path)
        best_model.save(run_dir / "best.keras")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return model, summary


def _input_format(config, model):
    """``(input_shape, color)`` of the crops the pipeline makes for ``model``."""
    shape = config["data"]["input_shape"] or tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            "The model takes images of any size: set data.input_shape to the crop size "
            f"(height, width, channels). Received: input_shape={tuple(shape)}"
        )
    color = config["data"]["color"] or ("grayscale" if shape[2] == 1 else "rgb")
    return tuple(int(d) for d in shape), color


def _verbosity(verbose):
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


def read_history(run_dir):
    """The rows of ``history.csv`` of a run (one dict per finished epoch)."""
    with open(pathlib.Path(run_dir) / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


# --------------------------------------------------------------------------- CLI
def configure_parser(parser):
    """Options of ``fpezoo train``."""
    parser.add_argument("config", help="training config (JSON), see configs/")
    parser.add_argument("--output-dir", help="overrides the config's output_dir")
    parser.add_argument("--epochs", type=int, help="overrides the config's epochs")
    parser.add_argument("--steps-per-epoch", type=int, help="overrides steps_per_epoch")


def run(args):
    """``fpezoo train CONFIG.json``: train (or resume) the run the config describes."""
    config = resolve_config(args.config)  # a bad config is one error line (fpezoo.cli.main)
    for key in ("output_dir", "epochs", "steps_per_epoch"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    _, summary = train(config)
    print(json.dumps(summary, indent=2))
    return 0
