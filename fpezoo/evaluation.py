"""Benchmark evaluation: ``fpezoo.evaluate(model, benchmark)`` and ``fpezoo evaluate``.

Benchmarks (data from ``../shared/data`` or ``$FPEZOO_DATA``, see its README):

* ``"aflw2000-3d"``, the 3DDFA protocol (Zhu et al., "Face Alignment Across
  Large Poses: A 3D Solution", CVPR 2016): every face is cropped from the box
  of its ground-truth 68 fitted landmarks; NME is the mean point error over
  ``sqrt(w * h)`` of that box, averaged per |yaw| bin (<= 30, 30-60, > 60) and
  over the three bins. Also reported: the same on the manual re-annotation
  (normalised by its own landmark box), inter-ocular NME (outer eye corners 36,
  45), AUC and failure rate, and TAO's region pixel errors. A 3D model (keypoints
  ``(N, K, 3)``, ``fpezoo.FAN(dimensions=3)``) is also scored against the fitted
  labels' (x, y, z) (:func:`nme_3d`, :func:`nme_depth`; ``nme_3d`` and
  ``nme_depth`` in the results).
* ``"mtfl"``: the MTFL test list (2,995 faces; Zhang et al., "Facial Landmark
  Detection by Deep Multi-task Learning", ECCV 2014): NME by the distance of
  the eye centres, failure rate at NME > 0.1. Models with more points are
  scored on the five points their scheme converts to
  (:func:`fpezoo.schemes.convert_keypoints`: eye centres are the mean of the
  eye contours). Framing (``box``): ``"landmarks"`` crops a square of
  ``enlarge`` times the longer side of the labels' five-point box
  (:func:`fpezoo.data.with_landmark_boxes`, the rule the ``retail5_mtfl`` weights were
  trained with, as the issue-5 peer numbers were measured: "a tight box
  derived from the labels"); ``"image"`` takes each 80x80 loose crop whole
  (the official-style protocol). The default is the registered model's
  framing (:func:`crop_framing`).
* ``"records"``: any labelled set read by a reader of
  :mod:`fpezoo.data.readers` (e.g. a TAO JSON file): TAO's region pixel errors
  (FPENet's KPI, in original-image pixels) and an NME.

Every face is counted: a face on which the model returns non-finite keypoints
gets NME ``inf`` (a failure; the means become ``inf``), never a skip.

Models: a Keras model, a ``.keras`` file, a registered weights name, or an
exported ``.onnx`` (onnxruntime) or ``.tflite`` file (LiteRT, fp32 / fp16 / int8).

Command line::

    fpezoo evaluate MODEL --benchmark aflw2000-3d --out result.json
    fpezoo evaluate retail5_mtfl --benchmark mtfl --box image
    fpezoo evaluate fpenet68_w64 --box-jitter 0.05 0.1 --seed 0   # detector-like boxes
    fpezoo evaluate --ced a.json b.json --out ced.png
"""

import dataclasses
import json
import numbers
import os
import pathlib
import sys
import time

import numpy as np

from fpezoo import metrics, runtime, schemes
from fpezoo.data import with_landmark_boxes
from fpezoo.runtime import DEFAULT_ENLARGE

BENCHMARKS = ("aflw2000-3d", "mtfl", "records")
# Crops: the side of the square crop is `enlarge` times the longer side of a
# face's box: the registered model's "crop" enlarge, else DEFAULT_ENLARGE (the
# framing of the AFLW training crops, measured in fpezoo.predictor). Loose face
# crops without a box are taken whole; for MTFL test that is the "image" framing
# (it matches the AFLW training crops': median eye-centre distance 0.298 vs
# 0.286 of the crop side), "landmarks" frames the labels' five-point box.
MTFL_BOXES = ("landmarks", "image")
FAILURE_THRESHOLD = 0.1
# Benchmark -> per-face error list plotted by the CED command.
PRIMARY_ERRORS = {"aflw2000-3d": "nme_box", "mtfl": "nme_eye_centres", "records": "nme"}
# Benchmark -> (its folder in the data root, its label file there); see benchmark_data.
BENCHMARK_LABELS = {"aflw2000-3d": ("aflw2000-3d", "landmarks.npz"), "mtfl": ("mtfl", "test.txt")}


def data_dir():
    """The shared data folder (see ``../shared/data/README.md``).

    Returns:
        ``$FPEZOO_DATA`` when set; else ``shared/data`` beside the project checkout
        (for an editable install) or beside the working directory (``../shared/data``,
        for an installed wheel run from the project), whichever exists, the latter
        when neither does (readers then name the missing file).
    """
    override = os.environ.get("FPEZOO_DATA")
    if override:
        return pathlib.Path(override)
    beside_checkout = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    beside_cwd = pathlib.Path.cwd().parent / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else beside_cwd


