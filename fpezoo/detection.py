"""Offline face detectors for the landmark predictor.

Nothing is downloaded: every detector here runs on weights that ship inside
fpezoo or inside a package from PyPI.

* :class:`BlazeFaceDetector` (the default) is MediaPipe's short-range face
  detector, ``face_detection_short_range.tflite`` (Apache-2.0, bundled in
  ``fpezoo/assets``), run with LiteRT on one thread (``pip install
  ai-edge-litert``; no TensorFlow): a box, a score and 6 points per face (eyes,
  nose tip, mouth centre, ears). Bazarevsky et al., "BlazeFace: Sub-millisecond
  Neural Face Detection on Mobile GPUs", CVPR Workshops 2019
  (https://arxiv.org/abs/1907.05047).
* :class:`MTCNNDetector` (``pip install mtcnn``, MIT; TensorFlow, weights in the
  wheel) gives a box, a score and 5 points per face. Zhang et al., "Joint Face
  Detection and Alignment using Multi-task Cascaded Convolutional Networks",
  IEEE SPL 2016 (https://arxiv.org/abs/1604.02878).
* :class:`DlibHOGDetector` (``pip install dlib-bin``, Boost licence) is dlib's
  HOG + linear SVM frontal face detector. Dalal & Triggs, "Histograms of Oriented
  Gradients for Human Detection", CVPR 2005; King, "Max-Margin Object
  Detection", arXiv:1502.00046.
* :class:`LBPCascadeDetector` runs OpenCV's LBP frontal face cascade with
  scikit-image's own cascade code (both ship in ``scikit-image``; no OpenCV
  needed); overlapping windows of one face are merged by
  :func:`non_max_suppression`. Liao et al., "Learning Multi-scale Block Local
  Binary Patterns for Face Recognition", ICB 2007.

Any object with a ``detect(image_rgb) -> list of Detection`` method (a
:class:`Detection` is a ``(box, score, points)`` named tuple) plugs into
:class:`fpezoo.LandmarkDetector`. Boxes are ``(x_min, y_min, x_max, y_max)`` in
pixel-corner units of the image they were found in, points ``(x, y)`` in the
pixel-centre convention of ``docs/DESIGN.md``.

The default detector, :data:`DEFAULT_DETECTOR`, was chosen by
``python benchmarks/detection.py`` (detection rate on AFLW2000-3D and on the MTFL
test crops, and milliseconds per image).
"""

import abc
import math
import pathlib
from typing import NamedTuple, Optional

import numpy as np

from fpezoo.coordinates import rescale_points

DEFAULT_DETECTOR = "blazeface"
# Images are searched for faces at this longest side at most (a 20000x20000
# photo is detected on a downscaled copy; the landmarks use the full image).
DEFAULT_MAX_DETECTION_SIDE = 1280
# Names of MTCNN's five points, in the order of Detection.points ("left" is the
# image left of an upright face).
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# Names of BlazeFace's six points, in the order of Detection.points.
BLAZEFACE_POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth", "left_ear", "right_ear")
# Detections of one face overlap at least this much (IoU); the NMS threshold
# of MediaPipe's face detection graph.
NMS_IOU_THRESHOLD = 0.3
BLAZEFACE_MODEL = pathlib.Path(__file__).parent / "assets" / "face_detection_short_range.tflite"


class Detection(NamedTuple):
    """One detected face.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` in pixel-corner units.
        score: the detector's confidence (its own scale: a probability for
            MTCNN and BlazeFace, an SVM margin for dlib).
        points: optional ``(P, 2)`` float array whose first two points are the
            eye centres (the image-left eye of the upright face first; they
            give the face's roll), e.g. MTCNN's :data:`FIVE_POINT_NAMES` or
            BlazeFace's :data:`BLAZEFACE_POINT_NAMES`; or None.
    """

    box: tuple
    score: float
    points: Optional[np.ndarray] = None


