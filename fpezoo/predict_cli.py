"""``fpezoo predict IMAGE|FOLDER|VIDEO ...``: landmarks to JSON lines or CSV.

* Images and folders (searched recursively) stream in bounded batches, so a
  folder of thousands of images runs in flat memory, with a progress bar.
* Output goes to ``--output`` as JSON lines (``.jsonl``, one record per image or
  video frame, written as it goes) or CSV (``.csv``, one row per face), or to
  standard output. An existing output, or an existing drawing of an input to
  run, is never overwritten without ``--force``; ``--resume`` skips the inputs
  the output already holds (and continues their drawing folder).
* Unreadable files (missing, empty, truncated, not an image) are reported in the
  output (an ``error`` field) and on standard error, and the run goes on; the
  exit code is 1 when any input failed.
* Videos (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``) run frame by frame
  with :class:`fpezoo.predictor.FaceTracker`; a video that ends before its
  announced frame count is reported, and its frames so far are kept.
* ``--draw DIR`` writes annotated copies (box and keypoints coloured by
  confidence): PNGs for images, an annotated ``.mp4`` per video.

Example::

    fpezoo predict photos/ --output photos.jsonl --draw annotated/
"""

import csv
import itertools
import json
import pathlib
import sys

import numpy as np

from fpezoo.imageio import IMAGE_SUFFIXES, ImageReadError, load_image
from fpezoo.predictor import BACKENDS

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DETECTOR_CHOICES = ("default", "mtcnn", "dlib", "lbp", "haar", "none")