def benchmark_data(benchmark, data=None):
    """Where a benchmark's labels are, from the data root or the benchmark's own path.

    Args:
        benchmark: ``"aflw2000-3d"`` or ``"mtfl"``.
        data: the data root (the folder ``$FPEZOO_DATA`` names), the
            benchmark's folder (``aflw2000-3d``, ``mtfl``) or, for MTFL, a list
            file; None: :func:`data_dir`.

    Returns:
        The AFLW2000-3D folder (holding ``landmarks.npz``) or the MTFL list
        file (``test.txt`` unless a list file was given).

    Raises:
        FileNotFoundError: no labels there; the message names every path looked at.
    """
    folder_name, label_name = BENCHMARK_LABELS[benchmark]
    root = data_dir() if data is None else pathlib.Path(data)
    if benchmark == "mtfl" and root.is_file():
        return root
    candidates = [root / label_name, root / folder_name / label_name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate if benchmark == "mtfl" else candidate.parent
    raise FileNotFoundError(
        f"No {benchmark} labels found: looked for {candidates[0]} and {candidates[1]}. Pass --data (the "
        f"data root, the {folder_name} folder{' or a list file' if benchmark == 'mtfl' else ''}) or set "
        f"FPEZOO_DATA. Received: data={None if data is None else str(data)!r}"
    )


# --------------------------------------------------------------------------- models
def model_runner(model, input_color=None):
    """The runner that scores ``model`` (:func:`fpezoo.runtime.load_runner`).

    Keras sources (registered names included) run on Keras, exported
    ``.onnx``/``.tflite`` files on their own runtime.
    """
    exported = isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(runtime.EXPORTED_SUFFIXES)
    return runtime.load_runner(model, backend="auto" if exported else "keras", input_color=input_color)


# --------------------------------------------------------------------------- framing
def crop_framing(runner, benchmark, enlarge=None, box=None):
    """The crop a benchmark uses for a model: ``(enlarge, box)``.

    ``enlarge`` (crop side over the longer side of the face box): an explicit
    value wins, then the registered model's ``"crop": {"enlarge": ...}``, then
    :data:`DEFAULT_ENLARGE`. ``box`` (MTFL only, None for the other
    benchmarks): an explicit value wins; by default ``"landmarks"`` for a
    registered five-point model (its registered crop is ``enlarge`` times the
    box of its five points, which the MTFL labels give), else ``"image"`` (a
    registered 68-point model's box needs 68 points, which MTFL lacks).

    Args:
        runner: a :func:`model_runner`.
        benchmark: one of :data:`BENCHMARKS`.
        enlarge: explicit enlargement, or None.
        box: ``"landmarks"``, ``"image"`` or None (for ``"mtfl"`` only).

    Returns:
        ``(enlarge, box)``: a positive float and a value of
        :data:`MTFL_BOXES` (None for the other benchmarks).
    """
    if enlarge is None:
        enlarge = runner.spec.enlarge if runner.spec.enlarge is not None else DEFAULT_ENLARGE
    if not isinstance(enlarge, numbers.Real) or not 0 < enlarge < np.inf:
        raise ValueError(f"`enlarge` must be a positive number. Received: enlarge={enlarge!r}")
    if benchmark != "mtfl":
        if box is not None:
            raise ValueError(
                f"`box` chooses the framing of the 'mtfl' benchmark only. Received: box={box!r}, "
                f"benchmark={benchmark!r}")
        return float(enlarge), None
    if box is None:
        registered_five_point = runner.spec.enlarge is not None and runner.spec.scheme == "five_point"
        box = "landmarks" if registered_five_point else "image"
    if box not in MTFL_BOXES:
        raise ValueError(f"`box` must be one of {MTFL_BOXES}. Received: box={box!r}")
    return float(enlarge), box


# --------------------------------------------------------------------------- prediction
def check_box_jitter(box_jitter):
    """``box_jitter`` as a ``(shift, zoom)`` pair of floats in [0, 1), or None."""
    if box_jitter is None:
        return None
    try:
        shift, zoom = (float(value) for value in box_jitter)
    except (TypeError, ValueError):
        shift = zoom = np.nan
    if not (0.0 <= shift < 1.0 and 0.0 <= zoom < 1.0):
        raise ValueError(
            "`box_jitter` must be a (shift, zoom) pair of fractions in [0, 1). "
            f"Received: box_jitter={box_jitter!r}")
    return shift, zoom


def jitter_box(box, shift, zoom, rng):
    """A face box moved and resized at random, as a face detector's box might be.

    The centre moves by ``uniform(-shift, shift)`` of the box's width along x
    and of its height along y; both sides scale by one ``uniform(1 - zoom,
    1 + zoom)`` factor. Three draws from ``rng`` per box, in that order.

    Args:
        box: ``(x_min, y_min, x_max, y_max)``.
        shift: largest centre move, as a fraction of the box's side.
        zoom: largest relative change of the sides.
        rng: ``numpy.random.Generator``.

    Returns:
        The moved box, a tuple of four floats.
    """
    x_min, y_min, x_max, y_max = (float(value) for value in box)
    width, height = x_max - x_min, y_max - y_min
    center_x = (x_min + x_max) / 2.0 + rng.uniform(-shift, shift) * width
    center_y = (y_min + y_max) / 2.0 + rng.uniform(-shift, shift) * height
    factor = rng.uniform(1.0 - zoom, 1.0 + zoom)
    half_width, half_height = factor * width / 2.0, factor * height / 2.0
    return (center_x - half_width, center_y - half_height, center_x + half_width, center_y + half_height)


def check_rotation(rotation):
    """``rotation`` as a float in (0, 180], or None."""
    if rotation is None:
        return None
    if isinstance(rotation, bool) or not isinstance(rotation, (int, float)) or not 0.0 < rotation <= 180.0:
        raise ValueError(f"`rotation` must be a number of degrees in (0, 180]. Received: rotation={rotation!r}")
    return float(rotation)


def rotated_about_face(image, record, box, degrees):
    """The image turned by ``degrees`` about the face's centre, on a canvas that holds all of it.

    Args:
        image: the upright image.
        record: its face (:class:`fpezoo.data.records.LandmarkRecord`); the
            turned face's box is the landmark box of its turned visible points
            (the box of the turned ``box`` corners when it has none).
        box: the upright face box ``(x_min, y_min, x_max, y_max)``.
        degrees: the angle, counter-clockwise as seen in the image.

    Returns:
        ``(rotated image, matrix, rotated box)``: ``matrix`` (2, 3) maps
        upright pixel centres to the rotated image's.
    """
    from fpezoo.coordinates import rotation_transform
    from fpezoo.coordinates import transform_points, warp
    from fpezoo.data.records import landmark_box

    height, width = image.shape[:2]
    # rotation_transform turns clockwise on screen for a positive angle.
    matrix = rotation_transform(-float(degrees), ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0))
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    turned = transform_points(corners, matrix)
    matrix[:, 2] -= turned.min(axis=0) + 0.5  # the turned image's corner goes to (-0.5, -0.5)
    size = np.ceil(turned.max(axis=0) - turned.min(axis=0) - 1e-6).astype(int)
    rotated = warp(image, matrix, (int(size[1]), int(size[0])))
    visible = np.isfinite(record.keypoints).all(axis=1) & (np.asarray(record.visibility) > 0)
    if visible.any():
        points = record.keypoints[visible]
    else:
        points = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
    return rotated, matrix, tuple(float(v) for v in landmark_box(transform_points(points, matrix)))