class FaceDetector(abc.ABC):
    """Interface of a face detector: ``detect(image_rgb) -> list[Detection]``.

    Attributes:
        name: short name used in outputs and benchmarks.
        landmark_box_calibration: ``(centre_x, centre_y, width, height)`` that
            turn this detector's box into the box of the face's 68 landmarks
            (which training crops are cut around): centre offsets in box
            widths / heights and size ratios, medians over training faces
            (:func:`fit_landmark_box_calibration`, ``python
            benchmarks/detection.py --fit-calibration``; never fitted on the
            AFLW2000-3D benchmark); None when not measured. An optional fifth
            number, the roll gain ``g``, scales the sizes of faces turned
            in-plane by ``1 + g * sin(2 * roll) ** 2`` (1 at quarter turns,
            ``1 + g`` half-way between; :func:`landmark_box`,
            :func:`fit_landmark_box_roll_gain`, ``python
            benchmarks/detection.py --fit-roll``).
        rotation_search: how :class:`fpezoo.LandmarkDetector` searches quarter
            turns of still images with ``rotations="auto"``: ``"best"`` (all
            four turns, for fast detectors) or ``"fallback"`` (only when no
            face is found upright).
        turned_min_score: detections in quarter-turned images need at least
            this score, unless they overlap a face found upright (None: the
            detector's own threshold).
        upright_score: with ``"best"``, images whose faces all score at least
            this upright are not searched turned (None: always searched).
        detection_side: longest image side the detector gains nothing from
            exceeding (its input size): :class:`fpezoo.LandmarkDetector` hands
            it images downscaled to at most this side. None: no such limit.
        mouth_points: indices of the :attr:`Detection.points` whose mean is
            the mouth centre (with the eyes it gives the face's roll,
            :func:`fpezoo.coordinates.roll_from_eyes`); None: no mouth point.
    """

    name = "detector"
    landmark_box_calibration = None
    rotation_search = "fallback"
    turned_min_score = None
    upright_score = None
    detection_side = None
    mouth_points = None

    @abc.abstractmethod
    def detect(self, image_rgb):
        """Finds the faces of one image.

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB array.

        Returns:
            A list of :class:`Detection`, possibly empty.
        """

    def __repr__(self):
        return f"{type(self).__name__}()"


