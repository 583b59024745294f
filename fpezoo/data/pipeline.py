"""The ``tf.data`` input pipeline: face crops and ``y_true`` for training and evaluation.

Every example goes through one 2x3 affine transform from original-image pixels
to model-input pixels (pixel-centre convention of ``docs/DESIGN.md``): the
square crop around the face box (enlarged, randomly jittered when training),
composed with the augmenter's random geometry. The image is warped with that
matrix and the keypoints are multiplied by it, so they cannot drift apart; the
inverse matrix (:func:`fpezoo.coordinates.invert_points`) maps predictions back to the original
image.

``make_dataset`` yields ``(images, y_true)``: float32 images of the model's input
shape with raw 0-255 values (FPENet: 80x80x1 grayscale), and ``y_true`` of shape
``(N, K, 3)`` = x, y, visibility. Invisible points (occluded, unlabelled, or
outside the crop) have visibility 0 and coordinates 0, never NaN: a NaN would
poison the gradient even under a zero weight.

With ``depth=True`` (3D models, :class:`fpezoo.losses.DepthL1Loss`), ``y_true``
is ``(N, K, 4)`` = x, y, visibility, z: each record's ``metadata["depth"]``
(the teacher readers keep the 3D teacher's z, in the image's pixels) follows the
same transform as the points. In-plane rotation and translation leave it
unchanged, scaling scales it like x and y (by ``sqrt(|det|)`` of the 2x2 part
of the image-to-crop matrix), and a horizontal flip permutes it with the points
(mirroring does not change depth). Depth is known at every point, visible or
not.
"""

import numpy as np
import tensorflow as tf

from fpezoo import schemes
from fpezoo.coordinates import compose, crop_transform, transform_points, transform_scale, warp
from fpezoo.data.augment import FaceAugmenter, mark_outside
from fpezoo.data.records import COLORS, record_box


# --------------------------------------------------------------------------- labels
def _color_and_shape(input_shape, color):
    input_shape = tuple(int(v) for v in input_shape)
    if color not in COLORS:
        raise ValueError(f"Unknown color; expected one of {COLORS}. Received: color={color!r}")
    channels = 1 if color == "grayscale" else 3
    if len(input_shape) != 3 or input_shape[2] != channels or min(input_shape) < 1:
        raise ValueError(
            f"input_shape must be (height, width, {channels}) for color={color!r}. "
            f"Received: input_shape={input_shape}"
        )
    return input_shape


def stack_labels(records, scheme=None):
    """Keypoints and visibility of ``records`` in one scheme.

    Records of another fpezoo scheme are converted with
    ``fpezoo.schemes.convert_keypoints`` (points without a counterpart get
    visibility 0), which is how, e.g., AFLW's 21 points supervise part of a
    68-point model.

    Args:
        records: list of records.
        scheme: target scheme name; by default the records' common scheme.

    Returns:
        ``(keypoints (N, K, 2), visibility (N, K), scheme name)``; invisible
        points have coordinates 0.
    """
    if not records:
        raise ValueError("No records to make a data set from. Received: records=[]")
    names = sorted({record.scheme for record in records})
    if scheme is None:
        if len(names) > 1:
            raise ValueError(
                "Records of several schemes need a target `scheme` to convert to. "
                f"Received: schemes={names}"
            )
        scheme = names[0]
    scheme = scheme.name if isinstance(scheme, schemes.KeypointScheme) else scheme
    keypoints, visibility = [], []
    for name in names:
        group = [record for record in records if record.scheme == name]
        points = np.stack([record.keypoints for record in group])
        visible = np.stack([record.visibility for record in group])
        if name != scheme:
            points, visible = schemes.convert_keypoints(points, visible, name, scheme)
        keypoints.append(points)
        visibility.append(visible)
    order = np.argsort(np.concatenate(
        [[i for i, record in enumerate(records) if record.scheme == name] for name in names]))
    keypoints = np.concatenate(keypoints)[order]
    visibility = np.concatenate(visibility)[order].astype("float32")
    keypoints = np.where(visibility[..., None] > 0, keypoints, 0.0).astype("float32")
    return keypoints, visibility, scheme


