"""Trains fpezoo's pretrained 68-point weights on the AFLW crops (``weights/``).

The recipe (``configs/pretrained_*.json``) has two parts: ``"train"``, a
:func:`fpezoo.train` config (model, loss, optimizer, schedule, epochs, output
folder; the run resumes after an interruption when started again), and
``"data"``, how the AFLW crops of ``../shared/data/aflw-crops`` become
training faces:

* labels: MediaPipe teacher's 68 points (``teacher_mediapipe.npz``) where the
  teacher agrees with itself on the mirrored crop (``flip_disagreement_nme`` at
  most ``max_flip_disagreement``), with AFLW's human points replacing the
  teacher's at the 16 points that correspond to iBUG-68 points
  (``fpezoo.schemes.convert_keypoints``); where the teacher is unsure or
  found no face, only the visible human points supervise;
* framing: the square crop around the 68-point landmark box enlarged by
  ``enlarge``, as the AFLW2000-3D (3DDFA) protocol crops test faces from their
  ground-truth landmark box. Faces without teacher points take a box derived
  from the crop with the median crop/landmark-box ratio of the other faces;
* a validation split by image (``fpezoo.training.in_validation_split``) picks
  the best epoch; AFLW2000-3D is never read here.

Usage::

    nice -n 10 python scripts/train_pretrained.py configs/pretrained_fpenet68_w32.json \\
        [--data-root ../shared/data] [--epochs N]

Run the same command again to resume an interrupted run.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np

DEFAULT_DATA = {
    "aflw_crops": "aflw-crops",
    "max_flip_disagreement": 0.1,
    "enlarge": 1.4142135623730951,
    "validation_fraction": 0.05,
    "augment": {"rotation": 30.0, "scale": 0.15, "translation": 0.08},
}


def merge_human_and_teacher(human, teacher, max_flip_disagreement):
    """One 68-point record per AFLW face: teacher points, human points where they exist.

    Args:
        human: AFLW-21 records of :func:`fpezoo.data.readers.read_aflw_crops`.
        teacher: ibug68 records of ``read_aflw_crops(teacher=True)`` (the faces
            the teacher found), matched to ``human`` by image path.
        max_flip_disagreement: teacher points of a face count only when its
            flip disagreement is at most this (NaN, a one-view face, never does).

    Returns:
        ``(records, has_teacher_box)``: ibug68 records (``box`` None for now)
        and, per record, whether the teacher found the face.
    """
    import dataclasses

    from fpezoo import schemes

    teacher_by_image = {record.image: record for record in teacher}
    merged, has_teacher_box = [], []
    for record in human:
        points, visible = schemes.convert_keypoints(record.keypoints, record.visibility,
                                                    "aflw21", "ibug68")
        guide = teacher_by_image.get(record.image)
        keypoints = np.full((68, 2), np.nan, dtype="float32")
        visibility = np.zeros(68, dtype="float32")
        if guide is not None:
            keypoints[:] = guide.keypoints
            if guide.metadata["flip_disagreement_nme"] <= max_flip_disagreement:
                visibility[:] = 1.0
        keypoints = np.where(visible[:, None] > 0, points, keypoints)
        visibility = np.maximum(visibility, visible)
        if not visibility.any():
            continue
        merged.append(dataclasses.replace(
            record, keypoints=keypoints, visibility=visibility, scheme="ibug68",
            source="aflw-crops+teacher",
            metadata={**record.metadata, "teacher_box": guide.landmark_box() if guide else None},
        ))
        has_teacher_box.append(guide is not None)
    return merged, np.array(has_teacher_box)


def frame_records(records, image_size):
    """Gives every record the face box of its crop framing and loads its image.

    Faces with teacher points take the box of the 68 teacher points; the others
    take a box centred in the crop with the median size ratio of the former.
    Images are decoded once, as grayscale arrays (the set fits in memory).
    """
    import dataclasses

    from fpezoo.data.records import read_image

    sides = [max(b[2] - b[0], b[3] - b[1]) for b in
             (r.metadata["teacher_box"] for r in records) if b is not None]
    ratio = float(np.median(sides)) / image_size
    half = image_size * ratio / 2.0
    centre = image_size / 2.0
    default_box = (centre - half, centre - half, centre + half, centre + half)
    framed = []
    for record in records:
        box = record.metadata["teacher_box"] or default_box
        metadata = {key: value for key, value in record.metadata.items() if key != "teacher_box"}
        framed.append(dataclasses.replace(
            record, image=read_image(record.image, "grayscale"), box=box,
            metadata={**metadata, "image_path": str(record.image)},
        ))
    return framed, ratio


def build_data(data_config, data_root, train_config, input_shape):
    """Training and validation datasets and their face counts."""
    from fpezoo.data import readers
    from fpezoo.data.augment import FaceAugmenter
    from fpezoo.data.pipeline import make_dataset
    from fpezoo.training import in_validation_split

    folder = pathlib.Path(data_root) / data_config["aflw_crops"]
    human = readers.read_aflw_crops(folder)
    teacher = readers.read_aflw_crops(folder, teacher=True)
    records, has_teacher_box = merge_human_and_teacher(
        human, teacher, data_config["max_flip_disagreement"])
    fraction, seed = data_config["validation_fraction"], train_config.get("seed", 0)
    in_validation = np.array([in_validation_split(r, fraction, seed) for r in records])
    records, crop_ratio = frame_records(records, image_size=input_size_of(folder))
    train = [r for r, v in zip(records, in_validation) if not v]
    validation = [r for r, v in zip(records, in_validation) if v]
    common = dict(input_shape=input_shape, color="grayscale", scheme="ibug68",
                  enlarge=data_config["enlarge"])
    batch_size = train_config["batch_size"]
    train_dataset = make_dataset(
        train, augment=FaceAugmenter(**data_config["augment"]), batch_size=batch_size,
        shuffle=True, seed=seed, repeat=True, drop_remainder=True, **common)
    validation_dataset = make_dataset(validation, batch_size=batch_size, **common)
    counts = {
        "train": len(train), "validation": len(validation),
        "with_teacher_box": int(has_teacher_box.sum()),
        "with_teacher_points": int(sum(r.visibility.sum() > 16 for r in records)),
        "median_landmark_box_to_crop_ratio": round(crop_ratio, 4),
    }
    return train_dataset, validation_dataset, counts


def input_size_of(folder):
    """Side of the (square) AFLW crops."""
    from fpezoo.data.records import image_size

    first = sorted((folder / "images").iterdir())[0]
    height, width = image_size(first)
    if height != width:
        raise ValueError(f"The AFLW crops must be square. Received: image_size={(height, width)}")
    return height


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="configs/pretrained_*.json")
    parser.add_argument("--data-root", default="../shared/data", help="the shared data folder")
    parser.add_argument("--epochs", type=int, help="overrides train.epochs")
    args = parser.parse_args(argv)

    import fpezoo
    from fpezoo.training import build_model, resolve_config

    recipe = json.loads(pathlib.Path(args.recipe).read_text(encoding="utf-8"))
    unknown = sorted(set(recipe) - {"train", "data"})
    if unknown:
        raise ValueError(f"A recipe has the keys 'train' and 'data'. Received: keys={unknown}")
    train_config = resolve_config(recipe["train"])
    if args.epochs is not None:
        train_config["epochs"] = args.epochs
    data_config = {**DEFAULT_DATA, **recipe.get("data", {})}
    input_shape = tuple(build_model(train_config).inputs[0].shape[1:])
    start = time.time()
    train_dataset, validation_dataset, counts = build_data(
        data_config, args.data_root, train_config, input_shape)
    print(json.dumps({"faces": counts, "data_seconds": round(time.time() - start, 1)}), flush=True)
    output_dir = pathlib.Path(train_config["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recipe.json").write_text(json.dumps(
        {"train": train_config, "data": data_config, "faces": counts}, indent=2))
    _, summary = fpezoo.train(train_config, train_data=train_dataset,
                              validation_data=validation_dataset,
                              num_train_faces=counts["train"])
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