class BlazeFaceDetector(FaceDetector):
    """MediaPipe's BlazeFace short-range detector run with LiteRT (boxes, scores, 6 points).

    The image is resized to fit the model's 128x128 input (aspect ratio kept)
    and padded to a square (black, right and bottom), and the 896 anchor predictions are decoded and merged
    by weighted non-maximum suppression, as MediaPipe's face detection graph
    does (``face_detection_short_range.pbtxt``). The model was trained on
    faces that fill a good part of the picture (selfies, portraits): faces
    smaller than about a tenth of the image's longer side are missed.

    Args:
        min_score: detections below this score (a probability) are dropped.
        iou_threshold: overlapping predictions above this IoU are merged.
        num_threads: LiteRT interpreter threads.
    """

    name = "blazeface"
    # Fitted on training faces, never on the benchmark: python benchmarks/detection.py --fit-calibration
    # --detectors blazeface mtcnn --count 1000 --output docs/benchmarks/detection_calibration.json (1000 MTFL
    # train and 1000 AFLW crops, 3DDFA_V2 teacher landmark boxes; 1963 of the 2000 faces matched).
    # Held out on AFLW2000-3D (docs/benchmarks/detection_blazeface.json), as good as the former
    # constants fitted there: median IoU with the landmark box 0.841, end-to-end NME 4.70 %.
    # Fifth, the roll gain: its boxes shrink for faces turned off the quarter turns (anchors trained on
    # upright faces), sizes x (1 + 0.200 sin(2 roll) ** 2), 1.20 at 45 degrees. Fitted on the same
    # training faces turned every 5 degrees in [-45, 45]: python benchmarks/detection.py --fit-roll
    # --count 250 --output docs/benchmarks/detection_roll_calibration.json (9362 of 9500 turned faces
    # matched; medians per 5-degree bin of the detector's roll within 0.015 of the curve). Held out on
    # AFLW2000-3D: end-to-end NME 4.68 -> 4.63 % (docs/benchmarks/detection_blazeface.json), 45-degree
    # turned photos 4.10 -> 3.24 % (206 frontal faces).
    landmark_box_calibration = (0.001, 0.062, 0.931, 0.925, 0.200)
    # It finds faces lying on their side or upside down with eye points as if
    # upright, scoring them lower than in the right turn, and is fast: the
    # predictor searches all four turns. Turned images add false alarms
    # (bodies, hair) scoring 0.5-0.7: there a new face needs a higher score. Of
    # the first 200 AFLW2000-3D faces, 0.3 % score 0.92 or more in a wrong
    # quarter turn and 48 % upright (python benchmarks/detection.py
    # --turn-scores --count 200): a face scoring 0.92 upright is not searched turned.
    rotation_search = "best"
    turned_min_score = 0.75
    upright_score = 0.92
    detection_side = 128
    mouth_points = (3,)
    # MediaPipe's SSD anchors for this model: strides 8, 16, 16, 16 on a 128x128
    # input, two anchors per cell and stride (ssd_anchors_calculator).
    _INPUT_SIDE = 128
    _STRIDES_AND_ANCHORS = ((8, 2), (16, 6))

    def __init__(self, min_score=0.5, iou_threshold=NMS_IOU_THRESHOLD, num_threads=1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(
                "BlazeFaceDetector runs with LiteRT: pip install ai-edge-litert "
                "(or pip install fpezoo[export])."
            ) from error
        if not 0 <= min_score <= 1:
            raise ValueError(f"`min_score` must be in [0, 1]. Received: min_score={min_score!r}")
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"`iou_threshold` must be in (0, 1]. Received: iou_threshold={iou_threshold!r}")
        self.min_score = float(min_score)
        self.iou_threshold = float(iou_threshold)
        self._interpreter = Interpreter(model_path=str(BLAZEFACE_MODEL), num_threads=int(num_threads))
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {d["shape"][-1]: d["index"] for d in self._interpreter.get_output_details()}
        self._regressors, self._scores = outputs[16], outputs[1]
        self._anchors = self._make_anchors()

    @classmethod
    def _make_anchors(cls):
        """``(896, 2)`` anchor centres in units of the input side."""
        anchors = []
        for stride, per_cell in cls._STRIDES_AND_ANCHORS:
            cells = cls._INPUT_SIDE // stride
            centres = (np.arange(cells) + 0.5) / cells
            grid_x, grid_y = np.meshgrid(centres, centres)
            anchors.append(np.repeat(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), per_cell, axis=0))
        return np.concatenate(anchors).astype("float32")

    def detect(self, image_rgb):
        import cv2

        image_rgb = _check_rgb(image_rgb)
        height, width = image_rgb.shape[:2]
        scale = self._INPUT_SIDE / max(height, width)
        small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        square = np.zeros((self._INPUT_SIDE, self._INPUT_SIDE, 3), np.float32)
        square[:small_h, :small_w] = cv2.resize(image_rgb, (small_w, small_h), interpolation=interpolation)
        self._interpreter.set_tensor(self._input, (square / 127.5 - 1.0)[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._regressors)[0]
        logits = np.clip(self._interpreter.get_tensor(self._scores)[0, :, 0], -80.0, 80.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, anchors, scores = raw[keep] / self._INPUT_SIDE, self._anchors[keep], scores[keep]
        # Offsets and sizes are in input pixels, relative to the anchor centre;
        # unit coordinates of the input are its pixel-corner units / 128, and
        # input pixels are (width / small_w, height / small_h) image pixels.
        units = self._INPUT_SIDE * np.array([width / small_w, height / small_h])
        centres = raw[:, :2] + anchors
        boxes = np.concatenate([centres - raw[:, 2:4] / 2, centres + raw[:, 2:4] / 2], axis=1) * np.tile(units, 2)
        points = (raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None]) * units - 0.5
        return non_max_suppression(boxes, scores, self.iou_threshold, points=points, weighted=True)

    def __repr__(self):
        return f"BlazeFaceDetector(min_score={self.min_score}, iou_threshold={self.iou_threshold})"


class MTCNNDetector(FaceDetector):
    """MTCNN from the ``mtcnn`` package (boxes, scores and 5 points).

    Args:
        min_face_size: smallest face side searched, in pixels.
        thresholds: score thresholds of the P-, R- and O-Net stages.
        min_score: detections below this final score are dropped.
    """

    name = "mtcnn"
    # Fitted on training faces with BlazeFace's (its command; 1893 of 2000 faces matched). Held out on
    # 500 AFLW2000-3D photos (docs/benchmarks/detection_others.json): median IoU with the landmark box
    # 0.822, against 0.842 with the former constants fitted there (boxes 6 % too tall there).
    landmark_box_calibration = (0.018, 0.127, 1.050, 0.800)
    mouth_points = (3, 4)

    def __init__(self, min_face_size=20, thresholds=(0.6, 0.7, 0.8), min_score=0.0):
        try:
            from mtcnn import MTCNN
        except ImportError as error:
            raise ImportError(
                "MTCNNDetector needs the `mtcnn` package: pip install mtcnn "
                "(or pip install fpezoo[detect])."
            ) from error
        if not min_face_size >= 1:
            raise ValueError(f"`min_face_size` must be >= 1. Received: min_face_size={min_face_size!r}")
        if len(thresholds) != 3:
            raise ValueError(
                f"`thresholds` must hold three values (P-, R-, O-Net). Received: thresholds={thresholds!r}"
            )
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_score = float(min_score)
        self._mtcnn = MTCNN(stages="face_and_landmarks_detection")

    def detect(self, image_rgb):
        image_rgb = _check_rgb(image_rgb)
        # MTCNN's first stage needs at least one 12x12 window.
        if min(image_rgb.shape[:2]) < 12:
            return []
        faces = self._mtcnn.detect_faces(
            image_rgb, box_format="xyxy", min_face_size=self.min_face_size,
            threshold_pnet=self.thresholds[0], threshold_rnet=self.thresholds[1],
            threshold_onet=self.thresholds[2],
        )
        detections = []
        for face in faces:
            if face["confidence"] < self.min_score:
                continue
            points = np.array([face["keypoints"][name] for name in FIVE_POINT_NAMES], dtype="float32")
            detections.append(Detection(tuple(float(v) for v in face["box"]), float(face["confidence"]), points))
        return detections

    def __repr__(self):
        return f"MTCNNDetector(min_face_size={self.min_face_size}, thresholds={self.thresholds})"


class DlibHOGDetector(FaceDetector):
    """dlib's HOG frontal face detector (``pip install dlib-bin``).

    Args:
        upsample: times the image is doubled before searching (finds faces
            down to about 80 / 2**upsample pixels; each step costs ~4x time).
        threshold: SVM score threshold (dlib's ``adjust_threshold``).
    """

    name = "dlib"
    # Fitted on training faces as BlazeFace's: python benchmarks/detection.py --fit-calibration --detectors
    # dlib --count 1000 --output docs/benchmarks/detection_calibration_dlib.json (1614 of 2000 faces matched).
    # Held out as MTCNN's: median IoU 0.708, against 0.716 with the former constants fitted there.
    landmark_box_calibration = (0.004, 0.099, 0.935, 0.922)

    def __init__(self, upsample=1, threshold=0.0):
        try:
            import dlib
        except ImportError as error:
            raise ImportError(
                "DlibHOGDetector needs dlib: pip install dlib-bin (prebuilt) or dlib."
            ) from error
        if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 0:
            raise ValueError(f"`upsample` must be a non-negative integer. Received: upsample={upsample!r}")
        self.upsample = upsample
        self.threshold = float(threshold)
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, image_rgb):
        image_rgb = _check_rgb(image_rgb)
        rects, scores, _ = self._detector.run(image_rgb, self.upsample, self.threshold)
        # dlib rectangles are inclusive pixel indices.
        return [
            Detection((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), float(s))
            for r, s in zip(rects, scores)
        ]

    def __repr__(self):
        return f"DlibHOGDetector(upsample={self.upsample}, threshold={self.threshold})"


