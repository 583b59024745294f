"""Which teacher-derived 68-point labels agree best with held-out human points (issue 30, item 2).

The recipe labels (``python scripts/train_pretrained.py runs/labels --recipe-labels``)
are the 3DDFA_V2 teacher's 68 points (``--teacher 3ddfa_v2``, faces whose flip
disagreement is at most 0.3), with AFLW's visible human points replacing the
teacher's at the 16 points that have an iBUG-68 counterpart. Wherever a human
point is missing (self-occluded points, the 52 other points, every MTFL face) the
label is the teacher's. This study scores candidate rules that make those teacher
points from the two teachers of ``../shared/data`` (3DDFA_V2 and MediaPipe FaceMesh)
against the human points they would stand in for:

* the faces are split by image exactly as ``fpezoo train`` splits the recipe's
  sources (:func:`fpezoo.data.records.in_validation_split` with the recipe's
  ``validation_fraction`` and ``seed``); every parameter of a rule (offsets,
  weights, agreement thresholds) is fitted on the training part only and every
  score is measured on the validation part only. AFLW2000-3D and MTFL's test
  list are never read;
* AFLW crops: the visible human points that map to iBUG-68 points
  (:func:`fpezoo.schemes.convert_keypoints`), NME over the crop side / sqrt 2;
  MTFL train: the five human points (eye centres against the mean of the
  teacher's six points of each eye), NME over the human eye-centre distance (the
  MTFL benchmark's normaliser), on-face rows only (:func:`mtfl_off_face`);
* scores are given per point group and per yaw bin (AFLW's ``yaw_deg``; the
  3DDFA_V2 teacher's yaw for MTFL). A rule is chosen by the mean of the three
  yaw bins of the AFLW validation faces over the points both annotations
  define alike (:data:`CHOICE_GROUPS`: eye corners and mouth corners). AFLW's
  brows, nose tip and nose wings and its chin follow other definitions than
  the iBUG-68 points they map to (``scripts/train_pretrained.py``,
  ``convention_offsets``): they are reported, never chosen on;
* a paired bootstrap over the validation images (resampled within each yaw
  bin) says whether the chosen rule's gain over today's labels is above noise.

The candidates (:func:`candidate_labels`) are a rule (``3ddfa_v2``, ``mediapipe``
(3DDFA_V2 where MediaPipe found no face), ``pose``: MediaPipe's eye and mouth
points below 30 degrees of yaw where it agrees with 3DDFA_V2, ``average``: an
agreement-gated weighted average of the two teachers' eye and mouth points)
times a correction of each teacher's points before the rule (``none``;
``global``: one mean teacher-minus-human offset per yaw bin in the face's frame,
moving all 68 points; ``per_point``: a mean offset per human point and yaw bin,
the global one at the other points).

Result (``docs/results/validation/label_study.json``, 786 AFLW validation faces):
``average/per_point`` (the corrected teachers' eye and mouth points averaged with
MediaPipe weights 0.8 / 0.6 / 0.2 per yaw bin where the two agree) scores 2.23 /
2.33 / 2.98 % against today's 3.09 / 2.98 / 3.24 % (mean of bins 2.51 against
3.10 %, gain 0.59 %, 95 % bootstrap interval 0.53-0.66); on MTFL's validation
faces 3.59 % against 5.49 % below 30 degrees. ``scripts/train_pretrained.py
--combine-teachers`` writes it. Binning the offsets by signed yaw instead of
|yaw| changed nothing (2.52 %). The score is agreement with AFLW's human points,
whose definitions differ from iBUG-68's: a model trained on the chosen labels
scored worse on AFLW2000-3D's fitted and re-annotated labels (see
``scripts/train_pretrained.py``), so a rule chosen here needs that check before
a recipe uses it.

Usage::

    nice -n 10 python scripts/label_study.py \\
        [--data-root ../shared/data] [--config configs/base/ibug68_3ddfa_v2.json] \\
        [--out docs/results/validation/label_study.json] [--bootstrap 2000]
"""

