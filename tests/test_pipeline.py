"""Crop transforms and their inverse (fpezoo.coordinates); the input pipeline: datasets, mixed supervision."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpezoo import coordinates, schemes
from fpezoo.coordinates import rescale_points
from fpezoo.data import augment, pipeline, readers
from fpezoo.data.records import LandmarkRecord

boxes = st.tuples(
    st.floats(-200, 300), st.floats(-200, 300), st.floats(2, 400), st.floats(2, 400)
).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@settings(max_examples=100, deadline=None)
@given(
    box=boxes,
    output_size=st.tuples(st.integers(8, 256), st.integers(8, 256)),
    enlarge=st.floats(0.5, 2.5),
    jitter=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**31 - 1),
)
def test_crop_then_inverse_is_the_identity(box, output_size, enlarge, jitter, seed):
    """Boxes anywhere, including partly or wholly outside a 300x200 image."""
    rng = np.random.default_rng(seed)
    transform = coordinates.crop_transform(box, output_size, enlarge, jitter, rng)
    points = rng.uniform(-50, 350, (30, 2))
    back = coordinates.invert_points(coordinates.transform_points(points, transform), transform)
    np.testing.assert_allclose(back, points, atol=1e-3)


def test_whole_image_crop_is_rescale_points():
    points = np.random.default_rng(0).uniform(0, 119, (10, 2))
    transform = coordinates.crop_transform((0, 0, 120, 120), (80, 80))
    np.testing.assert_allclose(
        coordinates.transform_points(points, transform), rescale_points(points, (120, 120), (80, 80)), atol=1e-5)
    np.testing.assert_allclose(
        coordinates.resize_transform((120, 90), (80, 40)),
        [[40 / 90, 0, 0.5 * 40 / 90 - 0.5], [0, 80 / 120, 0.5 * 80 / 120 - 0.5]], atol=1e-6)


def _ramp(height=200, width=300):
    rows, columns = np.mgrid[0:height, 0:width].astype("float32")
    return (0.7 * columns + 0.4 * rows + 5.0)[..., None]


@settings(max_examples=40, deadline=None)
@given(box=boxes, size=st.integers(16, 96), enlarge=st.floats(0.8, 1.6))
def test_crop_samples_the_pixels_its_transform_names(box, size, enlarge):
    """On a linear ramp, bilinear (and area) sampling is exact: each crop pixel holds the
    ramp's value at the image point the inverse transform gives, wherever that point lies
    inside the image (large boxes take the area-averaging path)."""
    image = _ramp()
    crop, transform = coordinates.crop_face(image, box, (size, size), enlarge)
    rows, columns = np.mgrid[0:size, 0:size]
    source = coordinates.invert_points(np.stack([columns, rows], -1).astype("float64"), transform)
    scale = transform[0, 0]
    margin = 1.0 + 2.0 / min(scale, 1.0)  # away from the border, where black is blended in
    inside = ((source >= margin) & (source <= np.array([299, 199]) - margin)).all(-1)
    expected = 0.7 * source[..., 0] + 0.4 * source[..., 1] + 5.0
    np.testing.assert_allclose(crop[..., 0][inside], expected[inside], atol=1e-3)


def test_crop_errors():
    with pytest.raises(ValueError, match=r"x_max > x_min.*Received: box=\(5, 0, 1, 4\)"):
        coordinates.crop_transform((5, 0, 1, 4), (80, 80))
    with pytest.raises(ValueError, match="needs a random generator"):
        coordinates.crop_transform((0, 0, 10, 10), (80, 80), jitter=0.1)
    with pytest.raises(ValueError, match="not invertible"):
        coordinates.invert_transform(np.zeros((2, 3)))


def _synthetic_records(count=6):
    """Dark images with one dot per 5-point label, the dot's grey level encoding the index."""
    rng = np.random.default_rng(1)
    records = []
    num_keypoints = 5
    for index in range(count):
        image = np.zeros((120, 100, 3), np.uint8)
        keypoints = rng.uniform(30, 80, (num_keypoints, 2)).round()
        keypoints[:, 0] = 20 + 15 * np.arange(num_keypoints)  # distinct, well separated dots
        for point, (x, y) in enumerate(keypoints.astype(int)):
            image[y - 2:y + 3, x - 2:x + 3] = 60 + 40 * point
        visibility = np.ones(num_keypoints)
        visibility[index % num_keypoints] = 0
        records.append(LandmarkRecord(image, keypoints, visibility, (10, 20, 90, 100), "five_point", "synthetic"))
    return records