class LBPCascadeDetector(FaceDetector):
    """OpenCV's LBP frontal face cascade, run by ``skimage.feature.Cascade``.

    Args:
        scale_factor: image pyramid step.
        step_ratio: window stride, in window sizes, of the search.
        min_size: smallest face side, in pixels.
        min_neighbour_number: overlapping windows needed to keep a face.
        iou_threshold: detections overlapping more than this (IoU) are one
            face: they are merged into their mean box.
    """

    name = "lbp"

    def __init__(self, scale_factor=1.2, step_ratio=1.0, min_size=20, min_neighbour_number=3,
                 iou_threshold=NMS_IOU_THRESHOLD):
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        self._cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.scale_factor = scale_factor
        self.step_ratio = step_ratio
        self.min_size = min_size
        self.min_neighbour_number = min_neighbour_number
        self.iou_threshold = float(iou_threshold)

    def detect(self, image_rgb):
        image_rgb = _check_rgb(image_rgb)
        height, width = image_rgb.shape[:2]
        if min(height, width) < self.min_size:
            return []
        found = self._cascade.detect_multi_scale(
            image_rgb, scale_factor=self.scale_factor, step_ratio=self.step_ratio,
            min_size=(self.min_size, self.min_size), max_size=(height, width),
            min_neighbor_number=self.min_neighbour_number,
        )
        # skimage groups windows by their centres only, so one face can give
        # several overlapping boxes. The cascade gives no score: every face scores 1.
        boxes = [(f["c"], f["r"], f["c"] + f["width"], f["r"] + f["height"]) for f in found]
        return non_max_suppression(boxes, np.ones(len(boxes)), self.iou_threshold, weighted=True)