def predict_records(runner, records, enlarge, batch_size=64, flip_test=False, progress=True,
                    description="faces", box_jitter=None, seed=0, rotation=None, upright_pass=False,
                    roll_search=False):
    """Predicts the landmarks of every record in original-image pixels.

    Each face is cropped from its box (square side ``enlarge`` times the box's
    longer side; a record without a box is a loose face crop, taken whole), run
    through the model, and mapped back: the crop -> run -> invert loop of
    :func:`fpezoo.runtime.predict_boxes`. With ``box_jitter`` each box (the
    whole image of a loose crop) is first moved by :func:`jitter_box`, drawing
    for the records in order from one generator seeded with ``seed``: the same
    faces get the same boxes on every run and for every model. With
    ``rotation``, each image is first turned about its face by a uniform random
    angle in ``[-rotation, rotation]`` degrees (:func:`rotated_about_face`,
    angles drawn in order from a second generator seeded with ``seed``), the
    face is cropped around its turned box, and the predictions are turned back
    into the upright image, so they compare with the upright labels (point
    distances do not change under rotation).

    Args:
        runner: a :func:`model_runner`.
        records: the faces (:class:`fpezoo.data.records.LandmarkRecord`).
        enlarge: crop side over the longer side of a record's box.
        batch_size: crops per model call.
        flip_test: also run the mirrored crops and average with their flipped
            back predictions (needs the runner's scheme).
        progress: show a progress bar.
        description: label of the progress bar.
        box_jitter: ``(shift, zoom)`` for :func:`jitter_box`, or None.
        seed: seed of the box jitter and of the rotation angles.
        rotation: largest angle in degrees (see above), or None.
        upright_pass: re-crop faces whose predicted landmarks show a roll their
            crop missed (see :func:`fpezoo.runtime.predict_boxes`).
        roll_search: search each face's roll from four turned crops (see
            :func:`fpezoo.runtime.predict_boxes`).

    Returns:
        ``(keypoints (N, K, D), confidence (N, K), model_runs (N,))``, float64
        / float32 / int: ``D`` is 2, or 3 when the model's keypoints carry depth
        (in original-image pixels, :attr:`fpezoo.runtime.CropPrediction.depth`);
        a face the model fails on has non-finite keypoints;
        ``model_runs`` is 2 for the faces the upright pass ran again.
    """
    from tqdm import tqdm

    from fpezoo.coordinates import invert_points
    from fpezoo.data.records import record_box

    box_jitter = check_box_jitter(box_jitter)
    rotation = check_rotation(rotation)
    rng = np.random.default_rng(seed)
    angles = np.random.default_rng([seed, 1]).uniform(-1.0, 1.0, len(records)) * (rotation or 0.0)
    keypoints, confidence, model_runs = [], [], []
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc=description, unit="batch", disable=not progress, file=sys.stderr):
        images, boxes, enlarges, turns = [], [], [], []
        for index, record in enumerate(records[start:start + batch_size], start):
            image = record.load_image(runner.spec.input_color)
            box = record_box(record, image)
            turn = None
            if rotation is not None:
                image, turn, box = rotated_about_face(image, record, box, angles[index])
            if box_jitter is not None:
                box = jitter_box(box, *box_jitter, rng)
            boxes.append((len(images), box))
            images.append(image)
            enlarges.append(1.0 if record.box is None and turn is None else enlarge)
            turns.append(turn)
        predictions = runtime.predict_boxes(runner, images, boxes, enlarge=enlarges,
                                            image_color=runner.spec.input_color, batch_size=batch_size,
                                            flip_test=flip_test, upright_pass=upright_pass,
                                            roll_search=roll_search)
        for prediction, turn in zip(predictions, turns):
            # back into the upright image (an in-plane turn leaves depth as it is)
            points = prediction.keypoints if turn is None else invert_points(prediction.keypoints, turn)
            if prediction.depth is not None:
                points = np.concatenate([points, prediction.depth[:, None]], axis=1)
            keypoints.append(points)
            confidence.append(prediction.confidence)
            model_runs.append(prediction.model_runs)
    return np.stack(keypoints).astype("float64"), np.stack(confidence).astype("float32"), np.array(model_runs)


