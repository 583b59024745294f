"""``fpezoo predict IMAGE|FOLDER|VIDEO ...``: landmarks to JSON lines or CSV.

* Images and folders (searched recursively; hidden files and folders, whose
  names start with ``.``, are skipped unless named) stream in bounded batches,
  so a folder of thousands of images runs in flat memory, with a progress bar.
* Output goes to ``--output`` as JSON lines (``.jsonl``, one record per image or
  video frame) or CSV (``.csv``, one row per face), or to standard output. An
  existing output, or an existing drawing of an input to run, is never
  overwritten without ``--force``; ``--resume`` skips the inputs the output
  already holds (and continues their drawing folder, redoing the images whose
  drawing is missing).
* Files are written under a temporary name in their folder and renamed when
  complete, so an interrupted run never leaves a partial file. Ctrl-C (SIGINT)
  stops after the image at hand, keeps the results written so far and exits
  with 130: ``--resume`` continues the run.
* Usage errors (a missing input, an unreadable folder, an output that exists or
  cannot be written, an unknown model) are found before the model loads, and
  exit with 2 and a one-line message.
* Unreadable files (missing, empty, truncated, not an image, permission denied)
  and unreadable subfolders are reported in the output (an ``error`` field) and
  on standard error, and the run goes on; the exit code is 1 when any input
  failed.
* Videos (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``) run frame by frame
  with :class:`fpezoo.predictor.FaceTracker`; a video that ends before its
  announced frame count is reported, and its frames so far are kept.
* ``--draw DIR`` writes annotated copies (box and keypoints coloured by
  confidence): PNGs for images, an annotated ``.mp4`` per video.

Example::

    fpezoo predict photos/ --output photos.jsonl --draw annotated/
"""

import contextlib
import csv
import itertools
import json
import os
import pathlib
import shutil
import signal
import sys
import threading

import numpy as np

