"""Readers of the landmark formats fpezoo trains and evaluates on.

Every reader returns :class:`~fpezoo.data.records.LandmarkRecord` objects in
fpezoo's coordinate convention (pixel centres at integer coordinates, see
``docs/DESIGN.md``). Images are not decoded: a record holds the image path.

Error handling is the same everywhere:

* a malformed file raises ``ValueError`` naming the file and the line (text
  formats) or the entry (JSON, ``.npz``);
* images listed in a file but absent from the disk are reported, never skipped
  silently: by default a :class:`MissingImagesError` lists them; with
  ``on_missing_image="drop"`` the records are left out and a warning lists them.
"""

import dataclasses
import json
import pathlib
import re
import warnings

import numpy as np

from fpezoo import schemes
from fpezoo.data.records import LandmarkRecord, image_size, landmark_box
from fpezoo.imageio import IMAGE_SUFFIXES

ON_MISSING_IMAGE = ("raise", "drop")

# mmpose's COCO-style face sets: dataset token -> (scheme name, points, 1-based coordinates).
# mmpose copies the iBUG ``.pts`` values of 300-W and 300-VW unchanged (checked on the
# 300-VW fixture, whose JSON equals its ``.pts`` files), so they are 1-based like the
# ``.pts`` files; the other converters write 0-based pixel coordinates.
COCO_DATASETS = {
    "300w": ("ibug68", 68, True),
    "300vw": ("ibug68", 68, True),
    "300wlp": ("ibug68", 68, False),
    "wflw": ("wflw98", 98, False),
    "cofw": ("cofw29", 29, False),
    "aflw": ("aflw19", 19, False),
    "lapa": ("lapa106", 106, False),
}


class MissingImagesError(FileNotFoundError):
    """Images named by a label file do not exist.

    Attributes:
        missing: list of the missing image paths.
    """

    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = missing


# --------------------------------------------------------------------------- helpers
def _check_on_missing(on_missing_image):
    if on_missing_image not in ON_MISSING_IMAGE:
        raise ValueError(
            f"on_missing_image must be one of {ON_MISSING_IMAGE}. "
            f"Received: on_missing_image={on_missing_image!r}"
        )


def _report_missing_images(records, label_file, on_missing_image):
    """Raises or warns about records whose image file does not exist."""
    missing = [record for record in records if not record.image.is_file()]
    if not missing:
        return records
    paths = [str(record.image) for record in missing]
    examples = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
    if on_missing_image == "raise":
        raise MissingImagesError(
            f"{len(paths)} of the {len(records)} images listed in {label_file} do not exist "
            f"({examples}); pass on_missing_image='drop' to leave these faces out. "
            f"Received: path={str(label_file)!r}",
            paths,
        )
    warnings.warn(
        f"Left out {len(paths)} of the {len(records)} faces of {label_file} because their "
        f"images do not exist: {paths}",
        stacklevel=3,
    )
    missing_ids = {id(record) for record in missing}
    return [record for record in records if id(record) not in missing_ids]


def _scheme_name_for_count(num_keypoints, prefix):
    try:
        return schemes.scheme_for_num_keypoints(num_keypoints).name
    except ValueError:
        return f"{prefix}{num_keypoints}"


def _load_npz(path, required):
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label file not found. Received: path={str(path)!r}")
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {path} as .npz ({error}). Received: path={str(path)!r}") from None
    with arrays:
        absent = [key for key in required if key not in arrays.files]
        if absent:
            raise ValueError(
                f"{path} lacks the arrays {absent} (it has {arrays.files}). "
                f"Received: path={str(path)!r}"
            )
        loaded = {key: arrays[key] for key in required}
    count = len(loaded[required[0]])
    for key, value in loaded.items():
        if len(value) != count:
            raise ValueError(
                f"In {path}, array '{key}' has {len(value)} entries but '{required[0]}' has "
                f"{count}. Received: path={str(path)!r}"
            )
    return loaded