def to_scheme(keypoints, source, target):
    """Predictions of scheme ``source`` expressed in ``target`` (every point required)."""
    if source == target:
        return keypoints
    visible = np.ones(keypoints.shape[:2], dtype="float32")
    converted, converted_visible = schemes.convert_keypoints(keypoints, visible, source, target)
    if (converted_visible == 0).any():
        missing = np.flatnonzero((converted_visible == 0).any(axis=0)).tolist()
        raise ValueError(
            f"A {source} model cannot be scored on {target} labels: points {missing} of {target} "
            f"have no counterpart. Received: scheme={source!r}"
        )
    return converted


def failed_as_inf(per_face_nme, predicted):
    """Per-face NME with faces whose predictions are not finite set to ``inf``."""
    failed = ~np.isfinite(predicted).all(axis=(1, 2))
    return np.where(failed, np.inf, per_face_nme), int(failed.sum())


def summary_statistics(errors, threshold=FAILURE_THRESHOLD):
    """Mean, median, AUC and failure rate of per-face errors (``inf`` = failure)."""
    auc, failure_rate = metrics.auc_and_failure_rate(errors, threshold)
    return {"mean": float(np.mean(errors)), "median": float(np.median(errors)),
            "auc": auc, "failure_rate": failure_rate, "threshold": threshold}


def yaw_binned_statistics(errors, yaw_deg, threshold=FAILURE_THRESHOLD):
    """The 3DDFA summary: ``mean`` of the |yaw| bin means, the ``bins``, and
    :func:`summary_statistics` over all faces (its mean as ``mean_all_faces``)."""
    overall = summary_statistics(errors, threshold)
    binned = metrics.yaw_binned_mean(errors, yaw_deg)
    return {"mean": binned["mean"], "bins": binned["bins"],
            "mean_all_faces": overall.pop("mean"), **overall}


