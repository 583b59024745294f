"""Landmarks for every face of a photo with ``fpezoo.LandmarkDetector``.

    python examples/predict_photo.py                       # the bundled photo
    python examples/predict_photo.py --image me.jpg --model <registered name, .keras, .onnx or .tflite file>

Without ``--model`` the default registered weights are used (``fpezoo card``
lists them).
"""

import argparse
import json

import numpy as np
from PIL import Image

import fpezoo
from fpezoo.demo import DEMO_IMAGE
from fpezoo.predictor import draw_faces

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--image", default=str(DEMO_IMAGE))
parser.add_argument("--model", default=None)
parser.add_argument("--output", default="predict_photo.png")
args = parser.parse_args()

# The default detector (BlazeFace on LiteRT) finds the faces; each is cropped the way the
# model was trained, turned upright by its roll.
detector = fpezoo.LandmarkDetector(model=args.model)
faces = detector.predict(args.image)  # a path, a PIL image or a NumPy array
for face in faces:
    print(json.dumps({"box": face.to_dict()["box"], "score": round(face.score, 3),
                      "keypoints": face.keypoints.shape, "mean_confidence": float(face.confidence.mean())}))

# Several images run as one batch; NumPy arrays from OpenCV need bgr=True.
photo = np.asarray(Image.open(args.image).convert("RGB"))
batch = detector.predict([photo, photo[:, ::-1], photo[..., ::-1].copy()])
print("faces per image:", [len(image_faces) for image_faces in batch])

Image.fromarray(draw_faces(photo, faces)).save(args.output)
print(f"wrote {args.output}")