from fpezoo.deploy.convert import atomic_output
from fpezoo.detection import DETECTORS, get_detector
from fpezoo.imageio import IMAGE_SUFFIXES, ImageReadError, load_image
from fpezoo.predictor import ROTATION_MODES
from fpezoo.runtime import BACKENDS

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DETECTOR_CHOICES = ("default", *DETECTORS, "none")
# Errors of a command's set-up (arguments, files, model) that are the user's to
# fix: printed as one line, exit code 2.
USAGE_ERRORS = (OSError, LookupError, ValueError, TypeError, ImportError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def add_model_options(parser):
    """The ``--model``, ``--builder``, ``--builder-config`` and ``--detector`` options.

    Shared by ``fpezoo predict`` and ``fpezoo demo``; :func:`model_argument` and
    :func:`load_detector` read them.
    """
    parser.add_argument("--model", default=None,
                        help="registered weights name (see `fpezoo card`), a .keras file, or a "
                             ".weights.h5 file with --builder (default: the default registered model)")
    parser.add_argument("--builder", default=None,
                        help="fpezoo builder of a .weights.h5 --model, e.g. FPENet")
    parser.add_argument("--builder-config", default="{}",
                        help="JSON keyword arguments of --builder, e.g. '{\"width\": 32}'")
    parser.add_argument("--detector", default="default", choices=DETECTOR_CHOICES,
                        help="face detector; 'none' takes each image as one face crop "
                             "(default: %(default)s)")


def model_argument(args):
    """The ``model`` of :class:`fpezoo.predictor.LandmarkDetector` from the options.

    A ``.weights.h5`` file is built with ``--builder`` and ``--builder-config``
    (:func:`fpezoo.runtime.load_keras_model`); other values pass as they are.

    Raises:
        ValueError: ``--builder`` without a ``.weights.h5`` model, a
            ``.weights.h5`` model without ``--builder``, or a
            ``--builder-config`` that is not a JSON object.
    """
    if not str(args.model).endswith(".weights.h5"):
        if args.builder is not None:
            raise ValueError(
                "--builder goes with a '.weights.h5' --model (registered names and .keras files "
                f"know their model). Received: model={args.model!r}, builder={args.builder!r}"
            )
        return args.model
    from fpezoo.runtime import load_keras_model

    try:
        config = json.loads(args.builder_config)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise ValueError(f"--builder-config must be a JSON object. Received: builder_config={args.builder_config!r}")
    return load_keras_model(args.model, builder=args.builder, builder_config=config, arg_name="model")


def load_detector(name):
    """The face detector a ``--detector`` value names, built before the model loads.

    Returns:
        The ``detector`` of :class:`fpezoo.predictor.LandmarkDetector`: a
        detector object, or None for ``"none"``.

    Raises:
        ImportError: the detector's package is not installed; the message says
            how to install it, or to run without a detector.
    """
    if name == "none":
        return None
    try:
        return get_detector(name)
    except ImportError as error:
        raise ImportError(
            f"Cannot load the face detector: {error} Or pass --detector none (each image is one face). "
            f"Received: detector={name!r}"
        ) from None


def configure_parser(parser):
    """Options of ``fpezoo predict``."""
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER|VIDEO",
                        help="image files, folders (searched recursively) or video files")
    add_model_options(parser)
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
    parser.add_argument("--rotations", default="auto", choices=ROTATION_MODES,
                        help="also search still images turned by 90, 270 and 180 degrees: 'best' "
                             "always (each face kept in its most likely turn), 'fallback' only when no "
                             "face is found upright; auto: the detector's choice (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    """Runs ``fpezoo predict``.

    Returns:
        0; 1 when some inputs failed; 2 on usage errors (found before the model
        loads where they can be); 130 when interrupted (Ctrl-C).
    """
    writer = None
    try:
        try:
            from fpezoo.predictor import LandmarkDetector

            images, videos, relative, unreadable = collect_inputs(args.inputs)
            check_output(args.output, force=args.force, resume=args.resume)
            drawings = None if args.draw is None else drawing_paths(args.draw, images, videos, relative)
            if drawings is not None:
                check_writable(args.draw, "draw")
                check_drawings(drawings.values(), force=args.force, resume=args.resume)
            predictor = LandmarkDetector(
                model=model_argument(args), detector=load_detector(args.detector),
                visibility_threshold=args.visibility_threshold, batch_size=args.batch_size,
                backend=args.backend, flip_test=args.flip_test, rotations=args.rotations,
            )
            writer = ResultWriter(args.output, predictor.num_keypoints, resume=args.resume)
        except USAGE_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        with writer:
            pending_images, pending_videos = (
                [path for path in paths if needs_run(path, writer, drawings)] for paths in (images, videos))
            failures = _report_unreadable_folders(unreadable, writer)
            failures += _predict_images(predictor, pending_images, writer, drawings, args)
            for video in pending_videos:
                failures += predict_video(predictor, video, writer, None if drawings is None else drawings[video],
                                          show_progress=not args.no_progress)
    except KeyboardInterrupt:
        written = 0 if writer is None else writer.inputs_written
        print(f"interrupted: {written} image(s) written"
              + ("; run again with --resume" if args.output else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    skipped = len(images) + len(videos) - len(pending_images) - len(pending_videos)
    print(f"{writer.faces_written} face(s) in {writer.records_written} image(s)/frame(s); "
          f"{failures} input(s) failed; {skipped} input(s) already in the output"
          + (f"; output: {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if failures else 0


def needs_run(path, writer, drawings):
    """Whether an input still has to run: the output lacks it, or its drawing is missing.

    An input the output records as failed has no drawing to redo.
    """
    source = str(path)
    if source not in writer.done:
        return True
    return drawings is not None and source not in writer.failed and not drawings[path].exists()


def check_output(path, force=False, resume=False, suffixes=(".jsonl", ".csv"), hint="or --resume to continue it"):
    """Checks that ``path`` may be written, before any work.

    Args:
        path: the output file, or None (standard output).
        force: an existing file may be replaced.
        resume: an existing file will be continued.
        suffixes: the file suffixes the command writes.
        hint: how else the user can treat an existing file.

    Raises:
        ValueError: an unsupported suffix, or both ``force`` and ``resume``.
        FileExistsError: the file exists and neither ``force`` nor ``resume``.
        IsADirectoryError: ``path`` is a folder.
        PermissionError, NotADirectoryError: see :func:`check_writable`.
    """
    if force and resume:
        raise ValueError("Use either --force or --resume, not both. Received: force=True, resume=True")
    if path is None:
        return
    path = pathlib.Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"The output must end in {' or '.join(suffixes)}. Received: output={str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"The output is a folder, not a file. Received: output={str(path)!r}")
    if path.exists() and path.stat().st_size > 0 and not (force or resume):
        raise FileExistsError(
            f"The output exists: pass --force to overwrite it {hint}. Received: output={str(path)!r}"
        )
    check_writable(path.parent, "output", path)


def check_writable(folder, option, value=None):
    """Checks that files can be created in ``folder`` (which may not exist yet).

    The nearest existing folder on its path must be a folder the user may write.

    Args:
        folder: the folder files will be written into.
        option: the command-line option that names it, for the message.
        value: that option's value (default: ``folder``).

    Raises:
        NotADirectoryError: a file is in the way.
        PermissionError: the folder cannot be written.
    """
    value = str(folder if value is None else value)
    existing = pathlib.Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is a file, not a folder. Received: {option}={value!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write into {existing} (permission denied). Received: {option}={value!r}")


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
    runs are reproducible), skipping hidden files and folders (names starting
    with ``.``); named files are kept whatever their name and suffix (a bad one
    is reported when read).

    Returns:
        ``(images, videos, relative, unreadable)``: lists of paths, for each
        path its name relative to the folder it was found in (its file name for
        named files), which places its drawing, and ``(folder, message)`` for
        each subfolder that could not be listed.

    Raises:
        FileNotFoundError: a video input does not exist, or the inputs are
            folders without an image or a video.
        PermissionError: an input folder cannot be read.
    """
    images, videos, relative, unreadable = [], [], {}, []
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            files, bad_folders = _walk(path, name)
            unreadable += bad_folders
            for child in files:
                suffix = child.suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    images.append(child)
                elif suffix in VIDEO_SUFFIXES:
                    videos.append(child)
                else:
                    continue
                relative[child] = child.relative_to(path)
            continue
        relative[path] = pathlib.Path(path.name)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"Video file not found. Received: input={name!r}")
            videos.append(path)
        else:
            images.append(path)  # missing images are reported per file, like bad ones
    if not (images or videos or unreadable):
        raise FileNotFoundError(
            f"No image or video found in the input folder(s) (hidden files are skipped unless named). "
            f"Received: inputs={list(map(str, inputs))}"
        )
    return images, videos, relative, unreadable