# --------------------------------------------------------------------------- benchmarks
def evaluate(model, benchmark="aflw2000-3d", data=None, enlarge=None, batch_size=64, limit=None,
             output=None, flip_test=False, scheme=None, input_color=None, reader=None,
             reader_options=None, progress=True, box=None, box_jitter=None, seed=0, rotation=None,
             validation_split=None, upright_pass=False, roll_search=False):
    """Scores a model on a benchmark and returns (and optionally saves) the numbers.

    Args:
        model: a Keras model, a ``.keras`` file, a registered weights name, an
            ``.onnx`` or a ``.tflite`` file.
        benchmark: ``"aflw2000-3d"``, ``"mtfl"`` or ``"records"``.
        data: the data root, or the benchmark's folder or list file (see
            :func:`benchmark_data`; default: :func:`data_dir`); for
            ``"records"``, the label file or folder.
        enlarge: crop side over the longer side of the face box (default: the
            registered model's, else :data:`DEFAULT_ENLARGE`); faces without a
            box (MTFL's loose crops with ``box="image"``) are taken whole.
        batch_size: crops per model call.
        limit: score only the first ``limit`` faces (quick checks; the JSON says so).
        output: optional JSON path for the results.
        flip_test: average with the predictions on mirrored crops.
        scheme: the model's keypoint scheme (default: registered or by count).
        input_color: colour order the model takes (default: from the model).
        reader: for ``"records"``, a reader name of :data:`fpezoo.data.readers.READERS`.
        reader_options: keyword arguments for that reader.
        progress: show a progress bar.
        box: for ``"mtfl"``, ``"landmarks"`` (crop from the labels' five-point
            box) or ``"image"`` (each loose crop whole); default: the
            registered model's framing (see :func:`crop_framing`).
        box_jitter: ``(shift, zoom)``: score with every face box moved by
            :func:`jitter_box` (up to ``shift`` of its size off centre, sides
            scaled by up to ``1 +- zoom``), the robustness to a detector's
            boxes; None keeps the protocol's boxes.
        seed: seed of the box jitter and the rotation (the same seed gives
            every model the same boxes and angles).
        rotation: score with every image turned about its face by a uniform
            random angle in ``[-rotation, rotation]`` degrees and cropped around
            the turned face's box (:func:`predict_records`), the robustness to
            in-plane rotation; errors keep the upright face's normalisation.
        validation_split: for ``"records"``, ``(fraction, seed)``: score only
            the faces of a training config's validation split
            (:func:`fpezoo.data.records.in_validation_split`, the split
            ``data.validation_fraction`` and ``seed`` carve out of that file).
        upright_pass: the predictor's second pass: faces whose predicted
            landmarks show a roll more than
            :data:`fpezoo.runtime.UPRIGHT_PASS_MIN_DEGREES` away from their
            crop's are cropped again upright and run again
            (:func:`fpezoo.runtime.predict_boxes`). Off by default, so the
            number is the model's alone.
        roll_search: the roll search for boxes at an unknown angle: each face
            is run in four turned crops, each prediction re-cropped upright by
            its landmarks' roll, and the most confident, self-consistent
            re-crop kept (:func:`fpezoo.runtime.predict_boxes`; eight model
            runs per face). Off by default.

    Returns:
        A JSON-able dict of results, including ``per_face`` errors (for CED
        plots) and ``weights_sha256``: the sha256 of the registered weights
        file, or of the ``.keras`` / ``.onnx`` / ``.tflite`` file (None for a
        model object), so a recorded number names the weights it measured.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"`benchmark` must be one of {BENCHMARKS}. Received: benchmark={benchmark!r}")
    if benchmark in BENCHMARK_LABELS:
        data = benchmark_data(benchmark, data)
    runner = model_runner(model, input_color)
    model_scheme = scheme or runner.spec.scheme or schemes.scheme_for_num_keypoints(runner.spec.num_keypoints).name
    runner.spec = dataclasses.replace(runner.spec, scheme=model_scheme)
    enlarge, box = crop_framing(runner, benchmark, enlarge, box)
    box_jitter = check_box_jitter(box_jitter)
    rotation = check_rotation(rotation)
    started = time.time()
    options = {"enlarge": enlarge, "box": box, "batch_size": batch_size, "flip_test": flip_test,
               "progress": progress, "scheme": model_scheme, "box_jitter": box_jitter, "seed": seed,
               "rotation": rotation, "validation_split": validation_split, "upright_pass": upright_pass,
               "roll_search": roll_search}
    if benchmark == "aflw2000-3d":
        results = _evaluate_aflw2000_3d(runner, data, limit, options)
    elif benchmark == "mtfl":
        results = _evaluate_mtfl(runner, data, limit, options)
    else:
        results = _evaluate_records(runner, data, reader, reader_options or {}, limit, options)
    results = {
        "benchmark": benchmark,
        "model": runner.spec.name,
        "model_scheme": model_scheme,
        "weights_sha256": runner.spec.weights_sha256,
        "crop": {"enlarge": enlarge, **({"box": box} if box is not None else {}),
                 "input_size": list(runner.spec.input_size), "input_color": runner.spec.input_color,
                 "flip_test": flip_test,
                 **({"box_jitter": {"shift": box_jitter[0], "zoom": box_jitter[1], "seed": seed}}
                    if box_jitter is not None else {}),
                 **({"rotation": {"max_deg": rotation, "seed": seed}} if rotation is not None else {}),
                 **({"upright_pass": {"faces_run_twice": options.get("faces_run_twice", 0)}}
                    if upright_pass and not roll_search else {}),
                 **({"roll_search": {"model_runs": options.get("model_runs", 0)}} if roll_search else {}),
                 **({"validation_split": list(validation_split)} if validation_split is not None else {})},
        "limit": limit,
        "seconds": round(time.time() - started, 1),
        "primary": PRIMARY_ERRORS[benchmark],
        **results,
    }
    if output is not None:
        path = pathlib.Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    return results


def _limited(records, limit):
    return records if limit is None else records[:int(limit)]


def _predict(runner, records, options, description):
    """:func:`predict_records` with :func:`evaluate`'s options; the keypoints (with depth, if any) only.

    The faces the upright pass ran again are counted in ``options["faces_run_twice"]``,
    the crops run in ``options["model_runs"]``.
    """
    predicted, _, model_runs = predict_records(
        runner, records, options["enlarge"], options["batch_size"], options["flip_test"], options["progress"],
        description, options["box_jitter"], options["seed"], options["rotation"], options["upright_pass"],
        options["roll_search"])
    options["faces_run_twice"] = options.get("faces_run_twice", 0) + int((model_runs > 1).sum())
    options["model_runs"] = options.get("model_runs", 0) + int(model_runs.sum())
    return predicted


def _evaluate_aflw2000_3d(runner, folder, limit, options):
    from fpezoo.data.readers import read_aflw2000_3d

    fitted = _limited(read_aflw2000_3d(folder, labels="fitted"), limit)
    reannotated = _limited(read_aflw2000_3d(folder, labels="reannotated"), limit)
    # Each record's box is the box of its fitted 68 points (the 3DDFA crop).
    predicted = _predict(runner, fitted, options, "AFLW2000-3D")
    yaw = np.array([record.metadata["yaw_deg"] for record in fitted])
    # A 3D ibug68 model is also scored in 3D, on the same predictions.
    three_d = (_evaluate_3d(predicted, fitted, yaw) if predicted.shape[-1] == 3 and options["scheme"] == "ibug68"
               else {})
    predicted = to_scheme(predicted[..., :2], options["scheme"], "ibug68")
    fitted_points = np.stack([record.keypoints for record in fitted])
    reannotated_points = np.stack([record.keypoints for record in reannotated])
    nme_box, failed = failed_as_inf(metrics.nme(predicted, fitted_points, normalization="box_area"), predicted)
    nme_reannotated, _ = failed_as_inf(
        metrics.nme(predicted, reannotated_points, normalization="box_area"), predicted)
    nme_inter_ocular, _ = failed_as_inf(
        metrics.nme(predicted, fitted_points, normalization="inter_ocular", scheme="ibug68"), predicted)
    return {
        "faces": len(fitted),
        "failed_faces": failed,
        **three_d.pop("summary", {}),
        "nme_box": yaw_binned_statistics(nme_box, yaw),
        "nme_box_reannotated": yaw_binned_statistics(nme_reannotated, yaw),
        "nme_inter_ocular": yaw_binned_statistics(nme_inter_ocular, yaw),
        "region_pixel_error": _region_errors(predicted, fitted_points, None, "ibug68"),
        "per_face": {"nme_box": nme_box.tolist(), "nme_box_reannotated": nme_reannotated.tolist(),
                     "nme_inter_ocular": nme_inter_ocular.tolist(), "yaw_deg": yaw.tolist(),
                     **three_d.pop("per_face", {})},
    }


# --------------------------------------------------------------------------- 3D
def _offset_free(points):
    """``(N, K, 3)`` points with each face's mean depth removed (depth has no common origin)."""
    points = np.array(points, dtype="float64")
    points[..., 2] -= points[..., 2].mean(axis=-1, keepdims=True)
    return points


