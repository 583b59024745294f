"""Measures the offline face detectors on real faces.

For each detector: detection rate on a fixed sample of AFLW2000-3D images
(450x450, one annotated face, all poses) and of the MTFL test crops (80x80 loose
AFLW face crops), mean detections per image, and milliseconds per image
(wall-clock, one image at a time, after one warm-up image).

A face counts as detected when some detection box contains its five inner
ground-truth points (eye centres, nose tip, mouth corners; on AFLW2000-3D taken
from the 68 ``pts68_fitted`` points) and is at most ``MAX_SIZE_RATIO`` times the
diagonal of those points' box (so a box covering the whole image does not
count). On AFLW2000-3D the rate at IoU >= 0.3 with the 68-point landmark box is
reported too, and, held out, how well the detector's
``landmark_box_calibration`` turns those matched boxes into the landmark boxes
(``calibrated_boxes``: IoU, centre error over sqrt(w * h) of the landmark box,
and the residual calibration, (0, 0, 1, 1) when unbiased).

``--fit-calibration`` fits instead each detector's ``landmark_box_calibration``
(:func:`fpezoo.detection.fit_landmark_box_calibration`), the mapping
:class:`fpezoo.LandmarkDetector` uses to crop faces from detector boxes the way
the models were trained (from landmark boxes), on training faces only: a fixed
random ``--count`` faces of each of ``TRAINING_SETS`` (MTFL train without its
off-face rows, and the AFLW crops), whose landmark boxes come from the 3DDFA_V2
teacher's 68 points, each crop resized to ``--fit-side`` pixels a side
first; the detection matched to a face is the one overlapping its landmark box
most, at IoU >= 0.3. Never fit on AFLW2000-3D: it is the benchmark.

``--fit-roll`` fits instead BlazeFace's roll gain, the fifth number of its
``landmark_box_calibration`` (:func:`fpezoo.detection.fit_landmark_box_roll_gain`):
the same training faces, each turned in-plane every ``--roll-step`` degrees
in [-45, 45] on a canvas that keeps the whole image, BlazeFace's calibrated
boxes against the teacher points turned upright by the detector's roll
(:func:`turned_faces`); it prints the per-turn medians.

``--crop-statistics`` prints instead how the training crops relate to their
faces' 68 landmarks (teacher labels of the AFLW and MTFL crops): crop side over
the landmark box's longer side and the centre offset, the ``enlarge`` default
of :class:`fpezoo.LandmarkDetector`.

``--turn-scores`` prints instead how BlazeFace scores the first ``--count``
AFLW2000-3D faces upright and in the three wrong quarter turns (the basis of
its ``upright_score`` and ``turned_min_score``).

``--end-to-end MODEL`` also checks that accuracy holds from photo to landmarks
(``--detectors`` with no name runs this check alone): on AFLW2000-3D images it
compares the NME (3DDFA normalisation: sqrt(w * h) of the
ground-truth landmark box, ``pts68_fitted``) of :class:`fpezoo.LandmarkDetector`
with the default detector's boxes against the same model on crops of the
ground-truth landmark boxes (the benchmark protocol), and times the whole
predictor per image. ``benchmarks/end_to_end.py`` measures the predictor on
turned photos and its throughput stage by stage.

Usage::

    python benchmarks/detection.py --count 300 --output detection_benchmark.json
    python benchmarks/detection.py --crop-statistics
    python benchmarks/detection.py --turn-scores --count 200
    python benchmarks/detection.py --fit-calibration --count 2000 --output docs/benchmarks/detection_calibration.json
    python benchmarks/detection.py --fit-roll --count 250 --output docs/benchmarks/detection_roll_calibration.json
    python benchmarks/detection.py --end-to-end <registered name or .keras> --count 300  # both
    python benchmarks/detection.py --detectors --end-to-end <registered name or .keras>  # end to end only

Data come from ``$FPEZOO_DATA`` or ``../shared/data``.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fpezoo import detection, evaluation  # noqa: E402
from fpezoo.coordinates import roll_from_eyes  # noqa: E402

IOU_THRESHOLD = 0.3
MAX_SIZE_RATIO = 4.0
# 68-point iBUG indices of the five inner points: eyes (means), nose tip, mouth corners.
IBUG_EYES = (range(36, 42), range(42, 48))
IBUG_NOSE_TIP, IBUG_MOUTH_CORNERS = 30, (48, 54)
# The four numbers of a detector's landmark_box_calibration, in order.
CALIBRATION_KEYS = ("centre_offset_x", "centre_offset_y", "width_ratio", "height_ratio")
# Training sets the calibrations are fitted on (never the benchmarks).
TRAINING_SETS = ("mtfl_train", "aflw_crops")
# Training crops (80 and 120 pixels) are resized to this side before detection:
# their faces are then photo-sized, far above the detectors' smallest windows
# (dlib's 40 pixels at upsample 1, the LBP cascade's 24), whose boxes of faces
# near that size are shaped differently.
FIT_SIDE = 360
# --fit-roll: the rolls of the turned faces are binned this wide.
BIN_DEGREES = 5.0


def data_dir():
    path = evaluation.data_dir()
    if not path.is_dir():
        sys.exit(f"Face data not found: set FPEZOO_DATA. Received: path={path}")
    return path


def aflw2000_samples(root, count, seed):
    labels = np.load(root / "aflw2000-3d" / "landmarks.npz")
    index = np.sort(np.random.default_rng(seed).choice(len(labels["names"]), count, replace=False))
    for i in index:
        points = labels["pts68_fitted"][i, :, :2]
        five = np.stack([points[list(IBUG_EYES[0])].mean(0), points[list(IBUG_EYES[1])].mean(0),
                         points[IBUG_NOSE_TIP], *points[list(IBUG_MOUTH_CORNERS)]])
        yield (root / "aflw2000-3d" / "images" / str(labels["names"][i]), five, points,
               float(labels["yaw_deg"][i]))


def mtfl_samples(root, count, seed):
    lines = (root / "mtfl" / "test.txt").read_text().split("\n")
    lines = [line.split() for line in lines if line.strip()]
    index = np.sort(np.random.default_rng(seed).choice(len(lines), count, replace=False))
    for i in index:
        fields = lines[i]
        values = np.array(fields[1:11], dtype="float32")
        yield root / "mtfl" / fields[0], np.stack([values[:5], values[5:]], axis=-1), None, None


def landmark_box(points):
    """Extent of points given in pixel-centre units, in pixel-corner units.

    The box's size is the points' spread whatever the image scale (no extra
    pixel), so calibrations measured on small crops hold on large photos.
    """
    return np.array([*(points.min(0) + 0.5), *(points.max(0) + 0.5)])


def contains_face(box, five_points):
    """The criterion of the module docstring."""
    inside = np.all((five_points + 0.5 >= box[:2]) & (five_points + 0.5 <= box[2:]))
    truth = landmark_box(five_points)
    return bool(inside) and np.hypot(*(box[2:] - box[:2])) <= MAX_SIZE_RATIO * np.hypot(*(truth[2:] - truth[:2]))


def iou(a, b):
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run(detector, samples):
    times, hits, iou_hits, counts, matched, yaw_hits = [], [], [], [], [], []
    warmed_up = False
    for path, five_points, points68, yaw in samples:
        image = np.asarray(Image.open(path).convert("RGB"))
        if not warmed_up:
            detector.detect(image)
            warmed_up = True
        start = time.perf_counter()
        found = detector.detect(image)
        times.append(time.perf_counter() - start)
        hit = any(contains_face(np.array(d.box), five_points) for d in found)
        hits.append(hit)
        counts.append(len(found))
        if yaw is not None:
            yaw_hits.append((abs(yaw), hit))
        if points68 is None:
            continue
        truth = landmark_box(points68)
        match = matching_detection(found, truth)
        iou_hits.append(match is not None)
        if match is not None:
            matched.append((match.box, truth))
    result = {
        "images": len(hits),
        "detection_rate": float(np.mean(hits)),
        "detections_per_image": float(np.mean(counts)),
        "ms_per_image_mean": 1000 * float(np.mean(times)),
        "ms_per_image_median": 1000 * float(np.median(times)),
    }
    if iou_hits:
        result["detection_rate_iou"] = float(np.mean(iou_hits))
    if yaw_hits:
        yaw, hit = np.array(yaw_hits).T
        for low, high in ((0, 30), (30, 60), (60, 1000)):
            in_bin = (yaw > low) & (yaw <= high) if low else yaw <= high
            if in_bin.any():  # a small sample may leave a bin empty: no rate (JSON has no NaN)
                result[f"detection_rate_yaw_{low}_{min(high, 90)}"] = float(hit[in_bin].mean())
    if matched:
        result["calibrated_boxes"] = calibrated_box_errors(detector.landmark_box_calibration, *zip(*matched))
    return result


def matching_detection(found, truth):
    """The detection overlapping the landmark box ``truth`` most, if by IoU >= ``IOU_THRESHOLD``."""
    overlaps = [iou(np.array(d.box), truth) for d in found]
    best = int(np.argmax(overlaps)) if overlaps else None
    return found[best] if best is not None and overlaps[best] >= IOU_THRESHOLD else None


def calibrated_box_errors(calibration, detection_boxes, landmark_boxes):
    """How well ``calibration`` turns matched detection boxes into the faces' landmark boxes.

    Returns the IoU of each calibrated box with its landmark box (median and
    mean), the distance between their centres over the landmark box's
    sqrt(w * h) (median and mean), and the residual calibration (the
    calibration that would still map the calibrated boxes to the landmark
    boxes: (0, 0, 1, 1) when these faces match the calibration's medians).
    """
    calibrated = np.array([detection.landmark_box(box, calibration) for box in detection_boxes])
    truths = np.array(landmark_boxes)
    overlaps = np.array([iou(box, truth) for box, truth in zip(calibrated, truths)])
    centre_error = (np.hypot(*((calibrated[:, :2] + calibrated[:, 2:]) - (truths[:, :2] + truths[:, 2:])).T / 2)
                    / np.sqrt(np.prod(truths[:, 2:] - truths[:, :2], axis=1)))
    residual = detection.fit_landmark_box_calibration(calibrated, truths)
    return {
        "calibration": None if calibration is None else list(calibration),
        "faces": len(truths),
        "iou_median": float(np.median(overlaps)), "iou_mean": float(np.mean(overlaps)),
        "centre_error_median": float(np.median(centre_error)), "centre_error_mean": float(np.mean(centre_error)),
        "residual_calibration": dict(zip(CALIBRATION_KEYS, residual)),
    }


DETECTOR_FACTORIES = {
    "blazeface": lambda: detection.BlazeFaceDetector(),
    "mtcnn": lambda: detection.MTCNNDetector(),
    "dlib": lambda: detection.DlibHOGDetector(upsample=1),
    "lbp": lambda: detection.LBPCascadeDetector(),
}


def crop_statistics(root):
    """Training crop geometry relative to the 68 teacher landmarks' box."""
    sets = (("aflw-crops", "aflw-crops/teacher_mediapipe.npz", 120),
            ("mtfl-train", "mtfl/teacher_mediapipe_train.npz", 80))
    print(f"{'set':<12}{'faces':>7}{'side/box median':>17}{'IQR':>13}{'offset x':>10}{'offset y':>10}")
    for name, file, side in sets:
        labels = np.load(root / file)
        points = labels["pts68"][..., :2]
        # Faces the teacher found, and was sure of (views agree within 5 %).
        keep = np.isfinite(points).all(axis=(1, 2)) & (labels["flip_disagreement_nme"] < 0.05)
        boxes = np.array([landmark_box(p) for p in points[keep]])
        longer = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        ratio = side / longer
        offset = (side / 2 - (boxes[:, :2] + boxes[:, 2:]) / 2) / longer[:, None]
        low, median, high = np.percentile(ratio, [25, 50, 75])
        print(f"{name:<12}{keep.sum():>7}{median:>17.3f}{f'{low:.2f}-{high:.2f}':>13}"
              f"{np.median(offset[:, 0]):>10.3f}{np.median(offset[:, 1]):>10.3f}")


def training_samples(root, set_name, count, seed):
    """A fixed random subset of training faces, with the 3DDFA_V2 teacher's 68 points.

    ``"mtfl_train"``: MTFL's training crops, less the rows whose human points
    lie off the face (:func:`fpezoo.data.readers.find_off_face_rows`: the
    teachers found the face elsewhere there). ``"aflw_crops"``: the AFLW
    training crops.

    Yields:
        ``(image path, (68, 2) points)``.
    """
    from fpezoo.data import readers

    if set_name == "mtfl_train":
        list_file = root / "mtfl" / "train.txt"
        human = readers.read_mtfl(list_file)
        off_face = {human[i].image for i in readers.find_off_face_rows(human).all}
        records = [record for record in readers.read_mtfl(
            list_file, teacher=readers.teacher_file(root / "mtfl", "3ddfa_v2", "mtfl")) if record.image not in off_face]
    elif set_name == "aflw_crops":
        records = readers.read_aflw_crops(root / "aflw-crops", teacher="3ddfa_v2")
    else:
        raise ValueError(f"`set_name` must be one of {TRAINING_SETS}. Received: set_name={set_name!r}")
    if not 0 < count <= len(records):
        raise ValueError(f"{set_name} has {len(records)} usable faces. Received: count={count}")
    for i in np.sort(np.random.default_rng(seed).choice(len(records), count, replace=False)):
        yield records[i].image, records[i].keypoints


def fit_calibration(detector, samples, side):
    """Matched (detection box, landmark box) pairs of ``samples``, and the number of faces.

    Each image is first resized (bicubic) to ``side`` pixels a side (0: as it
    is); the detection boxes are mapped back to its own pixels.
    """
    import cv2

    faces, matched = 0, []
    for path, points68 in samples:
        image = np.asarray(Image.open(path).convert("RGB"))
        scale = np.ones(2) if not side else np.array([side / image.shape[1], side / image.shape[0]])
        if side:
            image = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
        truth = landmark_box(points68)
        found = [d._replace(box=tuple(np.asarray(d.box) / np.tile(scale, 2))) for d in detector.detect(image)]
        match = matching_detection(found, truth)
        faces += 1
        if match is not None:
            matched.append((match.box, truth))
    return faces, matched


def fit_calibrations(root, names, count, seed, side):
    """Fits each detector's landmark_box_calibration on ``count`` faces of each training set."""
    results = {"sets": TRAINING_SETS, "teacher": "3ddfa_v2", "count": count, "seed": seed, "side": side,
               "iou_threshold": IOU_THRESHOLD, "detectors": {}}
    for name in names:
        detector = DETECTOR_FACTORIES[name]()
        pairs, sets = [], {}
        for set_name in TRAINING_SETS:
            faces, matched = fit_calibration(detector, training_samples(root, set_name, count, seed), side)
            pairs += matched
            sets[set_name] = {"faces": faces, "matched": len(matched), "calibration": dict(zip(
                CALIBRATION_KEYS, detection.fit_landmark_box_calibration(*zip(*matched))))}
        calibration = detection.fit_landmark_box_calibration(*zip(*pairs))
        results["detectors"][name] = {
            "detector": repr(detector), "faces": sum(s["faces"] for s in sets.values()), "matched": len(pairs),
            "calibration": dict(zip(CALIBRATION_KEYS, calibration)), "sets": sets,
        }
        print(f"{name}: {len(pairs)} of {results['detectors'][name]['faces']} faces matched; "
              f"landmark_box_calibration = ({', '.join(f'{v:.3f}' for v in calibration)})")
        for set_name, fitted in sets.items():
            print(f"  {set_name}: {fitted['matched']} of {fitted['faces']}: "
                  f"({', '.join(f'{v:.3f}' for v in fitted['calibration'].values())})")
    return results


def turned_faces(detector, samples, side, step):
    """How ``detector``'s calibrated boxes fit faces turned in-plane: one row per matched face and turn.

    Each image is resized (bicubic) to ``side`` pixels a side, centred on a
    black square canvas whose side is its diagonal (so no turn cuts a corner
    off, and the face is the same fraction of the canvas at every angle), and
    turned about the canvas centre so the face rolls clockwise by each
    multiple of ``step`` degrees in [-45, 45]: the rolls the detector sees,
    since the predictor searches the quarter turns of each image (a face
    turned by 135 degrees is found in the image turned by a quarter, at 45;
    run directly on faces lying on their side or upside down, BlazeFace's
    boxes are larger and its upside-down boxes off-centre). The detection overlapping the
    turned points' box most (IoU >= ``IOU_THRESHOLD``) is mapped by
    :func:`fpezoo.detection.landmark_box` with the detector's calibration
    without a roll gain and the roll of its own points; the truth is the
    box of the turned teacher points turned upright by that same roll (the
    frame the predictor crops in).

    Returns:
        ``(M, 6)`` rows: turn, detector roll (degrees), width and height ratio
        (truth over calibrated box), and the truth's centre offset from the
        calibrated box's in the upright frame, in truth widths and heights.
    """
    import cv2

    calibration = detector.landmark_box_calibration[:4]
    canvas = int(np.ceil(side * np.sqrt(2)))
    pad = (canvas - side) // 2
    centre = np.full(2, (canvas - 1) / 2)
    rows = []
    for path, points68 in samples:
        image = np.asarray(Image.open(path).convert("RGB"))
        scale = np.array([side / image.shape[1], side / image.shape[0]])
        padded = np.zeros((canvas, canvas, 3), np.uint8)
        padded[pad:pad + side, pad:pad + side] = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
        points = (points68 + 0.5) * scale - 0.5 + pad  # pixel centres of the canvas
        for turn in np.arange(-45.0, 45.0 + step / 2, step):
            matrix = cv2.getRotationMatrix2D(tuple(centre), -turn, 1.0)  # cv2: positive turns counter-clockwise
            turned = cv2.warpAffine(padded, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR)
            turned_points = points @ matrix[:, :2].T + matrix[:, 2]
            match = matching_detection(detector.detect(turned), landmark_box(turned_points))
            if match is None:
                continue
            mouth = match.points[list(detector.mouth_points)].mean(axis=0)
            roll = float(roll_from_eyes(match.points[0], match.points[1], mouth))
            box = np.array(detection.landmark_box(match.box, calibration, roll))
            radians = np.radians(roll)
            to_upright = np.array([[np.cos(radians), np.sin(radians)], [-np.sin(radians), np.cos(radians)]])
            upright = landmark_box((turned_points - centre) @ to_upright.T)
            truth_size = upright[2:] - upright[:2]
            truth_centre = to_upright.T @ ((upright[:2] + upright[2:]) / 2) + centre
            offset = to_upright @ (truth_centre - (box[:2] + box[2:]) / 2) / truth_size
            rows.append((turn, roll, *(truth_size / (box[2:] - box[:2])), *offset))
    return np.array(rows)


def fit_roll(root, count, seed, side, step):
    """Fits BlazeFace's roll gain on ``count`` faces of each training set turned every ``step`` degrees.

    Per turn it also reports the median width, height and size ratios and the
    centre offset left by the upright calibration (:func:`turned_faces`).
    """
    detector = DETECTOR_FACTORIES["blazeface"]()
    rows = np.concatenate([turned_faces(detector, training_samples(root, set_name, count, seed), side, step)
                           for set_name in TRAINING_SETS])
    turn, roll, width_ratio, height_ratio, offset_x, offset_y = rows.T
    size_ratio = np.sqrt(width_ratio * height_ratio)
    gain, bins = detection.fit_landmark_box_roll_gain(roll, size_ratio, BIN_DEGREES)
    per_turn = {}
    for angle in np.unique(turn):
        at = turn == angle
        per_turn[float(angle)] = {
            "matched": int(at.sum()), "roll_median": float(np.median(roll[at])),
            "width_ratio": float(np.median(width_ratio[at])), "height_ratio": float(np.median(height_ratio[at])),
            "size_ratio": float(np.median(size_ratio[at])),
            "fitted_factor": detection.roll_size_factor(angle, gain),
            "centre_offset_x": float(np.median(offset_x[at])), "centre_offset_y": float(np.median(offset_y[at])),
        }
    results = {
        "sets": TRAINING_SETS, "teacher": "3ddfa_v2", "count": count, "seed": seed, "side": side, "step": step,
        "detector": repr(detector), "calibration": list(detector.landmark_box_calibration[:4]),
        "faces": 2 * count, "matched": len(rows), "roll_gain": gain,
        "bin_degrees": BIN_DEGREES,
        "roll_bins": {f"{centre:g}": {"matched": n, "size_ratio_over_bias": ratio,
                                      "fitted_factor": detection.roll_size_factor(centre, gain)}
                      for centre, (n, ratio) in bins.items()},
        "turns": per_turn,
    }
    print(f"blazeface: {len(rows)} of {results['faces'] * len(per_turn)} turned faces matched; "
          f"roll gain {gain:.3f} (size factor 1 + g sin(2 r) ** 2)")
    print(f"{'turn':>6}{'matched':>8}{'roll':>8}{'width':>8}{'height':>8}{'size':>8}{'fitted':>8}"
          f"{'dx':>8}{'dy':>8}")
    for angle, r in per_turn.items():
        print(f"{angle:>6.0f}{r['matched']:>8}{r['roll_median']:>8.1f}{r['width_ratio']:>8.3f}"
              f"{r['height_ratio']:>8.3f}{r['size_ratio']:>8.3f}{r['fitted_factor']:>8.3f}"
              f"{r['centre_offset_x']:>8.3f}{r['centre_offset_y']:>8.3f}")
    return results


def turn_scores(root, count):
    """BlazeFace's best score on each face upright and turned by 90, 180, 270 degrees."""
    from fpezoo.imageio import load_image

    labels = np.load(root / "aflw2000-3d" / "landmarks.npz")
    detector = detection.BlazeFaceDetector()
    scores = []
    for name in labels["names"][:count]:
        image = load_image(root / "aflw2000-3d" / "images" / str(name))
        scores.append([max((d.score for d in detection.detect_faces(detector, np.rot90(image, turns),
                                                                    detector.detection_side)), default=0.0)
                       for turns in range(4)])
    scores = np.array(scores)
    upright, wrong = scores[:, 0], scores[:, 1:].ravel()
    print(f"{count} faces; upright score quartiles {np.percentile(upright, [25, 50, 75]).round(3).tolist()}")
    print(f"{'score >=':>9}{'upright':>9}{'wrong turn':>12}")
    for threshold in (0.5, 0.75, 0.85, 0.9, 0.92, 0.95):
        print(f"{threshold:>9}{np.mean(upright >= threshold):>9.3f}{np.mean(wrong >= threshold):>12.4f}")
    print(f"a wrong turn scores above upright: {np.mean(scores[:, 1:].max(axis=1) > upright):.3f} of the faces")


def end_to_end(root, model, count, seed):
    """NME with detected faces vs ground-truth boxes, and ms per image."""
    from fpezoo.metrics import nme
    from fpezoo.predictor import LandmarkDetector

    # Upright photos: the ground-truth boxes are cropped upright, as before the roll search.
    predictor = LandmarkDetector(model=model, detector="default", roll_search=False)
    detected, boxed, times, misses = [], [], [], 0
    truths = []
    for path, _, points68, _ in aflw2000_samples(root, count, seed):
        image = np.asarray(Image.open(path).convert("RGB"))
        truth = landmark_box(points68)
        if not times:
            predictor.predict(image)  # warm-up (graph tracing)
        start = time.perf_counter()
        faces = predictor.predict(image)
        times.append(time.perf_counter() - start)
        overlaps = [iou(np.array(face.box), truth) for face in faces]
        if not overlaps or max(overlaps) < IOU_THRESHOLD:
            misses += 1
            continue
        detected.append(faces[int(np.argmax(overlaps))].keypoints)
        boxed.append(predictor.predict(image, boxes=[truth])[0].keypoints)
        truths.append(points68)
    truths = np.array(truths)
    result = {
        "model": str(model), "images": count, "missed_faces": misses,
        "nme_detected_boxes": float(np.mean(nme(np.array(detected), truths, normalization="box_area"))),
        "nme_ground_truth_boxes": float(np.mean(nme(np.array(boxed), truths, normalization="box_area"))),
        "ms_per_image_mean": 1000 * float(np.mean(times)),
        "ms_per_image_median": 1000 * float(np.median(times)),
        "predictor": repr(predictor),
    }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="*", default=["blazeface", "mtcnn", "dlib", "lbp"],
                        choices=sorted(DETECTOR_FACTORIES),
                        help="detectors to measure (none: only --end-to-end)")
    parser.add_argument("--count", type=int, default=300, help="images per data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="detection_benchmark.json")
    parser.add_argument("--crop-statistics", action="store_true",
                        help="print the training crops' geometry instead")
    parser.add_argument("--turn-scores", action="store_true",
                        help="print BlazeFace's scores of upright and turned faces instead")
    parser.add_argument("--fit-calibration", action="store_true",
                        help="fit the detectors' landmark_box_calibration on --count faces of each training set "
                             "instead, and write them to --output")
    parser.add_argument("--fit-roll", action="store_true",
                        help="fit BlazeFace's roll gain on --count faces of each training set turned every "
                             "--roll-step degrees instead, and write it to --output")
    parser.add_argument("--roll-step", type=float, default=5.0, help="with --fit-roll, degrees between turns")
    parser.add_argument("--fit-side", type=int, default=FIT_SIDE,
                        help="with --fit-calibration, training crops are resized to this side first (0: as they are)")
    parser.add_argument("--end-to-end", metavar="MODEL", default=None,
                        help="registered weights name or .keras file: also measure end-to-end NME and speed")
    args = parser.parse_args()
    root = data_dir()
    if args.crop_statistics:
        crop_statistics(root)
        return
    if args.turn_scores:
        turn_scores(root, args.count)
        return
    if args.fit_roll:
        results = fit_roll(root, args.count, args.seed, args.fit_side, args.roll_step)
        pathlib.Path(args.output).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.output}")
        return
    if args.fit_calibration:
        results = fit_calibrations(root, args.detectors, args.count, args.seed, args.fit_side)
        pathlib.Path(args.output).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.output}")
        return
    results = {"iou_threshold": IOU_THRESHOLD, "max_size_ratio": MAX_SIZE_RATIO, "count": args.count, "seed": args.seed, "detectors": {}}
    for name in args.detectors:
        try:
            detector = DETECTOR_FACTORIES[name]()
        except ImportError as error:
            print(f"{name}: unavailable here ({error})")
            results["detectors"][name] = {"unavailable": str(error)}
            continue
        results["detectors"][name] = {
            "detector": repr(detector),
            "aflw2000_3d": run(detector, aflw2000_samples(root, args.count, args.seed)),
            "mtfl_test": run(detector, mtfl_samples(root, args.count, args.seed)),
        }
    print(f"{'detector':<10}{'set':<13}{'rate':>7}{'IoU.3':>7}{'<=30':>7}{'30-60':>7}{'>60':>7}"
          f"{'dets/img':>10}{'ms mean':>9}{'ms med':>8}")
    for name, sets in results["detectors"].items():
        for set_name in ("aflw2000_3d", "mtfl_test"):
            if set_name not in sets:
                continue
            r = sets[set_name]
            bins = [r.get(f"detection_rate_yaw_{b}") for b in ("0_30", "30_60", "60_90")]
            bins = "".join(f"{b:>7.3f}" if b is not None else f"{'-':>7}" for b in bins)
            iou_rate = f"{r['detection_rate_iou']:>7.3f}" if "detection_rate_iou" in r else f"{'-':>7}"
            print(f"{name:<10}{set_name:<13}{r['detection_rate']:>7.3f}{iou_rate}{bins}"
                  f"{r['detections_per_image']:>10.2f}{r['ms_per_image_mean']:>9.1f}"
                  f"{r['ms_per_image_median']:>8.1f}")
    if args.end_to_end:
        results["end_to_end"] = end_to_end(root, args.end_to_end, args.count, args.seed)
        print(json.dumps({"end_to_end": results["end_to_end"]}, indent=2))
    pathlib.Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