def _walk(folder, name):
    """The files under ``folder`` (sorted, hidden ones left out) and its unlistable subfolders.

    Returns:
        ``(files, unreadable)``: file paths, and ``(subfolder, message)`` pairs.

    Raises:
        PermissionError: ``folder`` itself cannot be listed (named ``name``).
    """
    unreadable = []

    def failed(error):
        reason = (error.strerror or str(error)).lower()
        if pathlib.Path(error.filename) == folder:
            raise PermissionError(f"Cannot read the folder ({reason}). Received: input={name!r}")
        unreadable.append((pathlib.Path(error.filename),
                           f"Cannot read the folder ({reason}). Received: path={error.filename!r}"))

    files = []
    for root, folders, names in os.walk(folder, onerror=failed):
        folders[:] = [entry for entry in folders if not entry.startswith(".")]
        files += [pathlib.Path(root, entry) for entry in names if not entry.startswith(".")]
    return sorted(path for path in files if path.is_file()), sorted(unreadable)


def _report_unreadable_folders(unreadable, writer):
    """Reports each subfolder that could not be listed as a failed input; returns their count."""
    failures = 0
    for folder, message in unreadable:
        failures += 1
        print(f"warning: skipped {folder}: {message}", file=sys.stderr)
        if str(folder) not in writer.done:
            writer.write_error(str(folder), message)
    return failures