import argparse
import dataclasses
import json
import pathlib
import shlex
import sys
import types

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "base" / "ibug68_3ddfa_v2.json"
DEFAULT_OUT = PROJECT_ROOT / "docs" / "results" / "validation" / "label_study.json"
# The recipe's teacher filter (scripts/train_pretrained.py RECIPE_LABELS).
RECIPE_MAX_FLIP_DISAGREEMENT = 0.3
# |yaw| bins in degrees, as the AFLW2000-3D protocol bins faces: <= 30, 30-60, > 60.
YAW_BIN_EDGES = (30.0, 60.0)
YAW_BINS = ("0-30", "30-60", "60-90")
# iBUG-68 outer eye corners: the face frame's x axis.
LEFT_EYE_CORNER, RIGHT_EYE_CORNER = 36, 45
# The teacher points a rule may take from MediaPipe: the eyes and the mouth.
EYE_POINTS = tuple(range(36, 48))
MOUTH_POINTS = tuple(range(48, 68))
MIXED_POINTS = EYE_POINTS + MOUTH_POINTS
# AFLW's human points by group, as iBUG-68 indices (their aflw21 -> ibug68 counterparts).
AFLW_GROUPS = {
    "eye_corners": (36, 39, 42, 45),
    "mouth_corners": (48, 54),
    "nose": (30, 31, 35),
    "brows": (17, 19, 21, 22, 24, 26),
    "chin": (8,),
}
# MTFL's five points: left eye centre, right eye centre, nose tip, mouth corners.
MTFL_GROUPS = {"eye_centres": (0, 1), "mouth_corners": (3, 4), "nose": (2,)}
# Per-point corrections move the eyes and the mouth only (the points both annotations
# define alike): (iBUG points, (iBUG end, its human point), (iBUG end, its human point));
# each point takes the offsets of the two ends interpolated by where it lies between them.
# AFLW's human points are given by iBUG index here (load_aflw_crops turns them into its
# human point indices).
AFLW_REGIONS = ((tuple(range(36, 42)), (36, 36), (39, 39)), (tuple(range(42, 48)), (42, 42), (45, 45)),
                (MOUTH_POINTS, (48, 48), (54, 54)))
MTFL_REGIONS = ((tuple(range(36, 42)), (36, 0), (39, 0)), (tuple(range(42, 48)), (42, 1), (45, 1)),
                (MOUTH_POINTS, (48, 3), (54, 4)))
# The groups a rule is chosen on: points the human and the teacher define alike.
CHOICE_GROUPS = {"aflw-crops": ("eye_corners", "mouth_corners"),
                 "mtfl": ("eye_centres", "mouth_corners")}
TEACHERS = ("3ddfa_v2", "mediapipe")
RULES = ("3ddfa_v2", "mediapipe", "pose", "average")
CORRECTIONS = ("none", "global", "per_point")
BASELINE = "3ddfa_v2/none"
# The rule this study chose (docs/results/validation/label_study.json), which
# ``scripts/train_pretrained.py --combine-teachers`` writes.
COMBINED_RULE = "average/per_point"
# Grids searched on the training part.
AGREEMENT_GRID = (0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.1, 1.0)
WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
# MTFL rows are off the face when both teachers' five points lie farther than this
# (mean distance over the teacher's eye-centre distance) from the human ones.
MTFL_OFF_FACE_THRESHOLD = 0.2


@dataclasses.dataclass
class FaceSet:
    """One data set's faces, human points and teacher points, as arrays.

    Attributes:
        name: ``"aflw-crops"`` or ``"mtfl"``.
        images: (N,) image paths (what the training split hashes).
        human: (N, K, 2) human points, NaN where not visible.
        projection: (K, 68) rows that map 68 teacher points to the K human points.
        groups: ``{group name: human point indices}``.
        regions: ``((iBUG points, (iBUG end, human index), (iBUG end, human
            index)), ...)``, the points per-point corrections move (:func:`offsets68`).
        teachers: ``{teacher name: (N, 68, 2)}``, NaN where the teacher found no
            face (and ``"_pose"``: 3DDFA_V2's (N, 3) yaw, pitch, roll in degrees).
        flip: ``{teacher name: (N,)}`` flip disagreement (NaN: one view or none).
        yaw: (N,) yaw in degrees.
        norm: (N,) the NME normaliser in pixels.
        validation: (N,) bool, the face is in the training run's validation split.
        keep: (N,) bool, the face is scored (recipe teacher filter, on-face rows).
    """

    name: str
    images: np.ndarray
    human: np.ndarray
    projection: np.ndarray
    groups: dict
    regions: tuple
    teachers: dict
    flip: dict
    yaw: np.ndarray
    norm: np.ndarray
    validation: np.ndarray
    keep: np.ndarray


def validation_mask(images, fraction, seed):
    """Whether each image is in ``fpezoo train``'s validation split (by image, hashed with the seed).

    Args:
        images: image paths as the training records hold them (the folder and
            file name are hashed).
        fraction: the config's ``data.validation_fraction``.
        seed: the config's ``seed``.
    """
    from fpezoo.data.records import in_validation_split

    return np.array([in_validation_split(types.SimpleNamespace(image=pathlib.Path(image)), fraction, seed)
                     for image in images], dtype=bool)


def recipe_split(config_path=DEFAULT_CONFIG):
    """``(validation_fraction, seed)`` of a training config (:func:`fpezoo.training.load_config`,
    which follows its ``extends``; training's defaults where it sets neither)."""
    from fpezoo.training import DEFAULTS, load_config

    config = load_config(config_path)
    return (config.get("data", {}).get("validation_fraction", DEFAULTS["data"]["validation_fraction"]),
            config.get("seed", DEFAULTS["seed"]))


