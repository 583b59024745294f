"""``fpezoo demo``: landmarks on the bundled photo, written as an annotated PNG.

Runs the default registered model (see
:func:`fpezoo.predictor.default_model_name`) with the default face detector on
``fpezoo/assets/astronaut.png`` (NASA portrait of Eileen Collins, public domain;
see ``fpezoo/assets/README.md``) and prints where the picture went. Like
``fpezoo predict``, it never overwrites a file without ``--force``, checks the
output before loading the model, and never leaves a partial PNG.
"""

import pathlib
import sys

from fpezoo.predict_cli import (
    EXIT_INTERRUPTED,
    USAGE_ERRORS,
    add_model_options,
    check_output,
    load_detector,
    model_argument,
    save_image,
)

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
DEMO_IMAGE = ASSETS / "astronaut.png"


def configure_parser(parser):
    """Options of ``fpezoo demo``."""
    parser.add_argument("--output", "-o", default="fpezoo_demo.png",
                        help="annotated PNG to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_model_options(parser)
    parser.add_argument("--image", default=str(DEMO_IMAGE), help="photo to run on (default: the bundled one)")


def run(args):
    """Runs the demo.

    Returns:
        0; 2 when the output exists or cannot be written, the photo is
        unreadable, or no model or face detector is available; 130 when
        interrupted (Ctrl-C).
    """
    try:
        try:
            from fpezoo.imageio import load_image
            from fpezoo.predictor import LandmarkDetector, draw_faces

            check_output(args.output, force=args.force, suffixes=(".png",), hint="or choose another --output")
            image = load_image(args.image)
            detector = load_detector(args.detector)
            predictor = LandmarkDetector(model=model_argument(args), detector=detector)
        except LookupError as error:
            print(f"error: fpezoo demo needs trained weights. {error}", file=sys.stderr)
            return 2
        except USAGE_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        faces = predictor.predict(image)
        output = pathlib.Path(args.output)
        save_image(draw_faces(image, faces), output)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    for index, face in enumerate(faces):
        box = ", ".join(f"{v:.0f}" for v in face.box)
        print(f"face {index}: box ({box}), detector score {face.score:.3f}, "
              f"{len(face.keypoints)} keypoints, mean confidence {face.confidence.mean():.3f}")
    print(f"{len(faces)} face(s) found by {predictor!r}")
    print(f"wrote {output.resolve()}")
    return 0
