"""Exports and scores the 5-point RetailLandmarks5 weights ``retail5_mtfl`` on MTFL test.

The weights ``retail5_mtfl`` (``weights/retail5_mtfl.md``) come from the recipes
``configs/retail5_mtfl.json`` and ``configs/retail5_mtfl_stage2.json`` (which
``extends`` the first), run by ``fpezoo train`` (:mod:`fpezoo.training`); their
paths are relative to ``configs/`` or start with ``$FPEZOO_DATA/``, and the runs
go to ``runs/retail5`` and ``runs/retail5_stage2`` of the project folder. The network is
:func:`fpezoo.RetailLandmarks5` (the architecture of OpenVINO's
landmarks-regression-retail-0009: 48x48 BGR 0-255 input, 190,616 parameters,
0.0207 GFLOPs).

Crop rule (the same for training, evaluation and the official model): the
square of side ``enlarge`` times the longer side of the box of the five
points (:func:`fpezoo.data.with_landmark_boxes`, the ``"box": "landmarks"``
of the recipes' data sources), centred on that box, resized to 48x48
(:func:`fpezoo.coordinates.crop_transform`). At test time the box comes from
the ground-truth points, as the peer numbers of issue 5 were measured ("fed a
tight box derived from the labels"); it is the ``--box landmarks`` framing of
``fpezoo evaluate MODEL --benchmark mtfl``.

Training data (the recipes' ``data.sources``):

* MTFL ``train.txt`` (LFW + web images, 80x80 loose crops, human 5 points),
  without the rows whose points lie off the face
  (:func:`fpezoo.data.readers.find_off_face_rows`);
* the AFLW crops' human 21 points converted to the five points (eye centres
  7 and 10, nose tip 14, mouth corners 17 and 19, with
  :func:`fpezoo.schemes.convert_keypoints`), for the faces where all five are
  visible; the AFLW crops exclude the MTFL test faces.

The first stage starts from the official IR's weights (``model.weights`` is
its ``.xml``) and keeps the imported, folded batch norms fixed
(``model.freeze_batch_norms``); the second starts from the first one's best
weights.

Usage::

    nice -n 10 fpezoo train configs/retail5_mtfl.json
    nice -n 10 fpezoo train configs/retail5_mtfl_stage2.json
    python scripts/train_retail5.py export runs/retail5_stage2/best.weights.h5 \\
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

SCHEME = "five_point"
COLOR = "bgr"
FAILURE_THRESHOLD = 0.1


# --------------------------------------------------------------------------- export
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