def stack_depth(records, scheme):
    """The ``(N, K)`` float32 depths of records (``metadata["depth"]``) in ``scheme``.

    Raises:
        ValueError: a record has no depth, depth of another length or non-finite
            depth, or is in another scheme (depth is not converted between
            schemes).
    """
    scheme = scheme.name if isinstance(scheme, schemes.KeypointScheme) else scheme
    depths = []
    for record in records:
        depth = record.metadata.get("depth")
        if record.scheme != scheme or depth is None:
            raise ValueError(
                f"Depth targets need every record in the {scheme!r} scheme with its "
                "metadata['depth'] (e.g. a 3DDFA_V2 teacher reader's records). Received: a "
                f"{record.scheme!r} record {'without' if depth is None else 'with'} depth "
                f"from {record._origin()}"
            )
        depth = np.asarray(depth, dtype="float32")
        if depth.shape != (record.num_keypoints,) or not np.isfinite(depth).all():
            raise ValueError(
                f"metadata['depth'] must hold {record.num_keypoints} finite values (record from "
                f"{record._origin()}). Received: depth={depth.tolist()}"
            )
        depths.append(depth)
    return np.stack(depths)


# --------------------------------------------------------------------------- examples
class ExampleMaker:
    """Turns record ``index`` into ``(image float32 (H, W, C), y_true float32 (K, 3))``.

    With ``depth=True``, ``y_true`` is ``(K, 4)`` = x, y, visibility, z (see the
    module docstring).

    The evaluation path (no augmenter, no jitter) is deterministic; the
    training path draws everything from ``numpy.random.default_rng(seed)``, so
    an example is reproducible from its seed.

    Args:
        records: list of records.
        input_shape: ``(height, width, channels)`` of the model input.
        color: ``"grayscale"``, ``"rgb"`` or ``"bgr"``.
        augment: a :class:`~fpezoo.data.augment.FaceAugmenter`, or None.
        scheme: target scheme (see :func:`stack_labels`).
        enlarge: crop side as a multiple of the box's longer side.
        jitter: relative random shift and zoom of the crop (training).
        depth: add each record's ``metadata["depth"]`` as a fourth column.
    """

    def __init__(self, records, input_shape=(80, 80, 1), color="grayscale", augment=None,
                 scheme=None, enlarge=1.0, jitter=0.0, depth=False):
        self.input_shape = _color_and_shape(input_shape, color)
        self.color = color
        self.records = list(records)
        self.keypoints, self.visibility, self.scheme = stack_labels(self.records, scheme)
        self.depth = stack_depth(self.records, self.scheme) if depth else None
        if augment is True:
            augment = FaceAugmenter()
        if augment not in (None, False) and not isinstance(augment, FaceAugmenter):
            raise TypeError(
                f"augment must be None, True or a FaceAugmenter. Received: augment={augment!r}")
        self.augment = augment or None
        if self.augment is not None and self.augment.flip_probability > 0:
            if self.scheme not in schemes.SCHEMES:
                raise ValueError(
                    f"Flipping needs the flip permutation of a known scheme ({sorted(schemes.SCHEMES)}); "
                    f"set flip_probability=0 for this layout. Received: scheme={self.scheme!r}"
                )
        if not enlarge > 0:
            raise ValueError(f"enlarge must be positive. Received: enlarge={enlarge}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1). Received: jitter={jitter}")
        self.enlarge = enlarge
        self.jitter = jitter

    @property
    def num_keypoints(self):
        """The number of points K of ``y_true``."""
        return self.keypoints.shape[1]

    def transform(self, index):
        """The evaluation (unjittered) image-to-input transform of record ``index``."""
        return crop_transform(record_box(self.records[index]), self.input_shape[:2], self.enlarge)

    def __call__(self, index, seed=None):
        """The example of record ``index``; ``seed`` drives the training randomness."""
        index = int(index)
        record = self.records[index]
        output_size = self.input_shape[:2]
        rng = np.random.default_rng(int(seed) % 2**63) if seed is not None else None
        training = self.augment is not None or self.jitter > 0
        if training and rng is None:
            raise ValueError("The training path needs a seed. Received: seed=None")
        image = record.load_image(self.color)
        transform = crop_transform(record_box(record, image), output_size, self.enlarge,
                                   self.jitter, rng)
        visibility = self.visibility[index]
        points = transform_points(self.keypoints[index], transform)
        depth = None if self.depth is None else self.depth[index]
        flip = False
        if self.augment is not None:
            geometry, flip = self.augment.sample_geometry(rng, output_size, points, visibility)
            transform = compose(geometry, transform)
            points = transform_points(points, geometry)
        if flip:
            mirror = np.array([[-1.0, 0.0, output_size[1] - 1.0], [0.0, 1.0, 0.0]])
            transform = compose(mirror, transform)
            points, visibility = schemes.flip_keypoints(points, visibility, self.scheme,
                                                        output_size[1])
            if depth is not None:
                depth = depth[np.asarray(schemes.get_scheme(self.scheme).flip_permutation)]
        crop = warp(image, transform, output_size)
        visibility = mark_outside(points, visibility, output_size)
        if self.augment is not None:
            crop, visibility = self.augment(crop, points, visibility, rng)
        points = np.where(visibility[:, None] > 0, points, 0.0)
        columns = [points, visibility[:, None]]
        if depth is not None:
            columns.append(depth[:, None] * transform_scale(transform))
        y_true = np.concatenate(columns, axis=1).astype("float32")
        return crop.astype("float32"), y_true


