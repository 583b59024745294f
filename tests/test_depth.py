"""The 3D FAN's pieces: depth targets through the pipeline, the depth loss, the 3D
NME of the evaluation module, depth training on top of a frozen 2D FAN, and its config."""

import pathlib

import numpy as np
import pytest

import fpezoo
from fpezoo import evaluation, losses, schemes, training
from fpezoo.data.augment import FaceAugmenter
from fpezoo.coordinates import transform_scale
from fpezoo.data.pipeline import ExampleMaker, make_dataset
from fpezoo.data.records import LandmarkRecord
from fpezoo.models import fan

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _record(depth=True, seed=0):
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(70, 130, 68), rng.uniform(70, 130, 68)], axis=1)
    metadata = {"depth": rng.uniform(0, 40, 68)} if depth else {}
    return LandmarkRecord(image=np.zeros((200, 200, 3), "uint8"), keypoints=points,
                          visibility=np.ones(68, "float32"), box=(60, 60, 140, 140),
                          scheme="ibug68", source="test", metadata=metadata)


def test_depth_is_scaled_with_the_crop():
    record = _record()
    maker = ExampleMaker([record], (128, 128, 3), "rgb", enlarge=2.0, depth=True)
    _, y_true = maker(0)
    assert y_true.shape == (68, 4)
    # The crop maps the 160-pixel square around the box onto 128 pixels.
    np.testing.assert_allclose(y_true[:, 3], record.metadata["depth"] * 128 / 160, rtol=1e-5)
    assert transform_scale(maker.transform(0)) == pytest.approx(128 / 160)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_depth_follows_rotation_scale_and_flip(seed):
    """The augmented (x, y, z) is a similarity of the original 3D points: every 3D distance
    scales by the 2D zoom, and a flip renames points with the scheme's permutation."""
    record = _record(seed=seed)
    augmenter = FaceAugmenter(rotation=40.0, scale=0.3, translation=0.05, flip_probability=1.0,
                              occlusion_probability=0.0, blur_probability=0.0, noise_probability=0.0)
    maker = ExampleMaker([record], (128, 128, 3), "rgb", augment=augmenter, enlarge=2.0, depth=True)
    _, y_true = maker(0, seed=seed)
    assert (y_true[:, 2] == 1).all()
    permutation = np.asarray(schemes.get_scheme("ibug68").flip_permutation)
    original = np.concatenate([record.keypoints, record.metadata["depth"][:, None]], axis=1)[permutation]
    augmented = y_true[:, [0, 1, 3]].astype("float64")

    def distances(points, columns):
        return np.linalg.norm(points[:, None, columns] - points[None, :, columns], axis=-1)

    zoom = np.median(distances(augmented, [0, 1])[np.triu_indices(68, 1)]
                     / distances(original, [0, 1])[np.triu_indices(68, 1)])
    assert not np.isclose(zoom, 128 / 160, rtol=1e-3), "the augmentation zoomed"
    np.testing.assert_allclose(distances(augmented, [0, 1, 2]), zoom * distances(original, [0, 1, 2]),
                               rtol=1e-4, atol=1e-3)
    # The image-left outer eye corner (36) of the mirrored face was the image-right one (45).
    np.testing.assert_allclose(y_true[36, 3], zoom * record.metadata["depth"][45], rtol=1e-4)


def test_depth_targets_need_depth_on_every_record():
    with pytest.raises(ValueError, match="without depth"):
        make_dataset([_record(), _record(depth=False)], (128, 128, 3), "rgb", depth=True)
    dataset = make_dataset([_record()], (128, 128, 3), "rgb", batch_size=1, depth=True)
    assert dataset.element_spec[1].shape[-2:] == (68, 4)