def _box_scale(target):
    """``sqrt(w h)`` of each face's 2D landmark box, ``(N,)`` (the 3DDFA normaliser)."""
    target = np.asarray(target, dtype="float64")
    extent = target[..., :2].max(axis=-2) - target[..., :2].min(axis=-2)
    return np.sqrt(extent[..., 0] * extent[..., 1])


def nme_3d(predicted, target):
    """Per-face 3D NME: mean 3D point error after aligning the depth offset, over sqrt(w h).

    Depth labels and predictions each have an arbitrary per-face offset (the
    fitted AFLW2000-3D z, a 3D teacher's z whose smallest value is 0, a
    network's), so each face's mean z is removed from both before the distance:
    ``mean_k || (x, y, z - mean z)_pred - (x, y, z - mean z)_true ||`` over
    ``sqrt(w h)`` of the box of the true (x, y) (the 3DDFA normaliser of the 2D
    NME). x, y and z must share one unit (pixels; larger z nearer the camera in
    both, as in AFLW2000-3D and the 3DDFA_V2 teacher files). It is at least the
    2D NME of the same points, and equals it when the depths agree.

    Args:
        predicted: ``(N, K, 3)`` or ``(K, 3)`` points with depth.
        target: the same shape.

    Returns:
        ``(N,)`` float64 (a float for one face); non-finite predictions give NaN.
    """
    predicted, target = _check_3d(predicted, target)
    distance = np.linalg.norm(_offset_free(predicted) - _offset_free(target), axis=-1)
    return _per_face(distance.mean(axis=-1) / _box_scale(target), predicted)


def nme_depth(predicted, target):
    """Per-face depth-only NME: mean ``|z' - z'_true|`` (offsets removed as in :func:`nme_3d`)
    over ``sqrt(w h)`` of the true 2D box: the depth's share of :func:`nme_3d`."""
    predicted, target = _check_3d(predicted, target)
    difference = np.abs(_offset_free(predicted)[..., 2] - _offset_free(target)[..., 2])
    return _per_face(difference.mean(axis=-1) / _box_scale(target), predicted)


def _check_3d(predicted, target):
    predicted = np.asarray(predicted, dtype="float64")
    target = np.asarray(target, dtype="float64")
    if predicted.shape != target.shape or predicted.shape[-1] != 3 or predicted.ndim not in (2, 3):
        raise ValueError(
            "3D errors need predicted and true points of one shape, (N, K, 3) or (K, 3) = x, y, z. "
            f"Received: predicted.shape={predicted.shape}, target.shape={target.shape}")
    return predicted, target


def _per_face(values, predicted):
    values = np.asarray(values, dtype="float64")
    return float(values) if predicted.ndim == 2 else values


def _evaluate_3d(predicted, fitted, yaw):
    """The 3D part of the AFLW2000-3D results of ``(N, 68, 3)`` predictions with depth.

    Returns ``{"summary": {...}, "per_face": {...}}`` to merge into the results:
    ``nme_3d`` and ``nme_depth`` (:func:`yaw_binned_statistics` of
    :func:`nme_3d` and :func:`nme_depth` against the fitted (x, y, z)), from the
    same predictions as the 2D numbers.
    """
    target = np.stack([np.concatenate([record.keypoints, record.metadata["z"][:, None]], axis=1)
                       for record in fitted])
    errors_3d, _ = failed_as_inf(nme_3d(predicted, target), predicted)
    errors_depth, _ = failed_as_inf(nme_depth(predicted, target), predicted)
    return {
        "summary": {"nme_3d": yaw_binned_statistics(errors_3d, yaw),
                    "nme_depth": yaw_binned_statistics(errors_depth, yaw)},
        "per_face": {"nme_3d": errors_3d.tolist(), "nme_depth": errors_depth.tolist()},
    }


def _region_errors(predicted, target, visibility, scheme, scale=None):
    """TAO's region pixel errors; faces the model failed on are left out of them."""
    finite = np.isfinite(predicted).all(axis=(1, 2))
    if not finite.any():
        return None
    return metrics.region_pixel_error(
        predicted[finite], target[finite], None if visibility is None else visibility[finite],
        scheme=scheme, regions=metrics.tao_regions(scheme),
        scale=None if scale is None else np.broadcast_to(scale, finite.shape)[finite],
    )


def _evaluate_mtfl(runner, list_file, limit, options):
    from fpezoo.data.readers import read_mtfl

    records = _limited(read_mtfl(list_file), limit)
    if options["box"] == "landmarks":
        # MTFL rows label all five points, so no record is dropped.
        records, _ = with_landmark_boxes(records, "five_point")
    # Otherwise the records have no box: the loose 80x80 crops are taken whole.
    predicted = _predict(runner, records, options, "MTFL")
    predicted = to_scheme(predicted[..., :2], options["scheme"], "five_point")
    target = np.stack([record.keypoints for record in records])
    errors, failed = failed_as_inf(
        metrics.nme(predicted, target, normalization="eye_centres", scheme="five_point"), predicted)
    return {
        "faces": len(records),
        "failed_faces": failed,
        "nme_eye_centres": summary_statistics(errors),
        "region_pixel_error": _region_errors(predicted, target, None, "five_point"),
        "per_face": {"nme_eye_centres": errors.tolist()},
    }