# --------------------------------------------------------------------------- iBUG .pts
def read_pts(path, image=None, one_based=True, scheme=None, source="pts"):
    """Reads one iBUG ``.pts`` file (version 1).

    ``.pts`` coordinates are 1-based (the top-left pixel centre is ``(1, 1)``),
    as menpo and the 300-W tools take them; ``one_based=True`` subtracts 1 to
    reach fpezoo's 0-based convention. The box is the landmark box.

    Args:
        path: the ``.pts`` file.
        image: its image; by default the file next to it with the same stem
            and an image suffix (``.jpg``, ``.png``, ...).
        one_based: the file's coordinates are 1-based.
        scheme: scheme name; by default the fpezoo scheme with that many points
            (68 -> ``"ibug68"``), else ``"pts<K>"``.
        source: the record's source name.

    Returns:
        A :class:`LandmarkRecord`.

    Raises:
        FileNotFoundError: the file, or its image, does not exist.
        ValueError: the file is malformed (the message names the line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label file not found. Received: path={str(path)!r}")
    lines = [(number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line]
    header = {}
    position = 0
    while position < len(lines) and lines[position][1] != "{":
        number, line = lines[position]
        key, separator, value = line.partition(":")
        if not separator:
            raise ValueError(
                f"{path}, line {number}: expected 'version: 1', 'n_points: N' or '{{'. "
                f"Received: line={line!r}"
            )
        header[key.strip()] = value.strip()
        position += 1
    if "n_points" not in header or not header["n_points"].isdigit():
        raise ValueError(
            f"{path}: the header must give 'n_points: N' before '{{'. Received: header={header}"
        )
    num_points = int(header["n_points"])
    body = lines[position + 1:position + 1 + num_points]
    closing = lines[position + 1 + num_points:position + 2 + num_points]
    if position == len(lines) or len(body) < num_points or not closing or closing[0][1] != "}":
        raise ValueError(
            f"{path}: expected '{{', {num_points} lines 'x y' and '}}'. "
            f"Received: lines={len(lines)}"
        )
    points = np.empty((num_points, 2), dtype="float64")
    for index, (number, line) in enumerate(body):
        try:
            x, y = (float(value) for value in line.split())
        except ValueError:
            raise ValueError(
                f"{path}, line {number}: expected two numbers 'x y'. Received: line={line!r}"
            ) from None
        points[index] = (x, y)
    if one_based:
        points -= 1.0
    if image is None:
        candidates = [path.with_suffix(suffix) for suffix in IMAGE_SUFFIXES]
        image = next((candidate for candidate in candidates if candidate.is_file()), None)
        if image is None:
            raise FileNotFoundError(
                f"No image next to {path} (looked for the suffixes {IMAGE_SUFFIXES}); pass "
                f"`image=`. Received: path={str(path)!r}"
            )
    elif not pathlib.Path(image).is_file():
        raise FileNotFoundError(f"The image of {path} does not exist. Received: image={str(image)!r}")
    visibility = np.ones(num_points, dtype="float32")
    return LandmarkRecord(
        image=image,
        keypoints=points,
        visibility=visibility,
        box=landmark_box(points),
        scheme=scheme or _scheme_name_for_count(num_points, "pts"),
        source=source,
        metadata={"origin": str(path)},
    )


# --------------------------------------------------------------------------- COCO (mmpose)
def _coco_dataset(path, dataset, num_keypoints):
    """``(scheme, one_based)`` of an mmpose face set, named or guessed from the file name."""
    if dataset is None:
        tokens = re.split(r"[^0-9a-z]+", path.stem.lower())
        dataset = next((token for token in tokens if token in COCO_DATASETS), None)
        if dataset is None:
            return _scheme_name_for_count(num_keypoints, "coco"), False
    if dataset not in COCO_DATASETS:
        raise ValueError(
            f"Unknown mmpose data set; known ones are {sorted(COCO_DATASETS)}. "
            f"Received: dataset={dataset!r}"
        )
    scheme, expected, one_based = COCO_DATASETS[dataset]
    if expected != num_keypoints:
        raise ValueError(
            f"{path}: data set '{dataset}' has {expected} points but the annotations have "
            f"{num_keypoints}. Received: dataset={dataset!r}"
        )
    return scheme, one_based


def _load_json(path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label file not found. Received: path={str(path)!r}")
    try:
        return path, json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}. "
            f"Received: path={str(path)!r}"
        ) from None


def read_coco_keypoints(
    path, image_root=None, dataset=None, scheme=None, one_based=None, on_missing_image="raise"
):
    """Reads face keypoints from a COCO-style JSON file as mmpose writes it.

    Each annotation becomes a record. ``keypoints`` is ``[x1, y1, v1, ...]``
    with COCO's flags (0 = unlabelled, 1 = labelled but hidden, 2 = visible);
    like mmpose, fpezoo supervises every labelled point (``v > 0``) and sets
    unlabelled ones to NaN with visibility 0. ``bbox`` ``[x, y, w, h]`` gives
    the face box; without it the landmark box is used.

    Schemes: 300-W, 300-W-LP, 300-VW -> ``"ibug68"``; WFLW -> ``"wflw98"``;
    COFW, AFLW (mmpose's 19 points), LaPa keep their own layouts
    (``"cofw29"``, ``"aflw19"``, ``"lapa106"``).

    Args:
        path: the JSON file.
        image_root: folder the ``file_name`` entries are relative to
            (default: the JSON file's folder).
        dataset: one of ``COCO_DATASETS`` (``"300w"``, ``"wflw"``, ...); by
            default guessed from the file name (``test_wflw.json`` -> ``"wflw"``),
            else the scheme follows the point count.
        scheme: overrides the scheme name.
        one_based: subtract 1 from the coordinates; by default True for
            300-W and 300-VW (copied from 1-based ``.pts`` files), else False.
        on_missing_image: ``"raise"`` or ``"drop"`` (with a warning).

    Returns:
        A list of :class:`LandmarkRecord`.

    Raises:
        ValueError: on a malformed file or entry (named in the message).
        MissingImagesError: images that do not exist (with ``"raise"``).
    """
    _check_on_missing(on_missing_image)
    path, content = _load_json(path)
    if not isinstance(content, dict) or not {"images", "annotations"} <= set(content):
        raise ValueError(
            f"{path} is not COCO keypoints JSON: it needs 'images' and 'annotations'. "
            f"Received: keys={sorted(content) if isinstance(content, dict) else type(content).__name__}"
        )
    image_root = pathlib.Path(image_root) if image_root is not None else path.parent
    images = {}
    for index, entry in enumerate(content["images"]):
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise ValueError(
                f"{path}, images[{index}]: needs 'id' and 'file_name'. Received: entry={entry!r}")
        images[entry["id"]] = entry
    parsed = []
    for index, annotation in enumerate(content["annotations"]):
        where = f"{path}, annotations[{index}]"
        flat = annotation.get("keypoints") if isinstance(annotation, dict) else None
        if not isinstance(flat, list) or not flat or len(flat) % 3:
            raise ValueError(
                f"{where}: 'keypoints' must be a list [x1, y1, v1, ...]. Received: keypoints={flat!r}")
        if annotation.get("image_id") not in images:
            raise ValueError(
                f"{where}: its image_id is not among the file's images. "
                f"Received: image_id={annotation.get('image_id')!r}"
            )
        try:
            values = np.asarray(flat, dtype="float64").reshape(-1, 3)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: keypoints must be numbers. Received: keypoints={flat!r}") from None
        if parsed and len(values) != len(parsed[0][1]):
            raise ValueError(
                f"{where}: {len(values)} keypoints, but the first annotation has "
                f"{len(parsed[0][1])}. Received: num_keypoints={len(values)}"
            )
        parsed.append((where, values, annotation))
    if not parsed:
        return []
    num_keypoints = len(parsed[0][1])
    if dataset is not None or scheme is None or one_based is None:  # else nothing to guess
        dataset_scheme, dataset_one_based = _coco_dataset(path, dataset, num_keypoints)
        scheme = scheme or dataset_scheme
        one_based = dataset_one_based if one_based is None else one_based
    offset = 1.0 if one_based else 0.0
    records = []
    for where, values, annotation in parsed:
        visibility = (values[:, 2] > 0).astype("float32")
        keypoints = np.where(visibility[:, None] > 0, values[:, :2] - offset, np.nan)
        box = annotation.get("bbox")
        if box is not None:
            if len(box) != 4 or not box[2] > 0 or not box[3] > 0:
                raise ValueError(f"{where}: bbox must be [x, y, w, h] with w, h > 0. Received: bbox={box!r}")
            box = (box[0] - offset, box[1] - offset, box[0] + box[2] - offset, box[1] + box[3] - offset)
        else:
            box = landmark_box(keypoints, visibility)
        image = images[annotation["image_id"]]
        records.append(LandmarkRecord(
            image=image_root / image["file_name"],
            keypoints=keypoints,
            visibility=visibility,
            box=box,
            scheme=scheme,
            source=path.stem,
            metadata={"origin": where},
        ))
    return _report_missing_images(records, path, on_missing_image)


# --------------------------------------------------------------------------- TAO FPENet JSON
_TAO_POINT_KEY = re.compile(r"^P(\d+)(x|y|occluded)$")
_TAO_BOX_KEYS = ("face_tight_bboxx", "face_tight_bboxy", "face_tight_bboxwidth", "face_tight_bboxheight")


def _tao_points(annotation, where):
    """``{n: {"x": .., "y": .., "occluded": ..}}`` of a FiducialPoints annotation."""
    parsed = {}
    for key, value in annotation.items():
        match = _TAO_POINT_KEY.match(key)
        if match is None:
            continue
        number, field = int(match.group(1)), match.group(2)
        if number < 1 or (field != "occluded" and not isinstance(value, (int, float))):
            raise ValueError(f"{where}: bad value for '{key}'. Received: {key}={value!r}")
        parsed.setdefault(number, {})[field] = value
    return parsed


def _tao_box(annotation, where):
    """``(box, occlusion level)`` of a FaceBbox annotation (its tight box)."""
    try:
        x, y, width, height = (float(annotation[key]) for key in _TAO_BOX_KEYS)
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{where}: needs numeric {_TAO_BOX_KEYS}. Received: FaceBbox={annotation}") from None
    return (x, y, x + width, y + height), annotation.get("Occlusion")


def read_tao_json(path, image_root=None, num_keypoints=None, scheme=None, on_missing_image="raise"):
    """Reads TAO FPENet's JSON labels (the NVIDIA data-factory format).

    The file is a list of images, each
    ``{"filename": ..., "annotations": [...]}``. A ``"FaceBbox"`` annotation
    gives ``face_tight_bboxx``, ``face_tight_bboxy``, ``face_tight_bboxwidth``,
    ``face_tight_bboxheight``; a ``"FiducialPoints"`` annotation gives
    ``P{n}x``, ``P{n}y`` and optionally ``P{n}occluded`` for n from 1. Occluded
    points keep their coordinates with visibility 0; absent points are NaN with
    visibility 0. The i-th FiducialPoints of an image pairs with its i-th
    FaceBbox; without one the landmark box is used.

    Args:
        path: the JSON file.
        image_root: folder the ``filename`` entries are relative to (default:
            the JSON file's folder).
        num_keypoints: K; by default the largest ``n`` in the file.
        scheme: scheme name; by default the fpezoo scheme with K points
            (68 -> ``"ibug68"``, 80 -> ``"tao80"``, 104 -> ``"tao104"``).
        on_missing_image: ``"raise"`` or ``"drop"`` (with a warning).

    Returns:
        A list of :class:`LandmarkRecord` (one per FiducialPoints annotation).
    """
    _check_on_missing(on_missing_image)
    path, content = _load_json(path)
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        raise ValueError(
            f"{path} must hold a list of images. Received: type={type(content).__name__}"
        )
    image_root = pathlib.Path(image_root) if image_root is not None else path.parent
    faces = []
    for index, entry in enumerate(content):
        where = f"{path}, entry {index}"
        if not isinstance(entry, dict) or "filename" not in entry or not isinstance(
                entry.get("annotations"), list):
            raise ValueError(
                f"{where}: needs 'filename' and a list 'annotations'. Received: entry={str(entry)[:200]}")
        annotations = [a for a in entry["annotations"] if isinstance(a, dict)]
        boxes = [a for a in annotations if a.get("class") == "FaceBbox"]
        fiducials = [a for a in annotations if a.get("class") == "FiducialPoints"]
        for face, points in enumerate(fiducials):
            face_where = f"{where} ({entry['filename']}), FiducialPoints {face}"
            box, occlusion = (_tao_box(boxes[face], f"{where}, FaceBbox {face}") if face < len(boxes)
                              else (None, None))
            faces.append((face_where, entry["filename"], _tao_points(points, face_where), box, occlusion))
    largest = max((max(parsed, default=0) for _, _, parsed, _, _ in faces), default=0)
    num_keypoints = num_keypoints or largest
    if largest > num_keypoints:
        raise ValueError(
            f"{path} has points up to P{largest} but num_keypoints is {num_keypoints}. "
            f"Received: num_keypoints={num_keypoints}"
        )
    scheme = scheme or _scheme_name_for_count(num_keypoints, "tao")
    records = []
    for where, filename, parsed, box, occlusion in faces:
        keypoints = np.full((num_keypoints, 2), np.nan)
        visibility = np.zeros(num_keypoints, dtype="float32")
        for number, fields in parsed.items():
            if "x" not in fields or "y" not in fields:
                raise ValueError(f"{where}: P{number} needs both x and y. Received: P{number}={fields}")
            keypoints[number - 1] = (fields["x"], fields["y"])
            visibility[number - 1] = 0.0 if fields.get("occluded", False) else 1.0
        if box is None:
            box = landmark_box(keypoints)
        records.append(LandmarkRecord(
            image=image_root / filename,
            keypoints=keypoints,
            visibility=visibility,
            box=box,
            scheme=scheme,
            source=path.stem,
            metadata={"origin": where, "occlusion_level": occlusion},
        ))
    return _report_missing_images(records, path, on_missing_image)


# --------------------------------------------------------------------------- AFLW2000-3D
AFLW2000_LABELS = {"fitted": "pts68_fitted", "reannotated": "pts68_reannotated", "pts21": "pts21"}


def read_aflw2000_3d(folder, labels="fitted", on_missing_image="raise"):
    """Reads the AFLW2000-3D benchmark (``landmarks.npz`` and ``images/``).

    The face box of every record is the box of the fitted 68 points, as the
    3DDFA protocol crops and normalises by it, whichever labels are read.

    Args:
        folder: the ``aflw2000-3d`` folder.
        labels: ``"fitted"`` (the original 68 labels of a fitted 3D model,
            ``metadata["z"]`` holds their depth), ``"reannotated"`` (the manual
            68-point re-annotation) or ``"pts21"`` (AFLW's 21 points; points
            with a coordinate of -1 are invisible: the file stores them as
            ``(-1, 452)``).
        on_missing_image: ``"raise"`` or ``"drop"`` (with a warning).

    Returns:
        A list of :class:`LandmarkRecord` with ``metadata["yaw_deg"]``.
    """
    _check_on_missing(on_missing_image)
    if labels not in AFLW2000_LABELS:
        raise ValueError(f"labels must be one of {sorted(AFLW2000_LABELS)}. Received: labels={labels!r}")
    folder = pathlib.Path(folder)
    npz_path = folder / "landmarks.npz"
    key = AFLW2000_LABELS[labels]
    arrays = _load_npz(npz_path, ("names", "pts68_fitted", key, "yaw_deg"))
    records = []
    for index, name in enumerate(arrays["names"]):
        fitted = arrays["pts68_fitted"][index]
        points = arrays[key][index][:, :2].astype("float64")
        visibility = np.ones(len(points), dtype="float32")
        if labels == "pts21":
            visibility = (points != -1).all(axis=1).astype("float32")
            points[visibility == 0] = np.nan
        metadata = {"origin": f"{npz_path}, entry {index}", "yaw_deg": float(arrays["yaw_deg"][index])}
        if labels == "fitted":
            metadata["z"] = fitted[:, 2].copy()
        records.append(LandmarkRecord(
            image=folder / "images" / str(name),
            keypoints=points,
            visibility=visibility,
            box=landmark_box(fitted[:, :2]),
            scheme="aflw21" if labels == "pts21" else "ibug68",
            source="aflw2000-3d",
            metadata=metadata,
        ))
    return _report_missing_images(records, npz_path, on_missing_image)


# --------------------------------------------------------------------------- teacher labels
# Teacher label files of ../shared/data, by teacher name: MediaPipe FaceMesh and 3DDFA_V2.
TEACHER_FILES = {
    "mediapipe": {"aflw-crops": "teacher_mediapipe.npz", "mtfl": "teacher_mediapipe_train.npz"},
    "3ddfa_v2": {"aflw-crops": "teacher_3ddfa_v2.npz", "mtfl": "teacher_3ddfa_v2_train.npz"},
}


def teacher_file(folder, teacher, data_set):
    """The teacher label file of a data set folder: ``folder / TEACHER_FILES[teacher][data_set]``."""
    if teacher not in TEACHER_FILES:
        raise ValueError(f"teacher must be one of {sorted(TEACHER_FILES)}. Received: teacher={teacher!r}")
    return pathlib.Path(folder) / TEACHER_FILES[teacher][data_set]


def _teacher_records(npz_path, image_paths, source, max_flip_disagreement, extra_metadata):
    """ibug68 records from a ``teacher_*.npz`` file, one per face the teacher found.

    ``image_paths[i]`` is the image of entry i; the file's names must end with
    the image's path relative to its data set (same order). The file's optional
    arrays go to each record's metadata: ``views`` (MediaPipe), ``pose_deg``
    (3DDFA_V2: yaw, pitch, roll) and the depth ``z`` of ``pts68``.
    """
    arrays = _load_npz(npz_path, ("names", "pts68", "flip_disagreement_nme"))
    with np.load(npz_path) as optional:
        views = optional["views"] if "views" in optional.files else None
        pose = optional["pose_deg"] if "pose_deg" in optional.files else None
    if len(arrays["names"]) != len(image_paths):
        raise ValueError(
            f"{npz_path} has {len(arrays['names'])} entries but the data set has "
            f"{len(image_paths)} faces. Received: path={str(npz_path)!r}"
        )
    records = []
    for index, (name, image) in enumerate(zip(arrays["names"], image_paths)):
        name = str(name)
        if not (name == image.name or ("/" + name).endswith("/" + image.parent.name + "/" + image.name)):
            raise ValueError(
                f"{npz_path}, entry {index}: name {name!r} does not match the data set's image "
                f"{image}. Received: name={name!r}"
            )
        points = arrays["pts68"][index][:, :2]
        disagreement = float(arrays["flip_disagreement_nme"][index])
        if not np.isfinite(points).all():
            continue  # the teacher found no face: nothing to learn from
        if max_flip_disagreement is not None and not disagreement <= max_flip_disagreement:
            continue
        records.append(LandmarkRecord(
            image=image,
            keypoints=points,
            visibility=np.ones(68, dtype="float32"),
            box=None,
            scheme="ibug68",
            source=source,
            metadata={
                "origin": f"{npz_path}, entry {index}",
                "flip_disagreement_nme": disagreement,
                **({"views": int(views[index])} if views is not None else {}),
                **({"pose_deg": pose[index].tolist()} if pose is not None else {}),
                "depth": arrays["pts68"][index][:, 2].copy(),
                **extra_metadata[index],
            },
        ))
    return records


# --------------------------------------------------------------------------- AFLW crops
def read_aflw_crops(folder, teacher=False, max_flip_disagreement=None, on_missing_image="raise"):
    """Reads the AFLW crops (120x120 loose face crops, ``landmarks.npz``).

    The crops are the face boxes themselves, so ``box`` is None (the pipeline
    crops the whole image).

    Args:
        folder: the ``aflw-crops`` folder.
        teacher: False for the human 21 points (``"aflw21"``, invisible points
            NaN with visibility 0); a teacher name of :data:`TEACHER_FILES`
            (True: ``"mediapipe"``) for that teacher's 68 points (``"ibug68"``),
            only for the faces the teacher found, with
            ``metadata["flip_disagreement_nme"]`` (direct vs mirrored run; NaN
            when only one view found the face).
        max_flip_disagreement: with ``teacher=True``, keep only faces whose
            flip disagreement is at most this (drops one-view faces).
        on_missing_image: ``"raise"`` or ``"drop"`` (with a warning).

    Returns:
        A list of :class:`LandmarkRecord` with ``metadata["yaw_deg"]``.
    """
    _check_on_missing(on_missing_image)
    folder = pathlib.Path(folder)
    npz_path = folder / "landmarks.npz"
    arrays = _load_npz(npz_path, ("names", "pts21_crop", "visible", "yaw_deg"))
    images = [folder / "images" / str(name) for name in arrays["names"]]
    metadata = [{"yaw_deg": float(yaw)} for yaw in arrays["yaw_deg"]]
    if teacher:
        teacher = "mediapipe" if teacher is True else teacher
        records = _teacher_records(
            teacher_file(folder, teacher, "aflw-crops"), images, f"aflw-crops-{teacher}",
            max_flip_disagreement, metadata,
        )
        return _report_missing_images(records, npz_path, on_missing_image)
    records = []
    for index, image in enumerate(images):
        visibility = arrays["visible"][index].astype("float32")
        points = np.where(visibility[:, None] > 0, arrays["pts21_crop"][index], np.nan)
        records.append(LandmarkRecord(
            image=image,
            keypoints=points,
            visibility=visibility,
            box=None,
            scheme="aflw21",
            source="aflw-crops",
            metadata={"origin": f"{npz_path}, entry {index}", **metadata[index]},
        ))
    return _report_missing_images(records, npz_path, on_missing_image)


# --------------------------------------------------------------------------- MTFL
def read_mtfl(list_file, teacher=None, max_flip_disagreement=None, on_missing_image="raise"):
    """Reads an MTFL list (``train.txt`` / ``test.txt``): 5 points per 80x80 crop.

    Each line is ``path x1 x2 x3 x4 x5 y1 y2 y3 y4 y5`` (left eye centre,
    right eye centre, nose tip, left and right mouth corners; 0-based pixel
    centres), the path relative to the list's folder. The images are the face
    crops, so ``box`` is None. Use :func:`find_off_face_rows` to drop the
    training rows whose points lie off the face.

    Args:
        list_file: the list file.
        teacher: optional ``teacher_mediapipe_train.npz`` (same rows): returns
            its 68 points (``"ibug68"``) instead, for the faces it found.
        max_flip_disagreement: with ``teacher``, keep only faces whose teacher
            flip disagreement is at most this.
        on_missing_image: ``"raise"`` or ``"drop"`` (with a warning).

    Returns:
        A list of :class:`LandmarkRecord`.
    """
    _check_on_missing(on_missing_image)
    list_file = pathlib.Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"Label file not found. Received: path={str(list_file)!r}")
    rows = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 11:
                raise ValueError
            values = np.asarray(fields[1:], dtype="float64")
        except ValueError:
            raise ValueError(
                f"{list_file}, line {number}: expected 'path x1 .. x5 y1 .. y5' (11 fields). "
                f"Received: line={line!r}"
            ) from None
        rows.append((number, list_file.parent / fields[0], np.stack([values[:5], values[5:]], axis=1)))
    if teacher is not None:
        records = _teacher_records(
            pathlib.Path(teacher), [image for _, image, _ in rows], "mtfl-teacher",
            max_flip_disagreement, [{"subset": image.parent.name} for _, image, _ in rows],
        )
        return _report_missing_images(records, list_file, on_missing_image)
    records = [
        LandmarkRecord(
            image=image,
            keypoints=points,
            visibility=np.ones(5, dtype="float32"),
            box=None,
            scheme="five_point",
            source="mtfl",
            metadata={"origin": f"{list_file}, line {number}", "subset": image.parent.name},
        )
        for number, image, points in rows
    ]
    return _report_missing_images(records, list_file, on_missing_image)


@dataclasses.dataclass(frozen=True)
class OffFaceRows:
    """Indices of records whose labels lie off the face (see :func:`find_off_face_rows`).

    Attributes:
        outside_image: some visible point lies outside the image.
        displaced: the points' centroid lies far from where the other faces'
            centroids are.
    """

    outside_image: np.ndarray
    displaced: np.ndarray

    @property
    def all(self):
        """Sorted indices flagged for either reason."""
        return np.union1d(self.outside_image, self.displaced)


def find_off_face_rows(records, max_offset=0.2):
    """Finds labels that lie off the face in a set of loose face crops.

    In a set of crops framed the same way (MTFL, AFLW crops), the centroid of
    a face's points sits at nearly the same relative place in every crop. A
    record is flagged when a visible point lies outside its image, or when the
    centroid of its visible points, in fractions of the image width and
    height, lies more than ``max_offset`` from the median of the set.

    On MTFL's train list (``max_offset=0.2``) this flags 2347 of the 5849 web
    rows and no LFW row; drawings of them show points above the face. The
    offsets separate well: every LFW row is within 0.142, and only 2 web rows
    lie between 0.15 and 0.25.

    Args:
        records: records of loose face crops.
        max_offset: centroid offset threshold, as a fraction of the image size.

    Returns:
        An :class:`OffFaceRows`.
    """
    if not records:
        return OffFaceRows(np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    keypoints = np.stack([record.keypoints for record in records]).astype("float64")
    visible = np.stack([record.visibility for record in records]) > 0
    sizes = np.array([image_size(record.image) for record in records], dtype="float64")[:, ::-1]
    inside = (keypoints >= -0.5) & (keypoints <= sizes[:, None, :] - 0.5)
    outside_image = np.flatnonzero((visible & ~inside.all(axis=-1)).any(axis=1))
    labelled = visible.any(axis=1)
    masked = np.where(visible[..., None], keypoints, 0.0)
    centroid = masked.sum(axis=1) / np.maximum(visible.sum(axis=1), 1)[:, None]
    relative_centroid = (centroid + 0.5) / sizes
    offset = np.linalg.norm(relative_centroid - np.median(relative_centroid[labelled], axis=0), axis=-1)
    displaced = np.flatnonzero(labelled & (offset > max_offset))
    return OffFaceRows(outside_image, displaced)


# Reader name -> reader function: the one registry of the names that training configs
# (``"reader"``), ``fpezoo evaluate --benchmark records --reader`` and ``fpezoo convert
# --calibration NAME:PATH`` take. Training refuses the benchmark's (``aflw2000_3d``).
READERS = {
    "pts": read_pts,
    "coco_keypoints": read_coco_keypoints,
    "tao_json": read_tao_json,
    "aflw_crops": read_aflw_crops,
    "mtfl": read_mtfl,
    "aflw2000_3d": read_aflw2000_3d,
}