def yaw_bin(yaw):
    """Bin index (0, 1, 2) of each yaw in degrees by |yaw|: <= 30, 30-60, > 60."""
    magnitude = np.abs(np.asarray(yaw, dtype="float64"))
    return (magnitude > YAW_BIN_EDGES[0]).astype(int) + (magnitude > YAW_BIN_EDGES[1]).astype(int)


def face_frame(points68):
    """Per face (N, 2, 2) rotations into the face's frame and the (N,) box scale.

    The frame's x axis runs along the outer eye corners (36 -> 45) of
    ``points68``; the scale is sqrt(w h) of the points' box in that frame.
    """
    eye_line = points68[:, RIGHT_EYE_CORNER] - points68[:, LEFT_EYE_CORNER]
    cos, sin = (eye_line / np.linalg.norm(eye_line, axis=-1, keepdims=True)).T
    rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], axis=1)
    upright = np.einsum("nij,nkj->nki", rotation, points68)
    extent = upright.max(axis=1) - upright.min(axis=1)
    return rotation, np.sqrt(extent[:, 0] * extent[:, 1])


def project(points68, projection):
    """The (N, K, 2) human-scheme points of (N, 68, 2) teacher points."""
    return np.einsum("kj,njc->nkc", projection, points68)


# --------------------------------------------------------------------------- data
def aflw_layout():
    """``(mapped, projection, groups, regions)`` of the AFLW crops' human points.

    ``mapped``: the sorted iBUG indices of AFLW's 16 points with a counterpart
    (the human points' order); ``projection`` (16, 68) picks them; ``groups``
    and ``regions`` as :class:`FaceSet`'s, in human point indices.
    """
    mapped = sorted(index for indices in AFLW_GROUPS.values() for index in indices)
    projection = np.zeros((len(mapped), 68))
    projection[np.arange(len(mapped)), mapped] = 1.0
    groups = {name: tuple(mapped.index(i) for i in indices) for name, indices in AFLW_GROUPS.items()}
    regions = tuple((points, (a, mapped.index(ha)), (b, mapped.index(hb))) for points, (a, ha), (b, hb) in AFLW_REGIONS)
    return mapped, projection, groups, regions


def load_aflw_crops(data_root, fraction, seed, max_flip_disagreement=RECIPE_MAX_FLIP_DISAGREEMENT):
    """The AFLW crops as a :class:`FaceSet` (human points: their 16 iBUG-68 counterparts).

    Scored faces (``keep``) are those the recipe takes teacher points from
    (3DDFA_V2 flip disagreement at most ``max_flip_disagreement``).
    """
    from fpezoo import schemes

    folder = pathlib.Path(data_root) / "aflw-crops"
    with np.load(folder / "landmarks.npz") as arrays:
        names, pts21 = arrays["names"], arrays["pts21_crop"].astype("float64")
        visible, yaw = arrays["visible"], arrays["yaw_deg"].astype("float64")
    mapped, projection, groups, regions = aflw_layout()
    human = np.full((len(names), len(mapped), 2), np.nan)
    for row, (points, seen) in enumerate(zip(pts21, visible)):
        points68, visible68 = schemes.convert_keypoints(points, seen.astype("float32"), "aflw21", "ibug68")
        human[row] = np.where(visible68[mapped, None] > 0, points68[mapped], np.nan)
    teachers, flip = _load_teachers(folder, names, "aflw-crops")
    side = _crop_side(folder / "images" / str(names[0]))
    return FaceSet(
        name="aflw-crops", images=np.array([folder / "images" / str(n) for n in names], dtype=object),
        human=human, projection=projection, groups=groups, regions=regions, teachers=teachers, flip=flip, yaw=yaw,
        norm=np.full(len(names), side / np.sqrt(2.0)),
        validation=validation_mask([folder / "images" / str(n) for n in names], fraction, seed),
        keep=flip["3ddfa_v2"] <= max_flip_disagreement,
    )


def _crop_side(image):
    from fpezoo.data.records import image_size

    height, width = image_size(image)
    if height != width:
        raise ValueError(f"The AFLW crops must be square. Received: image_size={(height, width)}")
    return float(height)


def _load_teachers(folder, names, data_set):
    """``({teacher: (N, 68, 2)}, {teacher: (N,)})`` of a data set folder, checked against ``names``."""
    from fpezoo.data import readers

    teachers, flip = {}, {}
    for teacher in TEACHERS:
        path = readers.teacher_file(folder, teacher, data_set)
        with np.load(path) as arrays:
            teacher_names = [str(name).removeprefix("shared/data/mtfl/") for name in arrays["names"]]
            if teacher_names != [str(name) for name in names]:
                raise ValueError(f"{path} does not list the data set's faces in order. Received: path={str(path)!r}")
            teachers[teacher] = arrays["pts68"][:, :, :2].astype("float64")
            flip[teacher] = arrays["flip_disagreement_nme"].astype("float64")
        if teacher == "3ddfa_v2":
            with np.load(path) as arrays:
                teachers["_pose"] = arrays["pose_deg"].astype("float64")
    return teachers, flip


