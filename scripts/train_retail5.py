"""Trains the 5-point RetailLandmarks5 weights on MTFL (+ AFLW crops) and scores them on MTFL test.

The weights ``retail5_mtfl`` (``weights/retail5_mtfl.md``) come from this
recipe. The network is :func:`fpezoo.RetailLandmarks5` (the architecture of
OpenVINO's landmarks-regression-retail-0009: 48x48 BGR 0-255 input, 190,616
parameters, 0.0207 GFLOPs).

Crop rule (the same for training, evaluation and the official model): the
square of side ``enlarge`` times the longer side of the box of the five
points (:func:`fpezoo.evaluation.with_landmark_boxes`), centred on that box,
resized to 48x48 (:func:`fpezoo.data.pipeline.crop_transform`). At test time
the box comes from the ground-truth points, as the peer numbers of issue 5
were measured ("fed a tight box derived from the labels"); it is the
``--box landmarks`` framing of ``fpezoo evaluate MODEL --benchmark mtfl``.

Training data (``configs/retail5_mtfl.json``, key ``"data"``):

* MTFL ``train.txt`` (LFW + web images, 80x80 loose crops, human 5 points),
  without the rows whose points lie off the face
  (:func:`fpezoo.data.readers.find_off_face_rows`);
* optionally the AFLW crops' human 21 points converted to the five points
  (eye centres 7 and 10, nose tip 14, mouth corners 17 and 19, with
  :func:`fpezoo.schemes.convert_keypoints`), for the faces where all five are
  visible; the AFLW crops exclude the MTFL test faces.

A validation split by image (:func:`fpezoo.training.in_validation_split`)
chooses the best epoch; MTFL test is read only by ``evaluate``. Training runs
:func:`fpezoo.train` (resumable: run the same command again after an
interruption) with the config's ``"train"`` part. Two more recipe keys:
``"initialize_from_openvino"`` (the official IR ``.xml``: start from its
weights) and ``"freeze_batch_norms"`` (keep the imported, folded batch norms
fixed, see :func:`retail_with_frozen_batch_norms`); the second stage starts
from the first one's best weights (``train.model.weights``).

Usage::

    nice -n 10 python scripts/train_retail5.py train configs/retail5_mtfl.json
    nice -n 10 python scripts/train_retail5.py train configs/retail5_mtfl_stage2.json
    python scripts/train_retail5.py export /work/runs/retail5_stage2/best.weights.h5 \\
        weights/retail5_mtfl.weights.h5
    python scripts/train_retail5.py evaluate retail5_mtfl
    python scripts/train_retail5.py evaluate \\
        ../shared/data/openvino-landmarks-regression-retail-0009/landmarks-regression-retail-0009.xml \\
        --enlarge 1.5 2.0 2.5

``evaluate`` takes a registered weights name, a ``.weights.h5`` file or the
official IR's ``.xml``, and prints the MTFL test NME (eye-centre distance)
and the failure rate at NME > 0.1 for each ``--enlarge``.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from fpezoo.evaluation import with_landmark_boxes  # noqa: E402

SCHEME = "five_point"
INPUT_SHAPE = (48, 48, 3)
COLOR = "bgr"
FAILURE_THRESHOLD = 0.1


# --------------------------------------------------------------------------- records
def mtfl_training_records(list_file):
    """MTFL training records without the rows whose points lie off the face."""
    from fpezoo.data.readers import find_off_face_rows, read_mtfl

    records = read_mtfl(list_file)
    off_face = find_off_face_rows(records)
    dropped = set(off_face.all.tolist())
    kept = [record for index, record in enumerate(records) if index not in dropped]
    report = {"rows": len(records), "outside_image": len(off_face.outside_image),
              "displaced": len(off_face.displaced), "dropped": len(dropped)}
    return kept, report


def training_sources(data, seed):
    """The training and validation records of the ``"data"`` part of a config.

    Returns:
        ``(sources, validation_records, report)`` where ``sources`` is a list
        of ``(records, sampling weight)``.
    """
    from fpezoo.data.readers import read_aflw_crops
    from fpezoo.training import in_validation_split

    fraction = data["validation_fraction"]
    sources, validation, report = [], [], {}
    records, report["mtfl"] = mtfl_training_records(data["mtfl"])
    candidates = [(records, data.get("mtfl_weight", 1.0), "mtfl")]
    if data.get("aflw_crops"):
        aflw, missing = with_landmark_boxes(read_aflw_crops(data["aflw_crops"]), SCHEME)
        report["aflw_crops"] = {"faces": len(aflw), "dropped_without_all_five": missing}
        candidates.append((aflw, data.get("aflw_weight", 1.0), "aflw_crops"))
    for records, weight, name in candidates:
        records, _ = with_landmark_boxes(records, SCHEME)
        train = [r for r in records if not in_validation_split(r, fraction, seed)]
        held_out = [r for r in records if in_validation_split(r, fraction, seed)]
        report.setdefault(name, {}).update({"train": len(train), "validation": len(held_out)})
        sources.append((train, weight))
        validation.extend(held_out)
    return sources, validation, report


# --------------------------------------------------------------------------- training
def retail_with_frozen_batch_norms(**kwargs):
    """:func:`fpezoo.RetailLandmarks5` whose batch norms keep their statistics and affine.

    The official IR folds each batch norm into a multiply and an add, which
    the importer stores as gamma/beta with unit statistics; in training mode a
    batch norm would normalise by the batch statistics instead and lose the
    official function. Frozen (``trainable=False``, which Keras runs in
    inference mode), they stay fixed affine maps while the convolutions
    fine-tune.
    """
    import keras

    from fpezoo.models.retail import RetailLandmarks5

    model = RetailLandmarks5(**kwargs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def official_weights(xml_path, output_dir):
    """The official retail-0009 weights as a ``.weights.h5`` in ``output_dir`` (made once)."""
    from fpezoo.models.retail import import_openvino_retail

    path = pathlib.Path(output_dir) / "retail-0009-official.weights.h5"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        import_openvino_retail(xml_path).save_weights(path)
    return path


def train(config_path, epochs=None):
    """Trains (or resumes) the run of a ``configs/retail5_*.json`` recipe."""
    import fpezoo
    from fpezoo.data.augment import FaceAugmenter
    from fpezoo.data.pipeline import make_dataset, mix_sources

    recipe = json.loads(pathlib.Path(config_path).read_text())
    config = recipe["train"]
    if epochs is not None:
        config["epochs"] = epochs
    data = recipe["data"]
    seed = config.get("seed", 0)
    if recipe.get("initialize_from_openvino"):
        config["model"]["weights"] = str(official_weights(recipe["initialize_from_openvino"],
                                                          config["output_dir"]))
    if recipe.get("freeze_batch_norms"):
        config["model"]["builder"] = f"{__name__}.{retail_with_frozen_batch_norms.__name__}"
    sources, validation, report = training_sources(data, seed)
    print(json.dumps({"data": report}, indent=1), flush=True)
    augment = FaceAugmenter(**data["augment"])
    crop = {"input_shape": INPUT_SHAPE, "color": COLOR, "scheme": SCHEME,
            "enlarge": data["enlarge"]}
    streams = [
        make_dataset(records, augment=augment, jitter=data["jitter"], batch_size=None,
                     shuffle=True, repeat=True, seed=seed + index, **crop)
        for index, (records, _) in enumerate(sources)
    ]
    train_data = mix_sources(streams, [weight for _, weight in sources],
                             batch_size=config["batch_size"], seed=seed)
    validation_data = make_dataset(validation, batch_size=config["batch_size"], **crop)
    _, summary = fpezoo.train(config, train_data=train_data, validation_data=validation_data,
                              num_train_faces=sum(len(records) for records, _ in sources))
    summary["data"] = report
    print(json.dumps(summary, indent=1))


def export(checkpoint, output):
    """Saves a run's ``best.weights.h5`` without the optimizer state, as shipped in ``weights/``."""
    from fpezoo.models.retail import RetailLandmarks5
    from fpezoo.weights import sha256

    RetailLandmarks5(weights=checkpoint).save_weights(output)
    print(f"{output}: sha256 {sha256(output)}")