def test_depth_loss_is_offset_free_l1():
    y_true = np.zeros((1, 3, 4), "float32")
    y_true[0, :, 3] = [10.0, 20.0, 30.0]
    prediction = np.zeros((1, 3, 3), "float32")
    prediction[0, :, 2] = [110.0, 120.0, 130.0]  # the same relief, 100 nearer
    loss = losses.DepthL1Loss()
    assert float(loss(y_true, prediction)) == pytest.approx(0.0, abs=1e-6)
    prediction[0, :, 2] = [0.0, 0.0, 30.0]  # centred: -10, -10, 20 against -10, 0, 10
    assert float(loss(y_true, prediction)) == pytest.approx((0 + 10 + 10) / 3, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(N, K, 4\)"):
        loss(y_true[..., :3], prediction)


def test_nme_3d_on_a_hand_made_face():
    # A 10 x 40 landmark box: sqrt(w h) = 20.
    target = np.array([[0.0, 0.0, 5.0], [10.0, 0.0, 5.0], [0.0, 40.0, 5.0], [10.0, 40.0, 25.0]])
    assert evaluation.nme_3d(target + [0.0, 0.0, 100.0], target) == pytest.approx(0.0)
    shifted = target + [3.0, 4.0, -7.0]  # 5 pixels in x, y; the depth offset does not count
    assert evaluation.nme_3d(shifted, target) == pytest.approx(5 / 20)
    assert evaluation.nme_depth(shifted, target) == pytest.approx(0.0)
    flat = target.copy()
    flat[:, 2] = 0.0  # centred target depths -5, -5, -5, 15 against 0
    assert evaluation.nme_3d(flat, target) == pytest.approx((5 + 5 + 5 + 15) / 4 / 20)
    assert evaluation.nme_depth(flat, target) == pytest.approx((5 + 5 + 5 + 15) / 4 / 20)
    mirrored = target.copy()
    mirrored[:, 2] *= -1  # the wrong sign of depth is an error
    assert evaluation.nme_3d(mirrored, target) == pytest.approx((10 + 10 + 10 + 30) / 4 / 20)
    both = np.stack([target, flat])
    np.testing.assert_allclose(evaluation.nme_3d(both, np.stack([target, target])), [0.0, 30 / 80])
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        evaluation.nme_3d(target[:, :2], target[:, :2])


def test_config_resolves_the_3d_recipe():
    config = training.resolve_config(PROJECT_ROOT / "configs" / "fan68_3d_1x128.json")
    assert config["loss"]["name"] == "depth_l1"
    assert config["model"]["config"]["dimensions"] == 3
    assert config["model"]["grow_from"].startswith("fan68_1x128@")
    assert config["data"]["augment"]["full_turn_probability"] == 0.5, "the base's augmentation"
    assert pathlib.Path(config["output_dir"]).resolve() == PROJECT_ROOT / "runs" / "fan68_3d_1x128"
    for source in config["data"]["sources"]:
        assert pathlib.Path(source["path"]).is_absolute() and source["box"] == "landmarks"
    assert config["data"]["sources"][1]["options"]["teacher"].endswith("mtfl/teacher_3ddfa_v2_train.npz")


def test_depth_loss_needs_a_3d_model():
    model = fpezoo.FAN(num_stacks=1, width=8, input_size=128)
    config = training.resolve_config({"model": {"builder": "FAN"}, "loss": {"name": "depth_l1"},
                                      "output_dir": "unused"})
    with pytest.raises(ValueError, match="3D model"):
        training.check_loss_fits_model(config, model)


def test_depth_training_keeps_the_registered_2d_fan(tmp_path):
    """grow_from copies the 2D FAN, depth_l1 trains the depth network alone: the 2D points
    stay those of the registered weights while the depth changes."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 128, 128, 3)).astype("float32")
    y_true = np.concatenate([rng.uniform(20, 100, (4, 68, 2)), np.ones((4, 68, 1)),
                             rng.uniform(0, 40, (4, 68, 1))], axis=-1).astype("float32")
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((images, y_true)).batch(2).repeat()
    config = {
        "model": {"builder": "FAN", "grow_from": "fan68_1x128",
                  "config": {"num_stacks": 1, "width": 64, "input_size": 128, "dimensions": 3,
                             "depth_blocks": [1, 1, 1, 1], "depth_width": 4}},
        "loss": {"name": "depth_l1"}, "schedule": {"name": "constant", "base_lr": 0.01},
        "epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "output_dir": str(tmp_path), "verbose": 0,
    }
    start = training.build_model(training.resolve_config(config))
    model, summary = training.train(config, train_data=data)
    registered = fpezoo.FAN(weights="fan68_1x128")
    points, _ = model.predict_on_batch(images)
    np.testing.assert_array_equal(points[..., :2], registered.predict_on_batch(images)[0])
    assert not np.allclose(points[..., 2], start.predict_on_batch(images)[0][..., 2])
    trainable = {id(weight) for weight in model.trainable_weights}
    depth_weights = {id(w) for layer in fan.depth_network_layers(model) for w in layer.trainable_weights}
    assert trainable == depth_weights
    assert summary["optimizer_iterations"] == 3


def test_copy_2d_weights_needs_the_same_architecture():
    source = fpezoo.FAN(num_stacks=1, width=8, input_size=128)
    with pytest.raises(ValueError, match="no depth network"):
        fan.copy_2d_weights(source, fpezoo.FAN(num_stacks=1, width=8, input_size=128))
    with pytest.raises(ValueError, match="same architecture"):
        fan.copy_2d_weights(source, fpezoo.FAN(num_stacks=1, width=12, input_size=128, dimensions=3,
                                               depth_blocks=(1, 1, 1, 1), depth_width=4))


def test_aflw2000_3d_scores_a_3d_model(shared_data):
    """A 3D model gets nme_3d and nme_depth; its 3D error is at least its 2D error."""
    model = fpezoo.FAN(num_stacks=1, width=64, input_size=128, dimensions=3,
                       depth_blocks=(1, 1, 1, 1), depth_width=4)
    fan.copy_2d_weights(fpezoo.FAN(weights="fan68_1x128"), model)
    results = evaluation.evaluate(model, "aflw2000-3d", data=shared_data / "aflw2000-3d", limit=4,
                                  enlarge=2 ** 0.5, progress=False)
    per_face = results["per_face"]
    assert np.all(np.asarray(per_face["nme_3d"]) >= np.asarray(per_face["nme_box"]) - 1e-9)
    assert results["nme_3d"]["mean_all_faces"] > 0 and "nme_depth" in results
    assert "nme_3d" in evaluation.format_table(results)
    flipped = evaluation.evaluate(model, "aflw2000-3d", data=shared_data / "aflw2000-3d", limit=4,
                                  enlarge=2 ** 0.5, progress=False, flip_test=True)
    assert np.all(np.asarray(flipped["per_face"]["nme_3d"]) >= np.asarray(flipped["per_face"]["nme_box"]) - 1e-9)
    # Turned images: depth does not change under an in-plane turn, so the 3D error stays that of upright.
    turned = evaluation.evaluate(model, "aflw2000-3d", data=shared_data / "aflw2000-3d", limit=4,
                                 enlarge=2 ** 0.5, progress=False, rotation=180.0, roll_search=True)
    assert np.all(np.asarray(turned["per_face"]["nme_3d"]) >= np.asarray(turned["per_face"]["nme_box"]) - 1e-9)
    np.testing.assert_allclose(turned["nme_depth"]["mean_all_faces"], results["nme_depth"]["mean_all_faces"],
                               rtol=0.25)
    two_d = evaluation.evaluate("fan68_1x128", "aflw2000-3d", data=shared_data / "aflw2000-3d", limit=2,
                                progress=False)
    assert "nme_3d" not in two_d


def test_flip_averaging_keeps_a_symmetric_models_depth():
    """A run that mirrors exactly (points and depth) averages to its own prediction."""
    rng = np.random.default_rng(0)
    scheme = schemes.get_scheme("ibug68")
    base = np.concatenate([rng.uniform(0, 63, (68, 2)), rng.uniform(0, 30, (68, 1))], axis=1)
    mirrored, _ = schemes.flip_keypoints(base[:, :2], None, scheme, 64)
    mirrored = np.concatenate([mirrored, base[np.asarray(scheme.flip_permutation), 2:]], axis=1)

    def run(crops):
        flipped = crops[0, 0, 0, 0] == 1.0
        return np.stack([mirrored if flipped else base] * len(crops)), np.ones((len(crops), 68))

    crops = np.zeros((2, 64, 64, 3), "float32")
    crops[:, 0, -1] = 1.0  # the mirror image has it at [0, 0]
    points, _ = schemes.flip_averaged_predictions(run, crops, scheme)
    np.testing.assert_allclose(points, np.stack([base, base]), atol=1e-5)