MTFL_PROJECTION = np.zeros((5, 68))
MTFL_PROJECTION[0, 36:42] = MTFL_PROJECTION[1, 42:48] = 1.0 / 6.0
MTFL_PROJECTION[2, 30] = MTFL_PROJECTION[3, 48] = MTFL_PROJECTION[4, 54] = 1.0


def mtfl_off_face(human, teachers, threshold=MTFL_OFF_FACE_THRESHOLD):
    """MTFL rows whose human five points lie off the face: every teacher found the face elsewhere.

    A teacher finds the face elsewhere when the mean distance between its five
    points (eye centres: the mean of its six points of each eye) and the human
    ones exceeds ``threshold`` times its eye-centre distance. A teacher that
    found no face has no say; a row no teacher labelled is kept.

    Args:
        human: (N, 5, 2) MTFL points.
        teachers: list of (N, 68, 2) teacher points (NaN where no face).
        threshold: the distance threshold, a fraction of the eye-centre distance.

    Returns:
        (N,) bool, True for off-face rows.
    """
    off = np.ones(len(human), dtype=bool)
    labelled = np.zeros(len(human), dtype=bool)
    for points68 in teachers:
        five = project(points68, MTFL_PROJECTION)
        distance = np.linalg.norm(five - human, axis=-1).mean(axis=1)
        eye_distance = np.linalg.norm(five[:, 1] - five[:, 0], axis=-1)
        found = np.isfinite(distance)
        off &= ~found | (distance > threshold * eye_distance)
        labelled |= found
    return off & labelled


def load_mtfl(data_root, fraction, seed, max_flip_disagreement=RECIPE_MAX_FLIP_DISAGREEMENT):
    """MTFL's training faces as a :class:`FaceSet`; returns ``(face_set, off_face_report)``.

    Scored faces (``keep``): on-face rows (:func:`mtfl_off_face`) whose 3DDFA_V2
    flip disagreement is at most ``max_flip_disagreement``. The yaw is the
    3DDFA_V2 teacher's; the normaliser the human eye-centre distance.
    """
    from fpezoo.data import readers

    folder = pathlib.Path(data_root) / "mtfl"
    names, rows = [], []
    for line in (folder / "train.txt").read_text().splitlines():
        if line.strip():
            fields = line.split()
            names.append(fields[0])
            values = np.asarray(fields[1:], dtype="float64")
            rows.append(np.stack([values[:5], values[5:]], axis=1))
    human = np.stack(rows)
    teachers, flip = _load_teachers(folder, names, "mtfl")
    off = mtfl_off_face(human, [teachers[t] for t in TEACHERS])
    images = [folder / name for name in names]
    centroid_rule = readers.find_off_face_rows([types.SimpleNamespace(
        keypoints=points, visibility=np.ones(5), image=image) for points, image in zip(human, images)])
    centroid_off = np.zeros(len(names), dtype=bool)
    centroid_off[centroid_rule.all] = True
    web = np.array([name.startswith("net_") for name in names])
    report = {
        "rule": f"both teachers' five points (eye centres: mean of the six eye points) lie more than "
                f"{MTFL_OFF_FACE_THRESHOLD} of their eye-centre distance from the human ones, on average",
        "rows": len(names), "web_rows": int(web.sum()), "dropped": int(off.sum()),
        "dropped_web": int((off & web).sum()), "dropped_lfw": int((off & ~web).sum()),
        "find_off_face_rows_flags": int(centroid_off.sum()),
        "flagged_by_both_rules": int((off & centroid_off).sum()),
    }
    face_set = FaceSet(
        name="mtfl", images=np.array(images, dtype=object), human=human, projection=MTFL_PROJECTION,
        groups=dict(MTFL_GROUPS), regions=MTFL_REGIONS, teachers=teachers, flip=flip, yaw=teachers["_pose"][:, 0],
        norm=np.linalg.norm(human[:, 1] - human[:, 0], axis=-1),
        validation=validation_mask(images, fraction, seed),
        keep=~off & (flip["3ddfa_v2"] <= max_flip_disagreement),
    )
    return face_set, report


# --------------------------------------------------------------------------- scoring
def point_errors(points68, face_set):
    """(N, K) distances from the projected labels to the human points over the normaliser (NaN: no human point)."""
    predicted = project(points68, face_set.projection)
    return np.linalg.norm(predicted - face_set.human, axis=-1) / face_set.norm[:, None]


def face_nme(errors, indices):
    """(N,) mean error per face over the human points ``indices`` it has (NaN when it has none)."""
    subset = errors[:, list(indices)]
    counts = np.isfinite(subset).sum(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, np.nansum(subset, axis=1) / np.maximum(counts, 1), np.nan)


