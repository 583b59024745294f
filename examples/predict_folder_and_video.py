"""``fpezoo predict`` on a folder (with a bad file) and on a short video.

    python examples/predict_folder_and_video.py [--model <registered name or .keras file>]

Makes a scratch folder from the bundled photo, runs the command on it with JSON
lines and CSV output, resumes, and tracks the face through a generated clip.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

from fpezoo.demo import DEMO_IMAGE

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default=None)
args = parser.parse_args()
model = ["--model", args.model] if args.model else []


def fpezoo_predict(*arguments):
    command = [sys.executable, "-m", "fpezoo", "predict", *map(str, arguments), *model, "--no-progress"]
    print("$ fpezoo predict", " ".join(map(str, arguments)))
    code = subprocess.run(command, check=False).returncode
    if code == 2:  # a usage error (no model, output exists...): the message is above
        sys.exit(code)
    return code


work = pathlib.Path(tempfile.mkdtemp(prefix="fpezoo_example_"))
photo = Image.open(DEMO_IMAGE).convert("RGB")
(work / "photos" / "more").mkdir(parents=True)
photo.save(work / "photos" / "astronaut.jpg")
photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(work / "photos" / "more" / "mirrored.png")
(work / "photos" / "broken.jpg").write_text("not a picture")  # reported, and the run goes on

code = fpezoo_predict(work / "photos", "-o", work / "landmarks.jsonl", "--draw", work / "drawn")
print("exit code", code, "(1: some file failed)")
for line in (work / "landmarks.jsonl").read_text().splitlines():
    record = json.loads(line)
    print(record["source"], len(record["faces"]), "face(s)", record.get("error", ""))

photo.save(work / "photos" / "more" / "new.png")
fpezoo_predict(work / "photos", "-o", work / "landmarks.jsonl", "--resume")  # only new.png runs
fpezoo_predict(work / "photos", "-o", work / "landmarks.csv")

# A 12-frame clip of the face moving right: tracked frame by frame.
frames = np.asarray(photo.resize((256, 256)))
writer = cv2.VideoWriter(str(work / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 12, (256, 256))
for step in range(12):
    writer.write(np.roll(frames, 2 * step, axis=1)[..., ::-1].copy())
writer.release()
fpezoo_predict(work / "clip.avi", "-o", work / "clip.jsonl", "--draw", work / "drawn")
boxes = [json.loads(line)["faces"][0]["box"] for line in (work / "clip.jsonl").read_text().splitlines()]
print("face box x_min per frame:", [round(box[0]) for box in boxes])
print("outputs in", work)