def configure_parser(parser):
    """Options of ``fpezoo predict``."""
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER|VIDEO",
                        help="image files, folders (searched recursively) or video files")
    parser.add_argument("--model", default=None,
                        help="registered weights name (see `fpezoo card`) or a .keras file "
                             "(default: the default registered model)")
    parser.add_argument("--detector", default="default", choices=DETECTOR_CHOICES,
                        help="face detector; 'none' takes each image as one face crop")
    parser.add_argument("--output", "-o", default=None,
                        help="output file, .jsonl (JSON lines) or .csv (default: JSON lines on stdout)")
    parser.add_argument("--draw", metavar="DIR", default=None,
                        help="write annotated images (PNG) and videos (MP4) into DIR")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output and drawings")
    parser.add_argument("--resume", action="store_true",
                        help="append to an existing output, skipping inputs it already holds")
    parser.add_argument("--batch-size", type=int, default=8, help="images loaded and run at once")
    parser.add_argument("--visibility-threshold", type=float, default=0.0,
                        help="keypoints below this confidence are marked not visible")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="run the landmark model with Keras or exported to LiteRT (faster on CPU); "
                             "auto: LiteRT for registered weights (default: %(default)s)")
    parser.add_argument("--flip-test", action="store_true",
                        help="average each face with its mirror image (twice the model time, "
                             "lower error)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    """Runs ``fpezoo predict``; returns 0, 1 when some inputs failed, 2 on usage errors."""
    from fpezoo.predictor import LandmarkDetector

    try:
        images, videos, relative = collect_inputs(args.inputs)
        check_output(args.output, force=args.force, resume=args.resume)
        drawings = None if args.draw is None else drawing_paths(args.draw, images, videos, relative)
        if drawings is not None:
            check_drawings(drawings.values(), force=args.force, resume=args.resume)
        predictor = LandmarkDetector(
            model=args.model, detector=None if args.detector == "none" else args.detector,
            visibility_threshold=args.visibility_threshold, batch_size=args.batch_size,
            backend=args.backend, flip_test=args.flip_test,
        )
        writer = ResultWriter(args.output, predictor.num_keypoints, resume=args.resume)
    except (FileNotFoundError, FileExistsError, LookupError, ValueError, TypeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pending_images = [path for path in images if str(path) not in writer.done]
    pending_videos = [path for path in videos if str(path) not in writer.done]
    failures = 0
    try:
        failures += _predict_images(predictor, pending_images, writer, drawings, args)
        for video in pending_videos:
            failures += predict_video(predictor, video, writer, None if drawings is None else drawings[video],
                                      show_progress=not args.no_progress)
    finally:
        writer.close()
    skipped = len(images) + len(videos) - len(pending_images) - len(pending_videos)
    print(f"{writer.faces_written} face(s) in {writer.records_written} image(s)/frame(s); "
          f"{failures} input(s) failed; {skipped} input(s) already in the output"
          + (f"; output: {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if failures else 0


def check_output(path, force=False, resume=False):
    """Checks that ``path`` may be written.

    Raises:
        ValueError: an unsupported suffix, or both ``force`` and ``resume``.
        FileExistsError: the file exists and neither ``force`` nor ``resume``.
    """
    if force and resume:
        raise ValueError("Use either --force or --resume, not both. Received: force=True, resume=True")
    if path is None:
        return
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise ValueError(f"The output must end in .jsonl or .csv. Received: output={str(path)!r}")
    if path.exists() and path.stat().st_size > 0 and not (force or resume):
        raise FileExistsError(
            "The output exists: pass --force to overwrite it or --resume to continue it. "
            f"Received: output={str(path)!r}"
        )


def drawing_paths(folder, images, videos, relative):
    """Where ``--draw`` puts each input's drawing: a PNG per image, an MP4 per video.

    Args:
        folder: the ``--draw`` folder.
        images, videos: input paths.
        relative: each path's name relative to its input folder (see
            :func:`collect_inputs`).

    Returns:
        A dict from input path to drawing path.
    """
    folder = pathlib.Path(folder)
    drawings = {path: (folder / relative[path]).with_suffix(".png") for path in images}
    drawings.update({path: (folder / relative[path]).with_suffix(".mp4") for path in videos})
    return drawings


def check_drawings(paths, force=False, resume=False):
    """Checks that no drawing would overwrite a file.

    Raises:
        FileExistsError: some of ``paths`` exist and neither ``force`` nor
            ``resume`` (which continues an earlier run into the same folder).
    """
    if force or resume:
        return
    existing = sorted(str(path) for path in paths if path.exists())
    if existing:
        raise FileExistsError(
            f"--draw would overwrite {len(existing)} existing file(s): pass --force to overwrite "
            f"them or choose another folder. Received: drawing={existing[0]!r}"
        )


def collect_inputs(inputs):
    """Splits the command's inputs into image paths and video paths.

    Folders are searched recursively for image and video suffixes (sorted, so
    runs are reproducible); named files are kept whatever their suffix (a bad
    one is reported when read).

    Returns:
        ``(images, videos, relative)``: lists of paths, and for each path its
        name relative to the folder it was found in (its file name for named
        files), which places its drawing.

    Raises:
        FileNotFoundError: an input path does not exist.
    """
    images, videos, relative = [], [], {}
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                suffix = child.suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    images.append(child)
                elif suffix in VIDEO_SUFFIXES:
                    videos.append(child)
                relative[child] = child.relative_to(path)
            continue
        relative[path] = pathlib.Path(path.name)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"Video file not found. Received: input={name!r}")
            videos.append(path)
        else:
            images.append(path)  # missing images are reported per file, like bad ones
    return images, videos, relative


def _predict_images(predictor, paths, writer, drawings, args):
    """Streams ``paths`` in batches; returns the number of failed images.

    ``drawings`` maps each path to where its drawing goes (None: no drawings).
    """
    from fpezoo.predictor import draw_faces

    failures = 0
    progress = _progress(total=len(paths), unit="img", disable=args.no_progress or len(paths) < 2)
    batches = iter(paths)
    while batch := list(itertools.islice(batches, args.batch_size)):
        loaded = []
        for path in batch:
            try:
                loaded.append((path, load_image(path)))
            except (FileNotFoundError, ImageReadError, ValueError) as error:
                failures += 1
                print(f"warning: skipped {path}: {error}", file=sys.stderr)
                writer.write_error(str(path), str(error))
        if loaded:
            rgb_images = [image for _, image in loaded]
            detections = [predictor.detect(image) for image in rgb_images]
            for (path, image), faces in zip(loaded, predictor.landmarks(rgb_images, detections)):
                writer.write(str(path), faces)
                if drawings is not None:
                    _save_png(draw_faces(image, faces), drawings[path])
        progress.update(len(batch))
    progress.close()
    return failures


def predict_video(predictor, path, writer, drawing=None, show_progress=True):
    """Landmarks for every frame of a video; returns 1 if it ended early, else 0.

    With a face detector, faces are tracked from frame to frame
    (:class:`fpezoo.predictor.FaceTracker`); without one, every frame is a face
    crop. ``drawing``: path of an annotated MP4 to write, or None.
    """
    import cv2

    from fpezoo.predictor import FaceTracker, draw_faces

    tracker = None if predictor.detector is None else FaceTracker(predictor)

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        message = f"Could not open the video (missing codec or not a video). Received: path={str(path)!r}"
        print(f"warning: skipped {path}: {message}", file=sys.stderr)
        writer.write_error(str(path), message)
        return 1
    announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    video_writer = None
    progress = _progress(total=announced or None, unit="frame", disable=not show_progress)
    frame_index = 0
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            frame = load_image(frame_bgr, bgr=True)
            faces = predictor.predict(frame) if tracker is None else tracker.update(frame)
            writer.write(str(path), faces, frame=frame_index)
            if drawing is not None:
                if video_writer is None:
                    drawing.parent.mkdir(parents=True, exist_ok=True)
                    video_writer = cv2.VideoWriter(str(drawing),
                                                   cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                   (frame.shape[1], frame.shape[0]))
                video_writer.write(np.ascontiguousarray(draw_faces(frame, faces)[..., ::-1]))
            frame_index += 1
            progress.update(1)
    finally:
        progress.close()
        capture.release()
        if video_writer is not None:
            video_writer.release()
    if frame_index == 0 or (announced > 0 and frame_index < announced):
        message = (f"Video ended early: read {frame_index} of {announced} announced frames "
                   f"(truncated or corrupt file); the frames read are kept. Received: path={str(path)!r}")
        print(f"warning: {message}", file=sys.stderr)
        writer.write_error(str(path), message, frame=frame_index)
        return 1
    return 0


class ResultWriter:
    """Writes results as JSON lines or CSV, or JSON lines to standard output.

    Every record is flushed as it is written, so an interrupted run can resume.

    Args:
        path: ``.jsonl`` or ``.csv`` file (checked by :func:`check_output`), or
            None for standard output.
        num_keypoints: keypoints per face (the CSV columns).
        resume: append to an existing file; :attr:`done` holds the inputs it
            already has.
    """

    CSV_HEAD = ["source", "frame", "face", "x_min", "y_min", "x_max", "y_max", "score", "scheme", "error"]

    def __init__(self, path, num_keypoints, resume=False):
        self.path = None if path is None else pathlib.Path(path)
        self.num_keypoints = num_keypoints
        self.done = set()
        self.records_written = 0
        self.faces_written = 0
        if self.path is None:
            self.format, self._file = "jsonl", sys.stdout
            return
        self.format = self.path.suffix.lower().lstrip(".")
        appending = resume and self.path.exists() and self.path.stat().st_size > 0
        if appending:
            self._read_done()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a" if appending else "w", newline="", encoding="utf-8")
        if self.format == "csv":
            self._csv = csv.writer(self._file)
            if not appending:
                self._csv.writerow(self.CSV_HEAD + [f"{name}{i}" for i in range(num_keypoints)
                                                    for name in ("x", "y", "c", "v")])

    def _read_done(self):
        with open(self.path, newline="", encoding="utf-8") as file:
            if self.format == "jsonl":
                for line in file:
                    try:
                        self.done.add(json.loads(line)["source"])
                    except (ValueError, KeyError):
                        continue  # a line cut by an interrupted run
                return
            rows = csv.reader(file)
            head = next(rows, [])
            columns = len(self.CSV_HEAD) + 4 * self.num_keypoints
            if len(head) != columns:
                raise ValueError(
                    f"Cannot resume {self.path}: its columns are for another keypoint count "
                    f"(expected {columns} columns). Received: columns={len(head)}"
                )
            self.done.update(row[0] for row in rows if row)

    def write(self, source, faces, frame=None):
        """Writes the faces of one image (or video frame)."""
        self.records_written += 1
        self.faces_written += len(faces)
        if self.format == "jsonl":
            self._write_record({"source": source, "faces": [face.to_dict() for face in faces]}, frame)
            return
        if not faces:  # a row all the same, so --resume knows the image is done
            self._csv.writerow([source, _blank(frame)] + [""] * (len(self.CSV_HEAD) - 2 + 4 * self.num_keypoints))
        for index, face in enumerate(faces):
            values = []
            for (x, y), c, v in zip(face.keypoints, face.confidence, face.visibility):
                values += [f"{x:.2f}", f"{y:.2f}", f"{c:.4f}", int(v)]
            self._csv.writerow([source, _blank(frame), index, *(f"{v:.2f}" for v in face.box),
                                f"{face.score:.4f}", face.scheme or "", ""] + values)
        self._file.flush()

    def write_error(self, source, message, frame=None):
        """Records an input that could not be read (or a video that ended early)."""
        if self.format == "jsonl":
            self._write_record({"source": source, "faces": [], "error": message}, frame)
            return
        self._csv.writerow([source, _blank(frame), "", "", "", "", "", "", "", message]
                           + [""] * 4 * self.num_keypoints)
        self._file.flush()

    def _write_record(self, record, frame):
        if frame is not None:
            record["frame"] = frame
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self):
        """Closes the file (standard output is only flushed)."""
        if self._file is sys.stdout:
            self._file.flush()
        else:
            self._file.close()


def _blank(value):
    return "" if value is None else value


def _save_png(image_rgb, path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_rgb).save(path)


def _progress(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, **kwargs)