DETECTORS = {"blazeface": BlazeFaceDetector, "mtcnn": MTCNNDetector, "dlib": DlibHOGDetector,
             "lbp": LBPCascadeDetector}


def get_detector(detector="default"):
    """Resolves a detector argument.

    Args:
        detector: ``"default"`` (:data:`DEFAULT_DETECTOR`), a name of
            :data:`DETECTORS`, an object with a ``detect`` method, or None (no
            detection: each image is one face crop).

    Returns:
        A detector object, or None.
    """
    if detector is None or hasattr(detector, "detect"):
        return detector
    if detector == "default":
        detector = DEFAULT_DETECTOR
    if isinstance(detector, str) and detector in DETECTORS:
        return DETECTORS[detector]()
    raise ValueError(
        f"`detector` must be None, 'default', one of {tuple(DETECTORS)} or an object with a "
        f"`detect(image_rgb)` method. Received: detector={detector!r}"
    )


def box_iou(box, boxes):
    """Intersection over union of one box with each of ``boxes``.

    Args:
        box: ``(x_min, y_min, x_max, y_max)``.
        boxes: ``(N, 4)`` boxes.

    Returns:
        ``(N,)`` float64 IoU values (0 where the union is empty).
    """
    box = np.asarray(box, dtype="float64").reshape(4)
    boxes = np.asarray(boxes, dtype="float64").reshape(-1, 4)
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def overlap_groups(boxes, scores, iou_threshold):
    """Groups overlapping boxes, greedily from the highest score.

    Boxes are taken in decreasing score order; every remaining box whose IoU
    with the taken one exceeds ``iou_threshold`` joins its group.

    Args:
        boxes: ``(N, 4)`` boxes ``(x_min, y_min, x_max, y_max)``.
        scores: ``(N,)`` scores.
        iou_threshold: IoU above which two boxes are the same face.

    Returns:
        A list of index arrays, one per group, the taken (best) box first;
        groups in decreasing score order.
    """
    boxes = np.asarray(boxes, dtype="float64").reshape(-1, 4)
    scores = np.asarray(scores, dtype="float64").reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(
            f"`boxes` and `scores` must have one row per detection. "
            f"Received: boxes.shape={boxes.shape}, scores.shape={scores.shape}"
        )
    remaining = np.argsort(-scores, kind="stable")
    groups = []
    while remaining.size:
        best = remaining[0]
        joins = (box_iou(boxes[best], boxes[remaining]) > iou_threshold) | (remaining == best)
        groups.append(remaining[joins])
        remaining = remaining[~joins]
    return groups


