"""``fpezoo demo``: landmarks on the bundled photo, written as an annotated PNG.

Runs the default registered model (see
:func:`fpezoo.predictor.default_model_name`) with the default face detector on
``fpezoo/assets/astronaut.png`` (NASA portrait of Eileen Collins, public domain;
see ``fpezoo/assets/README.md``) and prints where the picture went.
"""

import pathlib
import sys

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
DEMO_IMAGE = ASSETS / "astronaut.png"


def configure_parser(parser):
    """Options of ``fpezoo demo``."""
    parser.add_argument("--output", "-o", default="fpezoo_demo.png",
                        help="annotated PNG to write (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="registered weights name or .keras file (default: the default registered model)")
    parser.add_argument("--detector", default="default", help="face detector (default: %(default)s)")
    parser.add_argument("--image", default=str(DEMO_IMAGE), help="photo to run on (default: the bundled one)")


def run(args):
    """Runs the demo; returns 0, or 2 when no model is available or the photo is unreadable."""
    from PIL import Image

    from fpezoo.imageio import ImageReadError, load_image
    from fpezoo.predictor import LandmarkDetector, draw_faces

    try:
        image = load_image(args.image)
    except (FileNotFoundError, ImageReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        predictor = LandmarkDetector(model=args.model, detector=args.detector)
    except LookupError as error:
        print(f"error: fpezoo demo needs trained weights. {error}", file=sys.stderr)
        return 2
    faces = predictor.predict(image)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_faces(image, faces)).save(output)
    for index, face in enumerate(faces):
        box = ", ".join(f"{v:.0f}" for v in face.box)
        print(f"face {index}: box ({box}), detector score {face.score:.3f}, "
              f"{len(face.keypoints)} keypoints, mean confidence {face.confidence.mean():.3f}")
    print(f"{len(faces)} face(s) found by {predictor!r}")
    print(f"wrote {output.resolve()}")
    return 0