def test_evaluation_dataset_is_deterministic_and_exact():
    records = _synthetic_records()
    dataset = pipeline.make_dataset(records, (64, 64, 1), batch_size=4)
    first = [(x.numpy(), y.numpy()) for x, y in dataset]
    second = [(x.numpy(), y.numpy()) for x, y in dataset]
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    images = np.concatenate([x for x, _ in first])
    y_true = np.concatenate([y for _, y in first])
    assert images.shape == (6, 64, 64, 1) and images.dtype == np.float32 and y_true.shape == (6, 5, 3)
    assert images.max() > 200  # raw 0-255 values, not normalised
    maker = pipeline.ExampleMaker(records, (64, 64, 1))
    for index, record in enumerate(records):
        transform = maker.transform(index)
        visible = record.visibility > 0
        expected = coordinates.transform_points(record.keypoints, transform)
        np.testing.assert_allclose(y_true[index, visible, :2], expected[visible], atol=1e-4)
        np.testing.assert_array_equal(y_true[index, :, 2], record.visibility)
        assert (y_true[index, ~visible, :2] == 0).all()  # invisible: 0, never NaN
        # Predictions equal to y_true map back to the labelled points.
        back = coordinates.invert_points(y_true[index, visible, :2], transform)
        np.testing.assert_allclose(back, record.keypoints[visible], atol=1e-3)
    rgb = next(iter(pipeline.make_dataset(records, (48, 48, 3), color="rgb", batch_size=6)))[0]
    assert rgb.shape == (6, 48, 48, 3)


@pytest.mark.parametrize("flip_probability", [0.0, 1.0])
def test_training_examples_keep_points_on_their_pixels(flip_probability):
    """With geometry (and flips) only, every visible label sits on its own point's dot."""
    records = _synthetic_records()
    augmenter = augment.FaceAugmenter(
        rotation=25, scale=0.15, translation=0.05, flip_probability=flip_probability,
        brightness=0.0, contrast=0.0, gamma=0.0, blur_probability=0.0, noise_probability=0.0,
        occlusion_probability=0.0)
    dataset = pipeline.make_dataset(records, (80, 80, 1), augment=augmenter, jitter=0.1, seed=3,
                                    batch_size=6, enlarge=1.2)
    images, y_true = (tensor.numpy() for tensor in next(iter(dataset)))
    permutation = np.array(schemes.get_scheme("five_point").flip_permutation)
    grey = np.array([60 + 40 * i for i in range(5)], "float32")
    checked = 0
    for image, labels in zip(images, y_true):
        for index, (x, y, visible) in enumerate(labels):
            if not visible:
                continue
            source_point = permutation[index] if flip_probability else index
            column, row = int(round(x)), int(round(y))
            assert abs(image[row, column, 0] - grey[source_point]) < 3, (index, x, y)
            checked += 1
    assert checked >= 20
    again = next(iter(pipeline.make_dataset(records, (80, 80, 1), augment=augmenter, jitter=0.1, seed=3,
                                            batch_size=6, enlarge=1.2)))
    np.testing.assert_array_equal(again[1].numpy(), y_true)  # the seed reproduces the batch
    other = next(iter(pipeline.make_dataset(records, (80, 80, 1), augment=augmenter, jitter=0.1, seed=4,
                                            batch_size=6, enlarge=1.2)))
    assert not np.array_equal(other[1].numpy(), y_true)