def non_max_suppression(boxes, scores, iou_threshold, points=None, weighted=False):
    """Keeps one detection per group of overlapping boxes (:func:`overlap_groups`).

    Plain NMS keeps each group's best box; weighted NMS (MediaPipe's
    ``WEIGHTED``, BlazeFace's post-processing) returns the score-weighted mean
    of the group's boxes and points with the best box's score.

    Args:
        boxes: ``(N, 4)`` boxes ``(x_min, y_min, x_max, y_max)``.
        scores: ``(N,)`` scores.
        iou_threshold: IoU above which two boxes are the same face.
        points: optional ``(N, P, 2)`` points of each box.
        weighted: average each group instead of keeping its best box.

    Returns:
        A list of :class:`Detection`, highest score first.
    """
    boxes = np.asarray(boxes, dtype="float64").reshape(-1, 4)
    scores = np.asarray(scores, dtype="float64").reshape(-1)
    detections = []
    for group in overlap_groups(boxes, scores, iou_threshold):
        members = group if weighted else group[:1]
        weights = scores[members] / scores[members].sum() if scores[members].sum() > 0 else None
        box = np.average(boxes[members], axis=0, weights=weights)
        group_points = None if points is None else np.average(
            np.asarray(points, dtype="float64")[members], axis=0, weights=weights).astype("float32")
        detections.append(Detection(tuple(float(v) for v in box), float(scores[group[0]]), group_points))
    return detections


def landmark_box(box, calibration, roll=0.0):
    """Maps a detector box to the box its face's landmarks would have.

    The calibration was measured on upright faces, so it applies in the face's
    own upright frame: for a face turned by ``roll`` degrees the centre offset
    turns with the face, and when the nearest quarter turn is odd (a face lying
    on its side) the detector box's width is the face's height and vice versa.
    A calibration with a fifth number, the roll gain ``g``, also scales the
    width and height by :func:`roll_size_factor`, ``1 + g * sin(2 * roll) ** 2``:
    1 at every quarter turn, ``1 + g`` half-way between (a detector whose
    boxes shrink for faces turned off the quarter turns has ``g > 0``).

    Args:
        box: ``(x_min, y_min, x_max, y_max)`` of a detection in the image.
        calibration: a detector's ``landmark_box_calibration``
            ``(centre_x, centre_y, width, height[, roll_gain])``, or None
            (the box's centre and size are kept).
        roll: the face's in-plane rotation in degrees
            (:func:`fpezoo.coordinates.roll_from_eyes`).

    Returns:
        The landmark box in the face's upright frame, as a tuple of floats:
        centred on the face's centre in the image, with the width and height
        the face has when turned upright by ``-roll`` about that centre (the
        same box as ``box`` when ``roll`` is 0 and ``calibration`` None).
    """
    box = tuple(float(v) for v in box)
    calibration = tuple(calibration or (0.0, 0.0, 1.0, 1.0))
    if len(calibration) not in (4, 5):
        raise ValueError(
            "`calibration` must be (centre_x, centre_y, width, height[, roll_gain]). "
            f"Received: calibration={calibration!r}"
        )
    offset_x, offset_y, width_ratio, height_ratio = calibration[:4]
    width, height = box[2] - box[0], box[3] - box[1]
    if round(float(roll) / 90.0) % 2:
        width, height = height, width
    radians = math.radians(float(roll))
    shift_x, shift_y = offset_x * width, offset_y * height
    centre_x = (box[0] + box[2]) / 2 + math.cos(radians) * shift_x - math.sin(radians) * shift_y
    centre_y = (box[1] + box[3]) / 2 + math.sin(radians) * shift_x + math.cos(radians) * shift_y
    scale = roll_size_factor(roll, calibration[4]) if len(calibration) == 5 else 1.0
    half_w, half_h = scale * width_ratio * width / 2, scale * height_ratio * height / 2
    return (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)