def binned_nme(per_face, bins, mask):
    """``(per-bin means, mean of the bins, per-bin face counts)`` of the finite per-face NMEs in ``mask``.

    The mean of the bins is over the bins that hold a face (MTFL has no face beyond 60 degrees).
    """
    means, counts = [], []
    for index in range(len(YAW_BINS)):
        values = per_face[mask & (bins == index) & np.isfinite(per_face)]
        means.append(float(values.mean()) if len(values) else float("nan"))
        counts.append(int(len(values)))
    present = [mean for mean, count in zip(means, counts) if count]
    return means, float(np.mean(present)) if present else float("nan"), counts


def choice_indices(face_set):
    """The human point indices a rule is chosen on (:data:`CHOICE_GROUPS`)."""
    return tuple(i for group in CHOICE_GROUPS[face_set.name] for i in face_set.groups[group])


def score(points68, face_set, mask):
    """Per-bin and per-group NME (percent) of labels against the human points on ``mask``.

    Returns:
        ``{"choice": {...}, "groups": {group: {...}}}``, each ``{"bins":
        {bin: NME %}, "mean_of_bins": NME %, "faces": {bin: count}}``; ``choice``
        is over :func:`choice_indices`.
    """
    errors = point_errors(points68, face_set)
    bins = yaw_bin(face_set.yaw)

    def summary(indices):
        means, mean, counts = binned_nme(face_nme(errors, indices), bins, mask)
        return {"bins": {b: round(100 * m, 3) for b, m in zip(YAW_BINS, means)},
                "mean_of_bins": round(100 * mean, 3), "faces": dict(zip(YAW_BINS, counts))}

    return {"choice": summary(choice_indices(face_set)),
            "groups": {group: summary(indices) for group, indices in face_set.groups.items()}}


# --------------------------------------------------------------------------- corrections
def fit_offsets(points68, face_set, mask, frame):
    """Mean teacher-minus-human offsets per yaw bin, in the face's frame over its box scale.

    Args:
        points68: (N, 68, 2) teacher points (NaN where no face).
        face_set: the :class:`FaceSet`.
        mask: (N,) the faces fitted on (the training part).
        frame: ``(rotations, scales)`` of :func:`face_frame`.

    Returns:
        ``{"global": (3, 2), "points": (3, K, 2)}``: the mean over the choice
        points of a bin (zero where no face) and per human point (the global
        one where no face).
    """
    rotation, scale = frame
    residual = project(points68, face_set.projection) - face_set.human
    residual = np.einsum("nij,nkj->nki", rotation, residual) / scale[:, None, None]
    bins = yaw_bin(face_set.yaw)
    choice = list(choice_indices(face_set))
    offsets = {"global": np.zeros((len(YAW_BINS), 2)),
               "points": np.zeros((len(YAW_BINS), face_set.human.shape[1], 2))}
    for index in range(len(YAW_BINS)):
        in_bin = residual[mask & (bins == index)]
        chosen = in_bin[:, choice].reshape(-1, 2)
        chosen = chosen[np.isfinite(chosen).all(axis=1)]
        if len(chosen):
            offsets["global"][index] = chosen.mean(axis=0)
        for point in range(in_bin.shape[1]):
            values = in_bin[:, point]
            values = values[np.isfinite(values).all(axis=1)]
            offsets["points"][index, point] = values.mean(axis=0) if len(values) else offsets["global"][index]
    return offsets


def offsets68(offsets, points68, yaw, frame, regions=None):
    """(N, 68, 2) offset of every iBUG point of every face: its yaw bin's global one, or per point.

    Args:
        offsets: :func:`fit_offsets`' result (arrays).
        points68: (N, 68, 2) the teacher's points (where each region point lies).
        yaw: (N,) yaw in degrees.
        frame: ``(rotations, scales)`` of :func:`face_frame`.
        regions: None for the global offsets only; else :attr:`FaceSet.regions`:
            a region point at fraction t of the way from its first end to its
            second (measured along the face frame's x axis between the teacher's
            end points, clipped to [0, 1]) takes ``(1 - t) first + t second``
            of the two ends' human points' offsets.
    """
    bins = yaw_bin(yaw)
    table = np.repeat(np.asarray(offsets["global"])[bins][:, None, :], 68, axis=1)
    if regions:
        rotation = frame[0]
        point_offsets = np.asarray(offsets["points"])[bins]
        for points, (start, first), (stop, second) in regions:
            columns = list(points)
            upright_x = np.einsum("nj,nkj->nk", rotation[:, 0], points68)
            start_x, stop_x = upright_x[:, start], upright_x[:, stop]
            span = np.where(np.abs(stop_x - start_x) > 1e-9, stop_x - start_x, 1.0)
            t = np.clip((upright_x[:, columns] - start_x[:, None]) / span[:, None], 0.0, 1.0)[..., None]
            table[:, columns] = ((1.0 - t) * point_offsets[:, first][:, None, :]
                                 + t * point_offsets[:, second][:, None, :])
    return table