# --------------------------------------------------------------------------- evaluation
def load_model(model):
    """A Keras model and its input colour for a registered name, ``.weights.h5`` or IR ``.xml``."""
    from fpezoo.models.retail import RetailLandmarks5, import_openvino_retail
    from fpezoo.weights import build_registered

    if model.endswith(".xml"):
        return import_openvino_retail(model), COLOR
    if model.endswith(".weights.h5"):
        return RetailLandmarks5(weights=model), COLOR
    built = build_registered(model)
    return built, None


def mtfl_test_errors(model, enlarge, list_file, input_color=None, limit=None, batch_size=256):
    """Per-face NME (eye-centre distance) on MTFL test, crops from the ground-truth boxes.

    ``fpezoo.evaluate(model, "mtfl", box="landmarks")`` with this recipe's arguments.

    Args:
        model: a Keras landmark model (five points).
        enlarge: crop side over the longer side of the five points' box.
        list_file: MTFL ``test.txt``.
        input_color: colour order the model takes (None: read from the model).
        limit: only the first ``limit`` faces.
        batch_size: crops per model call.

    Returns:
        float64 ``(N,)`` errors (infinite for a face with non-finite predictions).
    """
    from fpezoo.evaluation import evaluate as evaluate_benchmark

    results = evaluate_benchmark(model, "mtfl", data=list_file, enlarge=enlarge, box="landmarks",
                                 batch_size=batch_size, limit=limit, scheme=SCHEME,
                                 input_color=input_color, progress=False)
    return np.asarray(results["per_face"]["nme_eye_centres"], dtype="float64")