def make_dataset(
    records,
    input_shape=(80, 80, 1),
    color="grayscale",
    augment=None,
    batch_size=64,
    shuffle=False,
    scheme=None,
    enlarge=1.0,
    jitter=0.0,
    seed=None,
    repeat=False,
    drop_remainder=False,
    num_parallel_calls=tf.data.AUTOTUNE,
    depth=False,
):
    """A ``tf.data.Dataset`` of ``(images, y_true)`` for ``Model.fit`` / ``evaluate``.

    Each example is made by :class:`ExampleMaker` inside ``tf.numpy_function``
    with a parallel ``map`` (OpenCV releases the GIL while it decodes and warps;
    see ``benchmarks/input_pipeline.py`` for the comparison with a generator).

    Args:
        records: list of :class:`~fpezoo.data.records.LandmarkRecord`.
        input_shape: ``(height, width, channels)`` of the model input.
        color: ``"grayscale"`` (1 channel), ``"rgb"`` or ``"bgr"`` (3).
        augment: None (evaluation), True (default :class:`FaceAugmenter`) or a
            ``FaceAugmenter``.
        batch_size: examples per batch; None for an unbatched data set (to mix
            sources with :func:`mix_sources`).
        shuffle: reshuffle the records every epoch.
        scheme: target keypoint scheme (records of other schemes are converted).
        enlarge: crop side as a multiple of the face box's longer side.
        jitter: relative random shift and zoom of the crop (training).
        seed: seed of the shuffle and of every random draw; the same seed gives
            the same examples (in order with the default deterministic map).
        repeat: repeat forever.
        drop_remainder: drop the last incomplete batch.
        num_parallel_calls: parallelism of the map.
        depth: depth targets for a 3D model (see the module docstring).

    Returns:
        The data set; images float32 ``(N, H, W, C)`` raw 0-255, ``y_true``
        float32 ``(N, K, 3)`` (``(N, K, 4)`` with ``depth``).
    """
    maker = ExampleMaker(records, input_shape, color, augment, scheme, enlarge, jitter, depth)
    indices = tf.data.Dataset.range(len(maker.records))
    if shuffle:
        indices = indices.shuffle(len(maker.records), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    examples = tf.data.Dataset.zip(indices, tf.data.Dataset.random(seed=seed))
    height, width, channels = maker.input_shape
    num_keypoints = maker.num_keypoints

    def load(index, example_seed):
        image, y_true = tf.numpy_function(
            maker, [index, example_seed], (tf.float32, tf.float32), stateful=False)
        image.set_shape((height, width, channels))
        y_true.set_shape((num_keypoints, 3 if maker.depth is None else 4))
        return image, y_true

    examples = examples.map(load, num_parallel_calls=num_parallel_calls)
    if batch_size is not None:
        examples = examples.batch(batch_size, drop_remainder=drop_remainder)
    return examples.prefetch(tf.data.AUTOTUNE)


def mix_sources(sources, weights, batch_size=64, seed=None):
    """One training stream drawing from several sources with given probabilities.

    Each source is an unbatched data set of ``(image, y_true)`` in the same
    scheme (``make_dataset(..., batch_size=None, repeat=True, scheme=...)``);
    ``tf.data.Dataset.sample_from_datasets`` picks the source of each example.
    For mixed supervision, give every source the model's scheme: a 21-point
    AFLW source then carries visibility 0 on the 68-point model's other points,
    so it supervises only the points it has.

    Args:
        sources: list of unbatched data sets (repeated, so none runs out).
        weights: sampling probability of each source (normalised to sum 1).
        batch_size: examples per batch.
        seed: seed of the source choice.

    Returns:
        A batched ``tf.data.Dataset``.
    """
    sources = list(sources)
    weights = np.asarray(weights, dtype="float64")
    if not sources or weights.shape != (len(sources),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            "mix_sources needs one non-negative weight per source, not all zero. "
            f"Received: weights={weights.tolist()}, sources={len(sources)}"
        )
    specs = {str(source.element_spec) for source in sources}
    if len(specs) != 1:
        raise ValueError(
            "All sources must yield unbatched (image, y_true) of the same shapes (make them "
            f"with the same input_shape, color and scheme, batch_size=None). Received: specs={sorted(specs)}"
        )
    mixed = tf.data.Dataset.sample_from_datasets(
        sources, weights=(weights / weights.sum()).tolist(), seed=seed)
    return mixed.batch(batch_size).prefetch(tf.data.AUTOTUNE)