def _evaluate_records(runner, label_file, reader, reader_options, limit, options):
    from fpezoo.data import readers

    if reader not in readers.READERS or label_file is None:
        raise ValueError(
            f"The 'records' benchmark needs `reader` (one of {sorted(readers.READERS)}) and `data` (the "
            f"label file or folder). Received: reader={reader!r}, data={label_file!r}"
        )
    records = readers.READERS[reader](label_file, **reader_options)
    if options["validation_split"] is not None:
        from fpezoo.data.records import in_validation_split

        fraction, seed = options["validation_split"]
        records = [record for record in records if in_validation_split(record, fraction, int(seed))]
    records = _limited(records, limit)
    names = {record.scheme for record in records}
    if len(names) != 1:
        raise ValueError(f"The label file mixes keypoint schemes. Received: schemes={sorted(names)}")
    label_scheme = names.pop()
    predicted = _predict(runner, records, options, str(label_file))
    predicted = to_scheme(predicted[..., :2], options["scheme"], label_scheme)
    target = np.stack([record.keypoints for record in records])
    visibility = np.stack([record.visibility for record in records])
    resolved = schemes.get_scheme(label_scheme)
    normalization = ("inter_ocular" if resolved.outer_eye_corners is not None
                     else "eye_centres" if resolved.eye_centres is not None else "box_area")
    errors = metrics.nme(predicted, target, visibility, normalization=normalization, scheme=label_scheme)
    errors, failed = failed_as_inf(errors, predicted)
    undefined = int(np.isnan(errors).sum())
    if undefined:
        raise ValueError(
            f"{undefined} faces have no visible point or an undefined {normalization} distance, so "
            f"their NME is undefined. Received: data={str(label_file)!r}"
        )
    return {
        "faces": len(records),
        "failed_faces": failed,
        "normalization": normalization,
        "nme": summary_statistics(errors),
        "region_pixel_error": _region_errors(predicted, target, visibility, label_scheme),
        "per_face": {"nme": errors.tolist()},
    }


# --------------------------------------------------------------------------- reporting
def format_table(results):
    """A plain-text table of the headline numbers of one result dict."""
    sha = results.get("weights_sha256")
    weights_note = f", weights sha256 {sha[:12]}..." if sha else ""
    jitter = results.get("crop", {}).get("box_jitter")
    jitter_note = (f", boxes moved by up to {jitter['shift']:g} and scaled by 1 +- {jitter['zoom']:g} "
                   f"(seed {jitter['seed']})" if jitter else "")
    rotation = results.get("crop", {}).get("rotation")
    rotation_note = (f", images turned by up to +-{rotation['max_deg']:g} degrees (seed {rotation['seed']})"
                     if rotation else "")
    crop = results.get("crop", {})
    search_note = (", roll search" if crop.get("roll_search") else ", upright pass" if crop.get("upright_pass")
                   else "")
    lines = [f"{results['benchmark']}: {results['model']} ({results['faces']} faces, "
             f"{results['failed_faces']} failed, {results['seconds']} s{weights_note}{jitter_note}"
             f"{rotation_note}{search_note})"]
    for key in ("nme_box", "nme_box_reannotated", "nme_inter_ocular", "nme_eye_centres", "nme",
                "nme_3d", "nme_depth"):
        if key not in results:
            continue
        entry = results[key]
        bins = entry.get("bins")
        binned = "  ".join(f"{label}: {100 * value['mean']:.2f}" for label, value in bins.items()) if bins else ""
        lines.append(
            f"  {key:<22} mean {100 * entry['mean']:6.2f} %  {binned}  "
            f"AUC@{entry['threshold']}: {entry['auc']:.3f}  failures: {100 * entry['failure_rate']:.2f} %"
        )
    regions = results.get("region_pixel_error")
    if regions:
        lines.append("  region pixel error (px): " + "  ".join(
            f"{name}: {value:.2f}" for name, value in regions.items()))
    return "\n".join(lines)