def evaluate(model_name, enlarges, list_file, limit=None, output=None):
    """Prints (and optionally saves) the MTFL test scores of a model for each ``enlarge``."""
    from fpezoo.evaluation import summary_statistics

    model, input_color = load_model(model_name)
    results = []
    for enlarge in enlarges:
        errors = mtfl_test_errors(model, enlarge, list_file, input_color, limit)
        stats = summary_statistics(errors, FAILURE_THRESHOLD)
        results.append({"model": model_name, "enlarge": enlarge, "faces": len(errors),
                        "nme_eye_centres": stats, "per_face": errors.tolist()})
        print(f"{model_name} enlarge={enlarge}: faces={len(errors)} "
              f"NME={100 * stats['mean']:.2f}% "
              f"failure@{FAILURE_THRESHOLD}={100 * stats['failure_rate']:.2f}%", flush=True)
    if output:
        pathlib.Path(output).write_text(json.dumps(results, indent=1))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train or resume a recipe")
    train_parser.add_argument("config", help="configs/retail5_mtfl.json")
    train_parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    export_parser = commands.add_parser("export", help="weights without the optimizer state")
    export_parser.add_argument("checkpoint", help="a run's best.weights.h5")
    export_parser.add_argument("output", help="e.g. weights/retail5_mtfl.weights.h5")
    evaluate_parser = commands.add_parser("evaluate", help="MTFL test NME with ground-truth boxes")
    evaluate_parser.add_argument("model", help="registered name, .weights.h5 or OpenVINO .xml")
    evaluate_parser.add_argument("--enlarge", type=float, nargs="+", default=[None],
                                 help="crop side over the five points' box (default: registered)")
    evaluate_parser.add_argument("--data", default=str(PROJECT_ROOT.parent / "shared" / "data"
                                                      / "mtfl" / "test.txt"))
    evaluate_parser.add_argument("--limit", type=int, help="only the first N faces")
    evaluate_parser.add_argument("--out", help="results JSON")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.config, args.epochs)
        return 0
    if args.command == "export":
        export(args.checkpoint, args.output)
        return 0
    enlarges = args.enlarge
    if enlarges == [None]:
        from fpezoo.weights import registry_entry

        enlarges = [registry_entry(args.model)["crop"]["enlarge"]]
    evaluate(args.model, enlarges, args.data, args.limit, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
