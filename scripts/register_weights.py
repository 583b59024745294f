"""Registers the best weights of a training run in ``weights/registry.json``.

Writes the model weights of ``<run>/best.weights.h5`` (without the optimizer
state that training checkpoints carry) to ``weights/<name>.weights.h5`` and the
registry entry (format in :mod:`fpezoo.weights`): builder and config from the
run's ``config.json``, the file's sha256, the model card ``weights/<name>.md``
(written by hand: training data and terms, recipe, measured numbers), the
scheme, and the crop framing the model was trained with.

Usage::

    python scripts/register_weights.py /work/runs/fpenet68_w32 fpenet68_w32 \\
        --scheme ibug68 --enlarge 1.4142135623730951 [--default]
"""

import argparse
import json
import pathlib
import sys

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "weights"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=pathlib.Path, help="training run folder (fpezoo train)")
    parser.add_argument("name", help="registered name, e.g. fpenet68_w32")
    parser.add_argument("--scheme", required=True, help="keypoint scheme (fpezoo.schemes)")
    parser.add_argument("--enlarge", type=float,
                        help="crop side over the landmark box's longer side used in training")
    parser.add_argument("--default", action="store_true",
                        help="the predictor's default model (fpezoo.predictor.default_model_name)")
    parser.add_argument("--weights-dir", type=pathlib.Path, default=WEIGHTS,
                        help="folder of registry.json and the weights (default: the project's weights/)")
    args = parser.parse_args(argv)

    from fpezoo.weights import REGISTRY_FILE, WEIGHTS_SUFFIX, registered_builder, sha256, weights_dir

    source = args.run / "best.weights.h5"
    if not source.is_file():
        raise FileNotFoundError(f"The run has no best weights. Received: run={str(args.run)!r}")
    model = json.loads((args.run / "config.json").read_text())["model"]
    target = args.weights_dir / f"{args.name}{WEIGHTS_SUFFIX}"
    trained = registered_builder(model["builder"])(weights=None, **model.get("config", {}))
    trained.load_weights(source)
    trained.save_weights(target)
    registry_path = args.weights_dir / REGISTRY_FILE
    registry = json.loads(registry_path.read_text()) if registry_path.is_file() else {}
    entry = {
        "file": target.name,
        "sha256": sha256(target),
        "builder": model["builder"],
        "config": model.get("config", {}),
        "card": f"{args.name}.md",
        "scheme": args.scheme,
    }
    if args.enlarge is not None:
        entry["crop"] = {"enlarge": args.enlarge}
    if args.default:
        entry["default"] = True
    registry[args.name] = entry
    registry_path.write_text(json.dumps(registry, indent=2) + "\n")
    print(json.dumps({args.name: entry}, indent=2))
    resolved = weights_dir()
    if resolved.resolve() != args.weights_dir.resolve():
        print(
            f"Warning: registered in {args.weights_dir}, but fpezoo resolves registered names "
            f"from {resolved} (an installed copy of the package, or $FPEZOO_WEIGHTS_DIR), so "
            f"weights={args.name!r} still loads the weights there. Install the project in "
            f"editable mode (pip install -e .) or set FPEZOO_WEIGHTS_DIR={args.weights_dir}.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