def test_full_turns_framed_on_the_rotated_points_keep_their_box_size():
    """Faces turned anywhere on the circle keep the longer side of their points' box."""
    records = _synthetic_records(count=24)
    # A crop 1.5 x the box keeps every turned point inside it.
    upright = next(iter(pipeline.make_dataset(records, (80, 80, 1), batch_size=24, enlarge=1.5)))[1].numpy()
    augmenter = augment.FaceAugmenter(
        rotation=0, scale=0.0, translation=0.0, flip_probability=0.0, full_turn_probability=1.0,
        frame_rotated_points=True, occlusion_probability=0.0)
    turned = next(iter(pipeline.make_dataset(records, (80, 80, 1), augment=augmenter, seed=7,
                                             batch_size=24, enlarge=1.5)))[1].numpy()
    turns = []
    for before, after in zip(upright, turned):
        visible = before[:, 2] > 0
        np.testing.assert_array_equal(after[:, 2], before[:, 2])
        sides = [np.ptp(labels[visible, :2], axis=0).max() for labels in (before, after)]
        np.testing.assert_allclose(sides[1], sides[0], rtol=1e-4)
        (first_before, last_before), (first_after, last_after) = (
            labels[visible][[0, -1], :2] for labels in (before, after))
        heading = [np.arctan2(*(last - first)[::-1]) for first, last in
                   ((first_before, last_before), (first_after, last_after))]
        turns.append(np.degrees(np.angle(np.exp(1j * (heading[1] - heading[0])))))
    # Turns are uniform on the circle: half of the 24 faces (all but 2**-24 of the
    # time, at least one) are turned beyond a quarter turn.
    assert np.abs(turns).max() > 90


def test_dataset_errors():
    records = _synthetic_records()
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, 1\)"):
        pipeline.make_dataset(records, (80, 80, 3))
    with pytest.raises(ValueError, match="need a target `scheme`"):
        aflw = LandmarkRecord(np.zeros((20, 20), np.uint8), np.ones((21, 2)), np.ones(21), None, "aflw21", "x")
        pipeline.make_dataset(records + [aflw])
    odd = [LandmarkRecord(np.zeros((20, 20), np.uint8), [[1.0, 2.0]] * 3, [1] * 3, None, "cofw3", "x")]
    with pytest.raises(ValueError, match="set flip_probability=0"):
        pipeline.make_dataset(odd, augment=True)
    no_flip = augment.FaceAugmenter(flip_probability=0.0)
    assert pipeline.make_dataset(odd, augment=no_flip, seed=0).element_spec[1].shape[1:] == (3, 3)
    with pytest.raises(ValueError, match="one non-negative weight per source"):
        pipeline.mix_sources([pipeline.make_dataset(records, batch_size=None)], [1.0, 2.0])


@pytest.mark.data
@pytest.mark.slow
def test_mixed_supervision_on_real_data(shared_data):
    """AFLW crops' 21 human points supervise 16 points of a 68-point model, beside
    teacher labels with all 68 points, drawn with 70 / 30 % probability."""
    human = readers.read_aflw_crops(shared_data / "aflw-crops")[:300]
    teacher = readers.read_aflw_crops(shared_data / "aflw-crops", teacher=True)[:300]
    sources = [
        pipeline.make_dataset(records, (80, 80, 1), augment=True, batch_size=None, shuffle=True,
                              repeat=True, scheme="ibug68", seed=seed)
        for seed, records in ((1, human), (2, teacher))
    ]
    mixed = pipeline.mix_sources(sources, [0.7, 0.3], batch_size=32, seed=0)
    y_true = np.concatenate([y.numpy() for _, y in mixed.take(6)])
    assert y_true.shape == (192, 68, 3)
    visible_counts = y_true[..., 2].sum(axis=1)
    from_human = visible_counts <= 16
    mapped = schemes.convert_keypoints(np.zeros((21, 2)), None, "aflw21", "ibug68")[1] > 0
    assert mapped.sum() == 16
    # Human examples: only the 16 points with an AFLW counterpart can be visible.
    assert (y_true[from_human][:, ~mapped, 2] == 0).all()
    assert 0.55 < from_human.mean() < 0.85
    # Teacher examples keep most of their 68 points (occlusion and crop edges hide a few).
    assert np.median(visible_counts[~from_human]) >= 60
    assert np.isfinite(y_true).all()