def apply_offsets(points68, table, frame):
    """The points minus their offsets (:func:`offsets68`), turned back to image axes and pixels."""
    rotation, scale = frame
    shift = table * scale[:, None, None]
    return points68 - np.einsum("nji,nkj->nki", rotation, shift)


# --------------------------------------------------------------------------- rules
def teacher_disagreement(first, second, frame, points=MIXED_POINTS):
    """(N,) mean distance between two teachers' ``points`` over the face's box scale (NaN if one is missing)."""
    distance = np.linalg.norm(first[:, list(points)] - second[:, list(points)], axis=-1).mean(axis=1)
    return distance / frame[1]


def mixed(base, other, weight, points=MIXED_POINTS):
    """``base`` with ``points`` moved to ``(1 - weight) base + weight other`` ((N,) weights; 0 where NaN)."""
    weight = np.where(np.isfinite(weight), weight, 0.0)[:, None, None]
    result = base.copy()
    columns = list(points)
    usable = weight > 0
    blended = (1.0 - weight) * base[:, columns] + weight * np.nan_to_num(other[:, columns])
    result[:, columns] = np.where(usable, blended, base[:, columns])
    return result


def pose_rule(base, other, yaw, disagreement, max_disagreement, max_abs_yaw=YAW_BIN_EDGES[0]):
    """MediaPipe's eye and mouth points where |yaw| <= ``max_abs_yaw``, it found the face and agrees."""
    use = (np.abs(yaw) <= max_abs_yaw) & np.isfinite(other).all(axis=(1, 2)) & (disagreement <= max_disagreement)
    return mixed(base, other, use.astype("float64"))


def average_rule(base, other, yaw, disagreement, weights, thresholds):
    """Per yaw bin, ``weights[bin]`` of MediaPipe's eye and mouth points where it agrees within ``thresholds[bin]``."""
    bins = yaw_bin(yaw)
    weight = np.asarray(weights, dtype="float64")[bins]
    agrees = np.isfinite(other).all(axis=(1, 2)) & (disagreement <= np.asarray(thresholds)[bins])
    return mixed(base, other, np.where(agrees, weight, 0.0))


def _train_bin_means(points68, face_set, mask):
    """Per-bin choice-point NME of labels on ``mask`` (what the rules' parameters are fitted to)."""
    per_face = face_nme(point_errors(points68, face_set), choice_indices(face_set))
    return binned_nme(per_face, yaw_bin(face_set.yaw), mask)[0]


def candidate_labels(face_set, train, names=None):
    """Candidates' (N, 68, 2) labels, each fitting its parameters on the ``train`` faces only.

    Each teacher's points are first corrected (``none``, ``global`` or
    ``per_point`` offsets of :func:`fit_offsets`), then combined by a rule:
    ``3ddfa_v2``; ``mediapipe`` (3DDFA_V2 where MediaPipe found no face);
    ``pose`` (:func:`pose_rule`, its agreement threshold fitted);
    ``average`` (:func:`average_rule`, a weight and an agreement threshold
    fitted per yaw bin from :data:`WEIGHT_GRID` and :data:`AGREEMENT_GRID`).

    Args:
        face_set: the :class:`FaceSet`.
        train: (N,) bool, the faces parameters are fitted on.
        names: the ``"rule/correction"`` names wanted; None for all of
            :data:`RULES` times :data:`CORRECTIONS`.

    Returns:
        ``(labels, parameters)``: ``{"rule/correction": (N, 68, 2)}`` and the
        fitted parameters (JSON-ready; offsets as fractions of the face's box
        in its frame, per yaw bin).
    """
    names = [f"{rule}/{correction}" for correction in CORRECTIONS for rule in RULES] if names is None else list(names)
    unknown = [name for name in names if name.partition("/")[0] not in RULES
               or name.partition("/")[2] not in CORRECTIONS]
    if unknown:
        raise ValueError(f"Candidates are 'rule/correction' with a rule of {RULES} and a correction of "
                         f"{CORRECTIONS}. Received: names={unknown}")
    frame = face_frame(face_set.teachers["3ddfa_v2"])
    parameters, labels = {}, {}
    for correction in CORRECTIONS:
        wanted = [name for name in names if name.endswith("/" + correction)]
        if not wanted:
            continue
        corrected = {}
        for teacher in TEACHERS:
            points = face_set.teachers[teacher]
            if correction != "none":
                key = f"offsets/{teacher}"
                if key not in parameters:
                    parameters[key] = {name: value.tolist() for name, value in
                                       fit_offsets(points, face_set, train, frame).items()}
                table = offsets68(parameters[key], points, face_set.yaw, frame,
                                  face_set.regions if correction == "per_point" else None)
                points = apply_offsets(points, table, frame)
            corrected[teacher] = points
        base, other = corrected["3ddfa_v2"], corrected["mediapipe"]
        disagreement = teacher_disagreement(base, other, frame)
        found = np.isfinite(other).all(axis=(1, 2))
        for name in wanted:
            rule = name.partition("/")[0]
            if rule == "3ddfa_v2":
                labels[name] = base
            elif rule == "mediapipe":
                labels[name] = np.where(found[:, None, None], other, base)
            elif rule == "pose":
                parameters[name] = {"max_disagreement": min(AGREEMENT_GRID, key=lambda t: np.nanmean(
                    _train_bin_means(pose_rule(base, other, face_set.yaw, disagreement, t), face_set, train)))}
                labels[name] = pose_rule(base, other, face_set.yaw, disagreement,
                                         parameters[name]["max_disagreement"])
            else:
                grid = [(float(w), t) for w in WEIGHT_GRID for t in AGREEMENT_GRID]
                bin_means = np.array([_train_bin_means(average_rule(base, other, face_set.yaw, disagreement,
                                                                    [w] * 3, [t] * 3), face_set, train)
                                      for w, t in grid])
                best = [grid[int(np.argmin(np.nan_to_num(column, nan=np.inf)))] for column in bin_means.T]
                parameters[name] = {"weights": [w for w, _ in best], "max_disagreement": [t for _, t in best]}
                labels[name] = average_rule(base, other, face_set.yaw, disagreement, parameters[name]["weights"],
                                            parameters[name]["max_disagreement"])
    return labels, parameters