def fit_landmark_box_calibration(detection_boxes, landmark_boxes):
    """Fits a detector's ``landmark_box_calibration`` on upright faces.

    For each face, the centre of its landmark box is measured from the centre
    of its detection box in detection-box widths and heights, and the landmark
    box's width and height as ratios of the detection box's; the calibration
    is the median of each over the faces, robust to the few that are matched
    badly. :func:`landmark_box` with the result maps a detection box to the
    median face's landmark box.

    Args:
        detection_boxes: ``(N, 4)`` detection boxes ``(x_min, y_min, x_max, y_max)``.
        landmark_boxes: ``(N, 4)`` landmark boxes of the same faces, in the
            same units.

    Returns:
        ``(centre_x, centre_y, width, height)`` as a tuple of floats.
    """
    detection_boxes = np.asarray(detection_boxes, dtype="float64")
    landmark_boxes = np.asarray(landmark_boxes, dtype="float64")
    if (detection_boxes.ndim != 2 or detection_boxes.shape[1:] != (4,) or not len(detection_boxes)
            or landmark_boxes.shape != detection_boxes.shape):
        raise ValueError(
            "`detection_boxes` and `landmark_boxes` must be (N, 4) arrays of the same N >= 1 faces. "
            f"Received: detection_boxes.shape={detection_boxes.shape}, landmark_boxes.shape={landmark_boxes.shape}"
        )
    size = detection_boxes[:, 2:] - detection_boxes[:, :2]
    if not (size > 0).all():
        raise ValueError(
            "Detection boxes need x_max > x_min and y_max > y_min. "
            f"Received: detection_boxes={detection_boxes[~(size > 0).all(axis=1)][:3].tolist()}"
        )
    offset = ((landmark_boxes[:, :2] + landmark_boxes[:, 2:]) - (detection_boxes[:, :2] + detection_boxes[:, 2:])) / 2
    ratios = np.concatenate([offset / size, (landmark_boxes[:, 2:] - landmark_boxes[:, :2]) / size], axis=1)
    return tuple(float(v) for v in np.median(ratios, axis=0))


def roll_size_factor(roll, gain):
    """``1 + gain * sin(2 * roll) ** 2``: exactly 1 at quarter turns, ``1 + gain`` at 45 degrees.

    Args:
        roll: in-plane rotation(s) in degrees (a float or an array).
        gain: the roll gain of a ``landmark_box_calibration``.

    Returns:
        The size factor, a float (an array for an array of rolls).
    """
    # The factor repeats every quarter turn: the roll's remainder keeps sin(2 * roll) exactly 0 there.
    radians = np.radians(np.remainder(np.asarray(roll, dtype="float64"), 90.0))
    factor = 1.0 + float(gain) * np.sin(2.0 * radians) ** 2
    return float(factor) if factor.ndim == 0 else factor


def fit_landmark_box_roll_gain(rolls, size_ratios, bin_degrees=5.0):
    """Fits the roll gain of a ``landmark_box_calibration`` on turned faces.

    The size factor :func:`roll_size_factor` repeats every quarter turn, so the
    rolls are folded into [-45, 45) and put in bins ``bin_degrees`` wide,
    centred on multiples of ``bin_degrees``. In each bin the median size ratio
    is taken (robust to badly matched faces) and the median of
    ``sin(2 * roll) ** 2``; a straight line ``c * (1 + g * x)`` through these
    bin medians (least squares) gives the gain ``g``, and ``c``, a bias common
    to all rolls, is left to the upright calibration (the factor is 1 at the
    quarter turns).

    Args:
        rolls: ``(N,)`` the faces' rolls in degrees, as the detector's points
            give them (:func:`fpezoo.coordinates.roll_from_eyes`).
        size_ratios: ``(N,)`` each face's landmark box size (in its upright
            frame) over the size :func:`landmark_box` gives it without a roll
            gain (e.g. the geometric mean of the width and height ratios).
        bin_degrees: bin width, a divisor of 45.

    Returns:
        ``(gain, bins)``: the gain, a float, and per bin (its centre in
        degrees, in [-45, 45)) the ``(faces, median size ratio / c)`` of its
        faces, a dict ordered by centre.
    """
    rolls = np.asarray(rolls, dtype="float64")
    size_ratios = np.asarray(size_ratios, dtype="float64")
    if rolls.ndim != 1 or rolls.shape != size_ratios.shape or not len(rolls) or not (size_ratios > 0).all():
        raise ValueError(
            "`rolls` and `size_ratios` must be (N,) arrays of the same N >= 1 faces, ratios positive. "
            f"Received: rolls.shape={rolls.shape}, size_ratios.shape={size_ratios.shape}"
        )
    if not (0 < bin_degrees <= 45 and (45 / bin_degrees).is_integer()):
        raise ValueError(f"`bin_degrees` must divide 45. Received: bin_degrees={bin_degrees!r}")
    centres = np.remainder(np.round(rolls / bin_degrees) * bin_degrees + 45.0, 90.0) - 45.0
    shapes = roll_size_factor(rolls, 1.0) - 1.0
    bins = {float(c): (int((centres == c).sum()), np.median(shapes[centres == c]),
                       np.median(size_ratios[centres == c])) for c in np.unique(centres)}
    if len(bins) < 2:
        raise ValueError(
            "The faces need rolls in at least two bins to fit the gain. "
            f"Received: rolls between {rolls.min()} and {rolls.max()}"
        )
    _, shape, median = np.array(list(bins.values())).T
    slope, bias = np.polyfit(shape, median, 1)
    return float(slope / bias), {c: (n, float(m / bias)) for c, (n, _, m) in bins.items()}