def plot_ced(result_files, output, threshold=None, labels=None):
    """Plots the cumulative error distributions of result files on one figure.

    Args:
        result_files: JSON files written by :func:`evaluate`.
        output: the PNG path.
        threshold: largest error on the x axis (default: the files' failure threshold).
        labels: legend labels (default: the model names).

    Returns:
        The output path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    if not result_files:
        raise ValueError("plot_ced needs at least one result file. Received: result_files=[]")
    loaded = []
    for path in result_files:
        results = json.loads(pathlib.Path(path).read_text())
        if "per_face" not in results or results.get("primary") not in results["per_face"]:
            raise ValueError(f"{path} is not a result file of fpezoo evaluate. Received: path={str(path)!r}")
        loaded.append(results)
    benchmarks = {results["benchmark"] for results in loaded}
    if len(benchmarks) != 1:
        raise ValueError(f"CED curves compare one benchmark. Received: benchmarks={sorted(benchmarks)}")
    figure, axes = pyplot.subplots(figsize=(6, 4.5), dpi=120)
    for index, results in enumerate(loaded):
        errors = np.asarray(results["per_face"][results["primary"]], dtype="float64")
        limit = threshold or results[results["primary"]]["threshold"]
        x, fraction = metrics.ced_curve(errors, limit)
        label = labels[index] if labels else pathlib.Path(results["model"]).name
        if not labels and results.get("crop", {}).get("flip_test"):
            label += " + flip test"
        if not labels and results.get("crop", {}).get("box_jitter"):
            label += " + box jitter"
        if not labels and results.get("crop", {}).get("rotation"):
            label += f" + rotation +-{results['crop']['rotation']['max_deg']:g}"
        axes.plot(100 * x, 100 * fraction,
                  label=f"{label} (mean {100 * results[results['primary']]['mean']:.2f} %)")
    axes.set_xlabel(f"NME ({loaded[0]['primary']}, %)")
    axes.set_ylabel("faces (%)")
    axes.set_title(f"CED on {benchmarks.pop()}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(output)
    pyplot.close(figure)
    return output


# --------------------------------------------------------------------------- CLI
def configure_parser(parser):
    """Options of ``fpezoo evaluate``."""
    parser.add_argument("model", nargs="?",
                        help="registered weights name, .keras, .onnx or .tflite file")
    parser.add_argument("--benchmark", default="aflw2000-3d", choices=BENCHMARKS)
    parser.add_argument("--data", help="benchmark folder / list / label file (default: ../shared/data)")
    parser.add_argument("--reader", help="reader for --benchmark records (e.g. tao_json)")
    parser.add_argument("--reader-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword argument of --reader (VALUE read as JSON when it parses, "
                             "else as text), e.g. image_root=../shared/data/aflw-crops one_based=false")
    parser.add_argument("--enlarge", type=float,
                        help="crop side over the face box's longer side (default: the registered "
                             f"model's, else {DEFAULT_ENLARGE})")
    parser.add_argument("--box", choices=MTFL_BOXES,
                        help="MTFL framing: 'landmarks' crops from the labels' five-point box, "
                             "'image' takes each 80x80 crop whole (default: the registered model's "
                             "framing: landmarks for five-point models, else image)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, help="only the first N faces (quick check)")
    parser.add_argument("--flip-test", action="store_true", help="average with mirrored crops")
    parser.add_argument("--box-jitter", nargs=2, type=float, metavar=("SHIFT", "ZOOM"),
                        help="move every face box by up to SHIFT of its size and scale it by up to "
                             "1 +- ZOOM at random (robustness to detector boxes), e.g. 0.05 0.1")
    parser.add_argument("--rotation", type=float, metavar="MAX_DEG",
                        help="turn every image about its face by a random angle in +-MAX_DEG and crop "
                             "around the turned face (robustness to in-plane rotation), e.g. 180")
    parser.add_argument("--upright-pass", action="store_true",
                        help="re-crop faces whose predicted landmarks are turned by more than "
                             f"{runtime.UPRIGHT_PASS_MIN_DEGREES:g} degrees, upright, and run them again "
                             "(what LandmarkDetector does); off: the model alone")
    parser.add_argument("--roll-search", action="store_true",
                        help="for faces at an unknown angle: run four turned crops of each face, re-crop each "
                             "upright by its landmarks' roll, keep the most confident self-consistent one "
                             "(8 model runs per face; what LandmarkDetector does for given boxes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --box-jitter and --rotation")
    parser.add_argument("--validation-split", nargs=2, type=float, metavar=("FRACTION", "SEED"),
                        help="--benchmark records: only the faces of a training config's validation "
                             "split (its data.validation_fraction and seed), e.g. 0.05 0")
    parser.add_argument("--scheme", help="the model's keypoint scheme (default: by keypoint count)")
    parser.add_argument("--out", help="result JSON (or the PNG with --ced)")
    parser.add_argument("--ced", nargs="+", metavar="RESULT_JSON",
                        help="plot the CED of these result files to --out instead of evaluating")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="with --ced: the legend label of each result file (default: model names)")
    parser.add_argument("--no-progress", action="store_true")


def _reader_options(pairs):
    """``["KEY=VALUE", ...]`` as a dict; each value is JSON when it parses, else text."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"A reader option is KEY=VALUE. Received: reader_option={pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run(args):
    """``fpezoo evaluate``: score a model, or plot CED curves with ``--ced``.

    Returns:
        0, or 2 with a one-line message on a usage error (missing data or
        model file, bad option value).
    """
    try:
        return _run(args)
    except (OSError, LookupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args):
    if args.ced:
        if not args.out:
            print("error: --ced needs --out ced.png", file=sys.stderr)
            return 2
        if args.labels and len(args.labels) != len(args.ced):
            print(f"error: --labels needs one label per --ced file. Received: {len(args.labels)} labels, "
                  f"{len(args.ced)} files", file=sys.stderr)
            return 2
        print(plot_ced(args.ced, args.out, labels=args.labels))
        return 0
    if not args.model:
        print("error: give a model (registered name, .keras, .onnx or .tflite) or --ced files", file=sys.stderr)
        return 2
    results = evaluate(
        args.model, args.benchmark, data=args.data, enlarge=args.enlarge, batch_size=args.batch_size,
        limit=args.limit, output=args.out, flip_test=args.flip_test, scheme=args.scheme,
        reader=args.reader, reader_options=_reader_options(args.reader_option),
        progress=not args.no_progress, box=args.box,
        box_jitter=args.box_jitter, seed=args.seed, rotation=args.rotation, upright_pass=args.upright_pass,
        roll_search=args.roll_search,
        validation_split=args.validation_split,
    )
    print(format_table(results))
    if args.out:
        print(f"saved {args.out}")
    return 0
