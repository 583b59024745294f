"""Landmarks for every face of real photos: :class:`LandmarkDetector`.

The predictor chains the steps a user would otherwise glue together::

    import fpezoo
    detector = fpezoo.LandmarkDetector(model="<registered name>")   # or a Keras model
    for face in detector.predict("photo.jpg"):
        print(face.box, face.score, face.keypoints.shape)          # original-image pixels

1. Load the image upright (EXIF orientation) as RGB (:mod:`fpezoo.imageio`).
2. Find faces on a downscaled copy (:mod:`fpezoo.detection`; ``detector=None``
   takes every image as one face crop; ``boxes=`` gives the boxes yourself).
   With ``rotations``, the image turned by 90, 270 and 180 degrees is searched
   too (photos without an EXIF tag, people lying down): always, keeping each
   face in the turn its detector scores highest (``"best"``), or only when no
   face is found upright (``"fallback"``).
3. Crop each face from the full-resolution image the way the data pipeline
   crops training faces (square box, enlargement), turned upright by the
   face's roll (the angle of the axis from the detector's eye points to its
   mouth point, :func:`fpezoo.coordinates.roll_from_eyes`), run the model on
   batches of crops and map the keypoints back to the original image: the
   crop -> run -> invert loop of :func:`fpezoo.runtime.predict_boxes`, with
   its upright pass for faces whose landmarks show a roll their crop missed.

:class:`FaceTracker` follows faces through video frames: the previous frame's
landmarks give the next crop (and its roll), and the detector runs again when
the landmark confidence drops (or every ``redetect_interval`` frames).
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from fpezoo.coordinates import quarter_turn_transform, roll_from_eyes
from fpezoo.detection import (
    DEFAULT_MAX_DETECTION_SIDE,
    Detection,
    NMS_IOU_THRESHOLD,
    box_iou,
    detect_faces,
    downscale_for_detection,
    get_detector,
    landmark_box,
    non_max_suppression,
    overlap_groups,
)
from fpezoo.imageio import load_image
from fpezoo.runtime import DEFAULT_ENLARGE, face_crop, landmark_roll, load_runner, predict_boxes
from fpezoo.schemes import get_scheme

# Quarter turns (``np.rot90``) of the image searched by ``rotations``, in order:
# 90 degrees counter-clockwise, 90 clockwise (people lying down), upside down.
ROTATION_SEARCH_TURNS = (1, 3, 2)
ROTATION_MODES = ("auto", "best", "fallback", "off")


@dataclasses.dataclass
class Face:
    """Landmarks of one face, in the pixels of the original image.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` face box (pixel-corner units).
        score: the detector's score (1.0 for given boxes and whole-image crops).
        keypoints: ``(K, 2)`` float32 ``(x, y)`` (pixel-centre convention).
        confidence: ``(K,)`` float32 model confidence per keypoint.
        visibility: ``(K,)`` bool: the keypoint lies inside the image and its
            confidence reaches the predictor's ``visibility_threshold``.
        detector_points: ``(P, 2)`` points of the detector (eye centres first),
            or None.
        scheme: name of the keypoint scheme (see :mod:`fpezoo.schemes`) or None.
        roll: degrees the face's crop was turned by to set it upright (its
            in-plane rotation, :func:`fpezoo.coordinates.roll_from_eyes`; 0
            when the crop was not turned).
        depth: ``(K,)`` float32 depth of each keypoint in image pixels for a 3D
            model (``fpezoo.FAN(dimensions=3)``; larger nearer the camera, the
            offset arbitrary), else None.
    """

    box: tuple
    score: float
    keypoints: np.ndarray
    confidence: np.ndarray
    visibility: np.ndarray
    detector_points: Optional[np.ndarray] = None
    scheme: Optional[str] = None
    roll: float = 0.0
    depth: Optional[np.ndarray] = None

    def to_dict(self, decimals=2):
        """A JSON-ready dict (plain lists and floats)."""
        result = {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "keypoints": np.round(self.keypoints.astype("float64"), decimals).tolist(),
            "confidence": np.round(self.confidence.astype("float64"), 4).tolist(),
            "visibility": self.visibility.astype(int).tolist(),
            "scheme": self.scheme,
            "roll": round(float(self.roll), decimals),
        }
        if self.depth is not None:
            result["depth"] = np.round(self.depth.astype("float64"), decimals).tolist()
        if self.detector_points is not None:
            result["detector_points"] = np.round(self.detector_points.astype("float64"), decimals).tolist()
        return result


class LandmarkDetector:
    """Finds faces and their landmarks in photos.

    Args:
        model: a registered weights name (see ``fpezoo card``), a ``.keras``
            model file, an ``.onnx`` or ``.tflite`` file written by ``fpezoo
            convert`` (its crop read from its metadata), a Keras model
            returning ``[keypoints, confidence]``, or a builder such as
            ``fpezoo.FPENet`` (called without arguments: random weights). None:
            the default registered model
            (:func:`fpezoo.runtime.default_model_name`). Resolved by
            :func:`fpezoo.runtime.load_runner`.
        detector: ``"default"``, a name of :data:`fpezoo.detection.DETECTORS`, any object
            with ``detect(image_rgb) -> [(box, score, points), ...]`` (see
            :mod:`fpezoo.detection`), or None to take every image as one face
            crop.
        enlarge: side of the square crop as a multiple of the longer side of the
            face's landmark box (a detector box is first turned into one with
            the detector's ``landmark_box_calibration``). None: the ``"crop":
            {"enlarge": ...}`` of the model's registry entry, else
            :data:`DEFAULT_ENLARGE`. Whole-image crops (``detector=None``) are
            never enlarged.
        input_color: ``"rgb"``, ``"bgr"`` or ``"grayscale"`` order the model
            takes. None: read from the model (its preprocessing layer or its
            channel count; 3 channels without preprocessing mean RGB).
        visibility_threshold: keypoints with lower confidence are marked not
            visible (besides those outside the image).
        max_detection_side: images are searched for faces at this longest side
            at most.
        batch_size: largest batch of face crops run at once.
        scheme: keypoint scheme name for the results (None: the registered
            scheme, or guessed from the keypoint count).
        backend: ``"keras"`` runs the Keras model; ``"litert"`` runs its
            LiteRT export with the LiteRT interpreter on one thread (keypoints
            agree within 1e-2 px): for registered weights the export cached
            per weights sha256 (:func:`fpezoo.runtime.cached_litert_file`:
            written at the first use, a few seconds; later runs import no
            TensorFlow), other models are exported anew. ``"auto"`` (default):
            ``"litert"`` for registered weights when ``ai-edge-litert`` is
            installed, else ``"keras"``. Exported files run on their own
            runtime (ONNX Runtime or LiteRT; ``"keras"`` is refused for them).
            Measured by
            ``fpezoo benchmark`` (``docs/benchmarks/inference_speed.json``, batch
            1, one core): LiteRT is the fastest backend for the 5-point model
            (0.37 ms vs Keras 3.4 ms) and twice as fast as Keras for
            ``fpenet68_w32`` (2.8 vs 5.4 ms; onnxruntime, 2.4 ms, would need an
            ONNX export). Other models stay on Keras: exporting an arbitrary
            model can fail, and costs seconds.
        flip_test: also run each crop's mirror image and average the two
            predictions (:func:`fpezoo.schemes.flip_averaged_predictions`): twice
            the model time, lower error (``fpenet68_w32`` on AFLW2000-3D: 6.57 %
            instead of 6.79 %, ``weights/fpenet68_w32.md``).
        rotate_crops: turn each crop upright by the face's roll: the angle of
            the axis from the detector's eye points (the first two of its
            points) to its mouth point (its ``mouth_points``; without one, of
            the eye line), or in :class:`FaceTracker` of the same axis of the
            previous frame's landmarks. Faces without points (given boxes,
            detectors without keypoints) are cropped upright.
        rotations: also search the image turned by 90, 270 and 180 degrees:
            ``"best"`` runs the detector on all four turns, crops each face as
            found upright and in its best-scoring turn, and keeps the crop
            whose detector score times mean landmark confidence is higher
            (:meth:`detect` with ``merge=False``). It corrects faces that a
            detector finds, with wrong eye points, while they lie on their side
            or upside down (BlazeFace does), and costs three more detector runs
            and a second crop per face, except for images whose faces all reach
            the detector's ``upright_score``. ``"fallback"`` searches the turns
            only when no face is found upright (the first turn with a face
            wins). ``"off"`` (or False): upright only. ``"auto"``
            (default): the detector's ``rotation_search`` (``"best"`` for the
            fast default detector, ``"fallback"`` for the others). Boxes and
            points found in a turned image are mapped back to the image.
            :class:`FaceTracker` never searches turned frames.
        upright_pass: faces whose landmarks show a roll more than
            :data:`fpezoo.runtime.UPRIGHT_PASS_MIN_DEGREES` away from the roll
            their crop was turned by are cropped again, upright by the roll of
            their landmarks, and run again (:func:`fpezoo.runtime.predict_boxes`):
            one more model run for those faces only (faces a detector without
            keypoints, or with wrong ones, found turned; given boxes of turned
            faces).
        roll_search: search the roll of faces at an unknown angle from four
            turned crops, each re-cropped upright by its landmarks' roll
            (:func:`fpezoo.runtime.predict_boxes`; eight model runs per face,
            in place of the upright pass). ``"auto"`` (default): for boxes
            given to :meth:`predict`, which carry no roll; detected faces take
            their roll from the detector's points (and ``rotations``). True or
            False: for all faces or none.
    """

    def __init__(self, model=None, detector="default", enlarge=None, input_color=None,
                 visibility_threshold=0.0, max_detection_side=DEFAULT_MAX_DETECTION_SIDE,
                 batch_size=16, scheme=None, backend="auto", flip_test=False, rotate_crops=True,
                 rotations="auto", upright_pass=True, roll_search="auto"):
        self.runner = load_runner(model, backend=backend, input_color=input_color)
        self.detector = get_detector(detector)
        spec = self.runner.spec
        self.input_size, self.input_color, self.num_keypoints = spec.input_size, spec.input_color, spec.num_keypoints
        self.enlarge = float(enlarge if enlarge is not None else spec.enlarge or DEFAULT_ENLARGE)
        if not self.enlarge > 0:
            raise ValueError(f"`enlarge` must be positive. Received: enlarge={enlarge!r}")
        self.visibility_threshold = float(visibility_threshold)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        self.batch_size = batch_size
        self.max_detection_side = int(max_detection_side)
        self.scheme = scheme or spec.scheme
        if self.scheme != spec.scheme:
            self.runner.spec = dataclasses.replace(spec, scheme=self.scheme)
        self.backend = self.runner.backend
        self.flip_test = bool(flip_test)
        if self.flip_test and self.scheme is None:
            raise ValueError(
                "`flip_test` needs the keypoint scheme (its left/right pairs): pass `scheme`. "
                f"Received: scheme=None, num_keypoints={self.num_keypoints}"
            )
        if self.flip_test:
            get_scheme(self.scheme)
        self.rotate_crops = bool(rotate_crops)
        self.upright_pass = bool(upright_pass)
        if roll_search not in (True, False, "auto"):
            raise ValueError(f"`roll_search` must be True, False or 'auto'. Received: roll_search={roll_search!r}")
        self.roll_search = roll_search
        if rotations is False:
            rotations = "off"
        if rotations not in ROTATION_MODES:
            raise ValueError(f"`rotations` must be one of {ROTATION_MODES} or False. Received: rotations={rotations!r}")
        if rotations == "auto":
            rotations = getattr(self.detector, "rotation_search", "fallback") if self.detector else "off"
        self.rotations = rotations

    def __repr__(self):
        return (f"LandmarkDetector(model={self.runner.spec.name!r}, backend={self.backend!r}, detector={self.detector!r}, "
                f"input={self.input_size + (self.input_color,)}, enlarge={self.enlarge})")

    # -- public API ----------------------------------------------------------

    def predict(self, images, boxes=None, bgr=False):
        """Landmarks of every face in one image or a list of images.

        Args:
            images: one image or a list of them; each a file path, a PIL image
                or a NumPy array (grayscale, RGB, BGR with ``bgr=True``, RGBA).
            boxes: optional face boxes ``(x_min, y_min, x_max, y_max)`` to use
                instead of the detector, taken as the box of the face's
                landmarks (brows to chin, ear to ear) and cropped with
                ``enlarge``: a list of boxes for one image, or one such list
                per image.
            bgr: NumPy colour arrays are in OpenCV's BGR order.

        Returns:
            For one image, a list of :class:`Face` (empty when no face is found);
            for a list of images, one such list per image.
        """
        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        if boxes is not None and single:
            boxes = [boxes]
        if boxes is not None and len(boxes) != len(image_list):
            raise ValueError(
                "`boxes` needs one list of boxes per image. "
                f"Received: len(boxes)={len(boxes)}, number of images={len(image_list)}"
            )
        rgb_images = [load_image(image, bgr=bgr) for image in image_list]
        if boxes is None:
            detections = [self.detect(image, merge=False) for image in rgb_images]
            faces = self.landmarks(rgb_images, detections)
            if self.rotations == "best":
                faces = [_most_likely_faces(image_faces) for image_faces in faces]
        else:
            given = [[Detection(_check_box(box), 1.0, None) for box in image_boxes] for image_boxes in boxes]
            faces = self.landmarks(rgb_images, given, detector_boxes=False)
        return faces[0] if single else faces

    def detect(self, image_rgb, rotations=None, merge=True):
        """Face detections of one RGB image (the whole image without a detector).

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB array.
            rotations: ``"best"``, ``"fallback"`` or ``"off"`` (see the class
                arguments); None: the predictor's ``rotations``.
            merge: with ``"best"``, merge the detections of one face found in
                several turns, keeping the best-scoring one. False returns,
                for each face, its best-scoring detection upright and its
                best-scoring one in a turned image: :meth:`predict` crops both
                and keeps the face whose detector score times mean landmark
                confidence is higher (the landmark model tells a face upside
                down from upright better than the detector).

        Returns:
            A list of :class:`fpezoo.detection.Detection` in ``image_rgb``'s
            pixels, highest score first.
        """
        if self.detector is None:
            height, width = image_rgb.shape[:2]
            return [Detection((0.0, 0.0, float(width), float(height)), 1.0, None)]
        mode = self.rotations if rotations is None else rotations
        max_side = min(self.max_detection_side, getattr(self.detector, "detection_side", None) or math.inf)
        found = detect_faces(self.detector, image_rgb, max_side)
        upright_score = getattr(self.detector, "upright_score", None) if mode == "best" else None
        confident = found and upright_score is not None and min(d.score for d in found) >= upright_score
        if mode == "off" or (mode == "fallback" and found) or confident:
            return found
        from fpezoo.coordinates import compose, invert_transform, resize_transform

        # The turns are searched on the downscaled copy the detector saw upright.
        small, image_hw = downscale_for_detection(image_rgb, max_side)
        min_score = getattr(self.detector, "turned_min_score", None)
        candidates = list(found)
        for turns in ROTATION_SEARCH_TURNS:
            turned = detect_faces(self.detector, np.rot90(small, turns), max_side)
            back = compose(resize_transform(small.shape[:2], image_hw),
                           invert_transform(quarter_turn_transform(turns, small.shape[:2])))
            turned = [_transform_detection(detection, back) for detection in turned]
            # A face found upright may score low in every turn (profiles):
            # only new faces need the detector's turned_min_score.
            turned = [detection for detection in turned if min_score is None or detection.score >= min_score
                      or (found and box_iou(detection.box, [d.box for d in found]).max() > NMS_IOU_THRESHOLD)]
            if mode == "fallback" and turned:
                return turned
            candidates += turned
        if len(candidates) < 2:
            return candidates
        groups = overlap_groups([d.box for d in candidates], [d.score for d in candidates], NMS_IOU_THRESHOLD)
        if not merge:  # each face's best detection upright and best one turned compete on their landmarks
            upright = len(found)  # candidates[:upright] were found upright
            chosen = []
            for group in groups:
                chosen += [index for index in group if index < upright][:1]
                chosen += [index for index in group if index >= upright][:1]
            return [candidates[index] for index in sorted(chosen, key=lambda i: -candidates[i].score)]
        points = [detection.points for detection in candidates]
        same_points = all(p is not None for p in points) and len({np.shape(p) for p in points}) == 1
        return non_max_suppression([d.box for d in candidates], [d.score for d in candidates],
                                   NMS_IOU_THRESHOLD, points=np.stack(points) if same_points else None)

    def landmarks(self, rgb_images, detections, detector_boxes=True, rolls=None):
        """Landmarks for given detections.

        Args:
            rgb_images: list of ``(H, W, 3)`` uint8 RGB arrays.
            detections: one list of :class:`fpezoo.detection.Detection` per image.
            detector_boxes: the boxes come from this predictor's detector, so its
                ``landmark_box_calibration`` turns them into the landmark boxes
                that training crops are cut around. False: boxes are cropped
                as they are.
            rolls: one list of rolls (degrees, one per detection) per image to
                turn the crops by; None: the roll of each detection's eye
                points (0 without points, or with ``rotate_crops`` off).

        Returns:
            One list of :class:`Face` per image.
        """
        calibration = getattr(self.detector, "landmark_box_calibration", None) if detector_boxes else None
        # Without a detector each image is a face crop, as the training crops were.
        enlarge = 1.0 if self.detector is None and detector_boxes else self.enlarge
        if rolls is None:
            mouth = getattr(self.detector, "mouth_points", None) if detector_boxes else None
            rolls = [[self._roll(detection.points, mouth) for detection in image_detections]
                     for image_detections in detections]
        boxes, face_rolls, owners = [], [], []
        for index, (image_detections, image_rolls) in enumerate(zip(detections, rolls)):
            for detection, roll in zip(image_detections, image_rolls):
                boxes.append((index, _check_box(landmark_box(detection.box, calibration, roll))))
                face_rolls.append(roll)
                owners.append((index, detection))
        predictions = predict_boxes(self.runner, rgb_images, boxes, face_rolls, enlarge, image_color="rgb",
                                    batch_size=self.batch_size, flip_test=self.flip_test,
                                    upright_pass=self.upright_pass,
                                    roll_search=self.roll_search is True or (self.roll_search == "auto"
                                                                             and not detector_boxes))
        results = [[] for _ in rgb_images]
        for prediction, (index, detection) in zip(predictions, owners):
            results[index].append(self._face(rgb_images[index], detection, prediction))
        return results

    def crop(self, image_rgb, box, enlarge=None, roll=0.0):
        """The model-input crop of a face box and its image -> crop transform.

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB image.
            box: ``(x_min, y_min, x_max, y_max)`` landmark box of the face, in
                the face's upright frame when ``roll`` is not 0 (see
                :func:`fpezoo.runtime.face_crop`).
            enlarge: crop side over the box's longer side (None: ``self.enlarge``).
            roll: the face's in-plane rotation in degrees; the crop is turned
                by ``-roll`` about the box centre, so the face comes out upright.

        Returns:
            ``(crop, transform)``: the crop in the model's colour order, shape
            ``(h, w, channels)`` float32 0-255, and the 2x3 affine matrix from
            original-image to crop pixels.
        """
        enlarge = self.enlarge if enlarge is None else enlarge
        return face_crop(image_rgb, _check_box(box), self.input_size, enlarge, roll, "rgb", self.input_color)

    # -- internals -------------------------------------------------------------

    def _roll(self, points, mouth=None):
        """The roll the first two points (the eyes) and the mean of ``points[mouth]`` give.

        0 without points, or with ``rotate_crops`` off.
        """
        if not self.rotate_crops or points is None or len(points) < 2:
            return 0.0
        points = np.asarray(points, dtype="float64")
        mouth_centre = None if mouth is None else points[list(mouth)].mean(axis=0)
        return float(roll_from_eyes(points[0], points[1], mouth_centre))

    def _face(self, image, detection, prediction):
        keypoints = np.asarray(prediction.keypoints, dtype="float32")
        height, width = image.shape[:2]
        inside = ((keypoints[:, 0] >= -0.5) & (keypoints[:, 0] <= width - 0.5)
                  & (keypoints[:, 1] >= -0.5) & (keypoints[:, 1] <= height - 0.5))
        confidence = np.asarray(prediction.confidence, dtype="float32")
        points = None if detection.points is None else np.asarray(detection.points, dtype="float32")
        return Face(
            box=tuple(float(v) for v in detection.box), score=float(detection.score),
            keypoints=keypoints, confidence=confidence,
            visibility=inside & (confidence >= self.visibility_threshold),
            detector_points=points, scheme=self.scheme, roll=prediction.roll,
            depth=None if prediction.depth is None else np.asarray(prediction.depth, dtype="float32"),
        )


class FaceTracker:
    """Follows faces through consecutive video frames.

    The first frame, and any frame where the faces' mean keypoint confidence
    falls below ``redetect_ratio`` times its value at the last detection, runs
    the detector; other frames crop each face around the previous frame's
    landmarks (the box keeps the position and size it had relative to the
    landmarks' extent when it was detected) turned upright by the roll of the
    previous frame's landmarks (eyes and mouth; when the predictor's
    ``rotate_crops`` is on and the keypoint scheme converts to five points).
    The detector also runs every ``redetect_interval`` frames to pick up new
    faces; it never searches turned frames (``rotations``).

    Args:
        predictor: a :class:`LandmarkDetector` with a detector.
        redetect_ratio: confidence drop (relative) that triggers a detection.
        redetect_interval: frames between forced detections (0: never).
    """

    def __init__(self, predictor, redetect_ratio=0.5, redetect_interval=30):
        if predictor.detector is None:
            raise ValueError("FaceTracker needs a LandmarkDetector with a face detector. Received: detector=None")
        if not 0 <= redetect_ratio <= 1:
            raise ValueError(f"`redetect_ratio` must be in [0, 1]. Received: redetect_ratio={redetect_ratio!r}")
        self.predictor = predictor
        self.redetect_ratio = float(redetect_ratio)
        self.redetect_interval = int(redetect_interval)
        self._tracks = []  # (face, box relative to its landmark extent, confidence at detection)
        self._frames_since_detection = 0
        self.detections_run = 0

    def _landmark_roll(self, face):
        """The roll of a face's landmarks (0 with ``rotate_crops`` off or without a five-point form)."""
        if not self.predictor.rotate_crops or face.scheme is None:
            return 0.0
        roll = landmark_roll(face.keypoints, face.scheme)
        return float(roll) if np.isfinite(roll) else 0.0

    def update(self, frame_rgb):
        """Landmarks of the faces in the next frame (a list of :class:`Face`)."""
        frame_rgb = load_image(frame_rgb)
        due = self.redetect_interval and self._frames_since_detection >= self.redetect_interval
        if self._tracks and not due:
            detections = [Detection(_box_from_relative(_extent(face), relative), face.score, None)
                          for face, relative, _ in self._tracks]
            rolls = [self._landmark_roll(face) for face, _, _ in self._tracks]
            faces = self.predictor.landmarks([frame_rgb], [detections], rolls=[rolls])[0]
            if all(face.confidence.mean() >= self.redetect_ratio * reference
                   for face, (_, _, reference) in zip(faces, self._tracks)):
                self._tracks = [(face, relative, reference)
                                for face, (_, relative, reference) in zip(faces, self._tracks)]
                self._frames_since_detection += 1
                return faces
        faces = self.predictor.landmarks([frame_rgb], [self.predictor.detect(frame_rgb, rotations="off")])[0]
        self.detections_run += 1
        self._frames_since_detection = 1
        self._tracks = [(face, _relative_box(face.box, _extent(face)), float(face.confidence.mean()))
                        for face in faces]
        return faces


def draw_faces(image_rgb, faces, radius=None):
    """Draws face boxes and keypoints on a copy of an RGB image.

    Keypoints are coloured by confidence, relative to the most confident
    keypoint of the face: red (lowest) to green (highest); invisible keypoints
    are drawn hollow.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB array.
        faces: list of :class:`Face`.
        radius: point radius in pixels (None: from the face size).

    Returns:
        The annotated ``(H, W, 3)`` uint8 RGB array.
    """
    import cv2

    canvas = np.ascontiguousarray(load_image(image_rgb)).copy()
    for face in faces:
        x_min, y_min, x_max, y_max = face.box
        size = max(x_max - x_min, y_max - y_min, 1.0)
        thickness = max(1, round(size / 150))
        cv2.rectangle(canvas, (round(x_min), round(y_min)), (round(x_max) - 1, round(y_max) - 1),
                      (255, 200, 0), thickness, cv2.LINE_AA)
        point_radius = radius or max(1, round(size / 80))
        peak = float(face.confidence.max()) if face.confidence.size else 0.0
        relative = face.confidence / peak if peak > 0 else np.zeros_like(face.confidence)
        for (x, y), level, visible in zip(face.keypoints, relative, face.visibility):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            color = (round(255 * (1 - level)), round(255 * level), 0)
            cv2.circle(canvas, (round(float(x)), round(float(y))), point_radius, color,
                       -1 if visible else thickness, cv2.LINE_AA)
    return canvas


# -- helpers -------------------------------------------------------------------

def _check_box(box):
    try:
        box = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        box = None
    if box is None or len(box) != 4 or not all(map(math.isfinite, box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(
            "A face box must be four finite numbers (x_min, y_min, x_max, y_max) with "
            f"x_max > x_min and y_max > y_min. Received: box={box!r}"
        )
    return box


def _most_likely_faces(faces):
    """One face per group of overlapping faces: the highest detector score times mean confidence."""
    if len(faces) < 2:
        return faces
    likelihood = [face.score * float(np.mean(face.confidence)) for face in faces]
    groups = overlap_groups([face.box for face in faces], likelihood, NMS_IOU_THRESHOLD)
    return sorted((faces[group[0]] for group in groups), key=lambda face: -face.score)


def _transform_detection(detection, transform):
    """A detection mapped by a 2x3 pixel transform: its box is the bounds of the moved box."""
    from fpezoo.coordinates import transform_points

    x_min, y_min, x_max, y_max = detection.box
    # Box corners are pixel-corner units: pixel centres sit half a pixel inside.
    corners = np.array([[x_min, y_min], [x_max, y_min], [x_min, y_max], [x_max, y_max]]) - 0.5
    moved = transform_points(corners, transform) + 0.5
    box = (*moved.min(axis=0), *moved.max(axis=0))
    points = None if detection.points is None else transform_points(detection.points, transform).astype("float32")
    return Detection(tuple(float(v) for v in box), detection.score, points)


def _extent(face):
    """Box of a face's visible keypoints (all keypoints when none is visible)."""
    points = face.keypoints[face.visibility] if face.visibility.any() else face.keypoints
    return (*points.min(axis=0), *points.max(axis=0))


def _relative_box(box, reference):
    """Describes ``box`` by its centre and size relative to ``reference``."""
    ref_w = max(reference[2] - reference[0], 1.0)
    ref_h = max(reference[3] - reference[1], 1.0)
    return ((box[0] + box[2] - reference[0] - reference[2]) / 2 / ref_w,
            (box[1] + box[3] - reference[1] - reference[3]) / 2 / ref_h,
            (box[2] - box[0]) / ref_w, (box[3] - box[1]) / ref_h)


def _box_from_relative(reference, relative):
    """Inverse of :func:`_relative_box`."""
    ref_w = max(reference[2] - reference[0], 1.0)
    ref_h = max(reference[3] - reference[1], 1.0)
    centre_x = (reference[0] + reference[2]) / 2 + relative[0] * ref_w
    centre_y = (reference[1] + reference[3]) / 2 + relative[1] * ref_h
    half_w, half_h = relative[2] * ref_w / 2, relative[3] * ref_h / 2
    return (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)