@contextlib.contextmanager
def uninterrupted():
    """Holds Ctrl-C (SIGINT) back until the block ends, then raises ``KeyboardInterrupt``.

    The results of one input (its output records and its drawing) are written
    inside such a block, so an interrupted run holds each input whole or not at
    all. Only the main thread, with Python's default SIGINT handler, defers.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def _predict_images(predictor, paths, writer, drawings, args):
    """Streams ``paths`` in batches; returns the number of failed images.

    ``drawings`` maps each path to where its drawing goes (None: no drawings).
    """
    from fpezoo.predictor import draw_faces

    failures = 0
    progress = _progress(total=len(paths), unit="img", disable=args.no_progress or len(paths) < 2)
    batches = iter(paths)
    try:
        while batch := list(itertools.islice(batches, args.batch_size)):
            loaded = []
            for path in batch:
                try:
                    loaded.append((path, load_image(path)))
                except (OSError, ImageReadError, ValueError) as error:
                    failures += 1
                    print(f"warning: skipped {path}: {error}", file=sys.stderr)
                    if str(path) not in writer.done:
                        writer.write_error(str(path), str(error))
            if loaded:
                rgb_images = [image for _, image in loaded]
                detections = [predictor.detect(image) for image in rgb_images]
                for (path, image), faces in zip(loaded, predictor.landmarks(rgb_images, detections)):
                    with uninterrupted():
                        if drawings is not None:
                            save_image(draw_faces(image, faces), drawings[path])
                        if str(path) not in writer.done:  # else rerun for its missing drawing only
                            writer.write(str(path), faces)
            progress.update(len(batch))
    finally:
        progress.close()
    return failures


def predict_video(predictor, path, writer, drawing=None, show_progress=True):
    """Landmarks for every frame of a video; returns 1 if it ended early, else 0.

    With a face detector, faces are tracked from frame to frame
    (:class:`fpezoo.predictor.FaceTracker`); without one, every frame is a face
    crop. ``drawing``: path of an annotated MP4 to write, or None. The video's
    records and its drawing are written when its last frame is done, so an
    interrupted video is left out of the output (and rerun by ``--resume``);
    a video already in the output is rerun for its missing drawing only. A
    line on standard error gives the frames, the detector's runs and the
    frames per second (wall clock of reading, landmarks and drawing).
    """
    import time

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
    frames = []  # the faces of each frame
    with contextlib.ExitStack() as staging:
        start = time.perf_counter()
        try:
            while True:
                ok, frame_bgr = capture.read()
                if not ok:
                    break
                frame = load_image(frame_bgr, bgr=True)
                faces = predictor.predict(frame) if tracker is None else tracker.update(frame)
                frames.append(faces)
                if drawing is not None:
                    if video_writer is None:
                        staged = staging.enter_context(atomic_output(drawing, force=True))
                        video_writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                       (frame.shape[1], frame.shape[0]))
                    video_writer.write(np.ascontiguousarray(draw_faces(frame, faces)[..., ::-1]))
                progress.update(1)
        finally:
            progress.close()
            capture.release()
            if video_writer is not None:
                video_writer.release()
        seconds = time.perf_counter() - start
        runs = "no detector" if tracker is None else f"{tracker.detections_run} detector run(s)"
        print(f"{path}: {len(frames)} frame(s), {runs}, {len(frames) / max(seconds, 1e-9):.1f} frames/s",
              file=sys.stderr)
        ended_early = not frames or (announced > 0 and len(frames) < announced)
        record = str(path) not in writer.done
        with uninterrupted():
            staging.close()  # the drawing takes its name
            for frame_index, faces in enumerate(frames if record else ()):
                writer.write(str(path), faces, frame=frame_index)
            if ended_early and record:
                message = (f"Video ended early: read {len(frames)} of {announced} announced frames "
                           f"(truncated or corrupt file); the frames read are kept. "
                           f"Received: path={str(path)!r}")
                print(f"warning: {message}", file=sys.stderr)
                writer.write_error(str(path), message, frame=len(frames))
    return int(ended_early)


class ResultWriter:
    """Writes results as JSON lines or CSV, or JSON lines to standard output.

    A file is written under a temporary name in its folder (holding a copy of
    the existing file when resuming) and takes its name on :meth:`close`, also
    when the run was interrupted: write each input's records whole (see
    :func:`uninterrupted`) and ``--resume`` continues after them. Use the writer
    as a context manager, or call :meth:`close`.

    Args:
        path: ``.jsonl`` or ``.csv`` file (checked by :func:`check_output`), or
            None for standard output.
        num_keypoints: keypoints per face (the CSV columns).
        resume: continue an existing file; :attr:`done` holds the inputs it
            already has, :attr:`failed` those of them recorded with an error.

    Attributes:
        done: sources in the output, earlier ones and those written since.
        failed: sources of :attr:`done` recorded with an error.
        inputs_written: the number of sources written by this writer.
    """

    CSV_HEAD = ["source", "frame", "face", "x_min", "y_min", "x_max", "y_max", "score", "scheme", "error"]

    def __init__(self, path, num_keypoints, resume=False):
        self.path = None if path is None else pathlib.Path(path)
        self.num_keypoints = num_keypoints
        self.done, self.failed, self._written = set(), set(), set()
        self.records_written = 0
        self.faces_written = 0
        self._staging = contextlib.ExitStack()
        if self.path is None:
            self.format, self._file = "jsonl", sys.stdout
            return
        self.format = self.path.suffix.lower().lstrip(".")
        appending = resume and self.path.exists() and self.path.stat().st_size > 0
        if appending:
            self._read_done()
        staged = self._staging.enter_context(atomic_output(self.path, force=True))
        if appending:
            shutil.copyfile(self.path, staged)
        self._file = open(staged, "a" if appending else "w", newline="", encoding="utf-8")
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
                        record = json.loads(line)
                        self._mark(record["source"], "error" in record)
                    except (ValueError, KeyError, TypeError):
                        continue  # not a record of fpezoo predict
                return
            rows = csv.reader(file)
            head = next(rows, [])
            columns = len(self.CSV_HEAD) + 4 * self.num_keypoints
            if len(head) != columns:
                raise ValueError(
                    f"Cannot resume {self.path}: its columns are for another keypoint count "
                    f"(expected {columns} columns). Received: columns={len(head)}"
                )
            error = self.CSV_HEAD.index("error")
            for row in rows:
                if row:
                    self._mark(row[0], len(row) > error and bool(row[error]))

    def _mark(self, source, failed):
        self.done.add(source)
        if failed:
            self.failed.add(source)

    @property
    def inputs_written(self):
        """The number of sources (images, videos, folders) this writer has written."""
        return len(self._written)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def write(self, source, faces, frame=None):
        """Writes the faces of one image (or video frame)."""
        self._written.add(source)
        self._mark(source, False)
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
        self._written.add(source)
        self._mark(source, True)
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
        """Closes the file and gives it its name (standard output is only flushed)."""
        if self._file is sys.stdout:
            self._file.flush()
            return
        self._file.close()
        self._staging.close()


def _blank(value):
    return "" if value is None else value


def save_image(image_rgb, path):
    """Writes an RGB array as an image file (format from the suffix), never partially.

    The file is written under a temporary name in its folder (created if
    needed) and renamed (:func:`fpezoo.deploy.convert.atomic_output`);
    an existing file is replaced.
    """
    from PIL import Image

    with atomic_output(path, force=True) as staged:
        Image.fromarray(image_rgb).save(staged)


def _progress(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, **kwargs)