def combined_labels(data_root, data_set, fraction, seed, rule=None):
    """The chosen rule's 68 points of every face of a data set, fitted on its training split.

    For ``scripts/train_pretrained.py --combine-teachers``: the rule's
    parameters are fitted on the scored faces outside the validation split
    (``fraction``, ``seed``: the training config's), and the rule labels every
    face (off-face MTFL rows included: only their human points are wrong).

    Args:
        data_root: the shared data folder.
        data_set: ``"aflw-crops"`` or ``"mtfl"``.
        fraction, seed: the training config's split (:func:`recipe_split`).
        rule: a ``"rule/correction"`` name; None for :data:`COMBINED_RULE`.

    Returns:
        ``(points_by_image, parameters)``: ``{(folder name, file name): (68, 2)}``
        and the fitted parameters.
    """
    rule = COMBINED_RULE if rule is None else rule
    if data_set == "aflw-crops":
        face_set = load_aflw_crops(data_root, fraction, seed)
    elif data_set == "mtfl":
        face_set = load_mtfl(data_root, fraction, seed)[0]
    else:
        raise ValueError(f"data_set must be 'aflw-crops' or 'mtfl'. Received: data_set={data_set!r}")
    labels, parameters = candidate_labels(face_set, face_set.keep & ~face_set.validation, [rule])
    points = {(image.parent.name, image.name): value for image, value in zip(face_set.images, labels[rule])}
    return points, {"rule": rule, **parameters}