def downscale_for_detection(image, max_side=DEFAULT_MAX_DETECTION_SIDE):
    """Returns a copy of ``image`` whose longest side is at most ``max_side``.

    Huge images are first subsampled by an integer stride (so even a 20000x20000
    array is never copied whole), then area-resized to the exact size.

    Args:
        image: ``(H, W, C)`` array.
        max_side: longest side of the result.

    Returns:
        ``(small_image, (H, W))``: the contiguous downscaled image (``image``
        itself when already small enough) and the original height and width.
    """
    import cv2

    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return np.ascontiguousarray(image), (height, width)
    scale = max_side / longest
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    stride = max(1, math.floor(longest / (2 * max_side)))
    subsampled = np.ascontiguousarray(image[::stride, ::stride])
    small = cv2.resize(subsampled, target, interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = small[..., None]
    return small, (height, width)


def detect_faces(detector, image_rgb, max_side=DEFAULT_MAX_DETECTION_SIDE):
    """Runs ``detector`` on a downscaled copy and maps results to ``image_rgb``.

    Args:
        detector: an object with ``detect(image_rgb)``.
        image_rgb: ``(H, W, 3)`` uint8 RGB image of any size.
        max_side: longest side the detector sees.

    Returns:
        A list of :class:`Detection` in the pixels of ``image_rgb``, highest
        score first.
    """
    small, (height, width) = downscale_for_detection(image_rgb, max_side)
    small_hw = small.shape[:2]
    detections = []
    for raw in detector.detect(small):
        box, score, points = _as_detection(raw)
        box = (np.asarray(box, dtype="float64").reshape(2, 2) * [width / small_hw[1], height / small_hw[0]])
        if points is not None:
            points = rescale_points(np.asarray(points, dtype="float32"), small_hw, (height, width))
        detections.append(Detection(tuple(float(v) for v in box.ravel()), float(score), points))
    return sorted(detections, key=lambda d: -d.score)


def _as_detection(raw):
    """Accepts a Detection or any ``(box, score[, points])`` sequence."""
    try:
        values = tuple(raw)
        if len(values) == 2:
            values += (None,)
        box, score, points = values
        box = tuple(float(v) for v in box)
        if len(box) != 4:
            raise ValueError
        score = float(score)
    except (TypeError, ValueError):
        raise ValueError(
            "A detector must return (box, score) or (box, score, points) per face, box = "
            f"(x_min, y_min, x_max, y_max). Received: detection={raw!r}"
        ) from None
    return box, score, points


def _check_rgb(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "Face detectors take (height, width, 3) uint8 RGB images. "
            f"Received: image.shape={image.shape}, image.dtype={image.dtype}"
        )
    return np.ascontiguousarray(image)