# --------------------------------------------------------------------------- noise
def paired_bootstrap(candidate, baseline, bins, resamples=2000, seed=0):
    """Bootstrap of the gain in the mean-of-bins NME, faces resampled within each yaw bin.

    Args:
        candidate, baseline: (N,) per-face NMEs of the same faces (finite).
        bins: (N,) yaw bin index of each face.
        resamples: bootstrap draws.
        seed: the random seed.

    Returns:
        ``{"gain": baseline - candidate mean of bins, "ci95": [low, high],
        "p_no_gain": share of draws whose gain is <= 0}``, in NME percent.
    """
    rng = np.random.default_rng(seed)
    difference = baseline - candidate
    draws = np.zeros(resamples)
    present = [index for index in range(len(YAW_BINS)) if (bins == index).any()]
    for index in present:
        values = difference[bins == index]
        picks = rng.integers(0, len(values), size=(resamples, len(values)))
        draws += values[picks].mean(axis=1) / len(present)
    gain = float(np.mean([difference[bins == index].mean() for index in present]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"gain": round(100 * gain, 4), "ci95": [round(100 * float(low), 4), round(100 * float(high), 4)],
            "p_no_gain": round(float((draws <= 0).mean()), 4)}


# --------------------------------------------------------------------------- study
def study(face_set, resamples=2000):
    """Fits every candidate on ``face_set``'s training part and scores it on its validation part.

    Returns:
        ``{"faces": ..., "parameters": ..., "candidates": {name: score},
        "bootstrap": {name: paired_bootstrap against BASELINE}}``.
    """
    train = face_set.keep & ~face_set.validation
    validation = face_set.keep & face_set.validation
    labels, parameters = candidate_labels(face_set, train)
    bins = yaw_bin(face_set.yaw)
    scores, bootstrap = {}, {}
    choice = choice_indices(face_set)
    baseline = face_nme(point_errors(labels[BASELINE], face_set), choice)
    for name, points in labels.items():
        scores[name] = {"validation": score(points, face_set, validation),
                        "train": score(points, face_set, train)["choice"]}
        per_face = face_nme(point_errors(points, face_set), choice)
        paired = validation & np.isfinite(per_face) & np.isfinite(baseline)
        bootstrap[name] = paired_bootstrap(per_face[paired], baseline[paired], bins[paired], resamples)
    with_mediapipe = validation & np.isfinite(face_set.teachers["mediapipe"]).all(axis=(1, 2))
    mediapipe_subset = {name: score(labels[name], face_set, with_mediapipe)["choice"]
                        for name in ("3ddfa_v2/none", "mediapipe/none")}
    faces = {"all": int(len(face_set.images)), "scored": int(face_set.keep.sum()),
             "train": int(train.sum()), "validation": int(validation.sum()),
             "validation_with_mediapipe": int(with_mediapipe.sum()),
             "validation_by_bin": {b: int((validation & (bins == i)).sum()) for i, b in enumerate(YAW_BINS)}}
    return {"faces": faces, "parameters": parameters, "candidates": scores, "bootstrap": bootstrap,
            "validation_faces_mediapipe_labelled": mediapipe_subset}


def best_candidate(result):
    """The candidate with the lowest validation mean-of-bins NME on the choice points."""
    return min(result["candidates"], key=lambda name: result["candidates"][name]["validation"]["choice"]["mean_of_bins"])


def table(result, title):
    """A plain-text table of a :func:`study` result (validation NME %, choice points and groups)."""
    groups = list(next(iter(result["candidates"].values()))["validation"]["groups"])
    header = (f"{title}\n{'candidate':<22}" + "".join(f"{b:>8}" for b in YAW_BINS) + f"{'mean':>8}"
              + "".join(f"{g[:12]:>13}" for g in groups) + f"{'gain':>8}{'95% CI':>18}")
    lines = [header]
    for name, scores in result["candidates"].items():
        choice = scores["validation"]["choice"]
        boot = result["bootstrap"][name]
        lines.append(f"{name:<22}" + "".join(f"{choice['bins'][b]:8.3f}" for b in YAW_BINS)
                     + f"{choice['mean_of_bins']:8.3f}"
                     + "".join(f"{scores['validation']['groups'][g]['mean_of_bins']:13.3f}" for g in groups)
                     + f"{boot['gain']:8.3f}  [{boot['ci95'][0]:6.3f}, {boot['ci95'][1]:6.3f}]")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=str(PROJECT_ROOT.parent / "shared" / "data"),
                        help="the shared data folder")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="the training config whose validation split is used")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the result JSON")
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap draws")
    args = parser.parse_args(argv)
    fraction, seed = recipe_split(args.config)
    aflw = load_aflw_crops(args.data_root, fraction, seed)
    mtfl, off_face = load_mtfl(args.data_root, fraction, seed)
    results = {"aflw-crops": study(aflw, resamples=args.bootstrap),
               "mtfl": study(mtfl, resamples=args.bootstrap)}
    best = best_candidate(results["aflw-crops"])
    output = {
        "command": "python " + " ".join(shlex.quote(a) for a in ["scripts/label_study.py", *(argv or sys.argv[1:])]),
        "split": {"config": pathlib.Path(args.config).resolve().relative_to(PROJECT_ROOT).as_posix()
                  if pathlib.Path(args.config).resolve().is_relative_to(PROJECT_ROOT) else args.config,
                  "validation_fraction": fraction, "seed": seed,
                  "function": "fpezoo.data.records.in_validation_split"},
        "normalisers": {"aflw-crops": "crop side / sqrt 2", "mtfl": "human eye-centre distance"},
        "scored_faces": f"3DDFA_V2 flip disagreement <= {RECIPE_MAX_FLIP_DISAGREEMENT} (the recipe's teacher "
                        "faces); MTFL: on-face rows only",
        "choice": {"points": CHOICE_GROUPS, "criterion": "mean of the yaw bins' validation NME, AFLW crops",
                   "baseline": BASELINE, "best": best,
                   "best_bootstrap": results["aflw-crops"]["bootstrap"][best]},
        "reported_not_chosen_on": "AFLW's nose (tip, wings), brows and chin follow other definitions than "
                                  "the iBUG-68 points they map to; per-point corrections leave them to the "
                                  "global offset",
        "labels_command": "python scripts/train_pretrained.py runs/labels/aflw_crops_combined.json --teacher "
                          "3ddfa_v2 --max-flip-disagreement 0.3 --combine-teachers (and --data-set mtfl "
                          "runs/labels/mtfl_combined.json)",
        "mtfl_off_face": off_face,
        "results": results,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(output, indent=1) + "\n")
    for name, result in results.items():
        print(table(result, f"{name}: validation NME % (choice points by yaw bin, groups' mean of bins; "
                            f"gain over {BASELINE} with a paired bootstrap)"))
        print()
    print(json.dumps({"best": best, **output["choice"]["best_bootstrap"], "mtfl_off_face": off_face}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
