"""fpezoo.train, its config, the schedules and resuming a killed run."""

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from fpezoo import schedules, training
from fpezoo.data.records import LandmarkRecord, in_validation_split

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL_IR = "openvino-landmarks-regression-retail-0009/landmarks-regression-retail-0009.xml"


# --------------------------------------------------------------------------- schedules
def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_soft_start_annealing_follows_tao_phases():
    schedule = schedules.SoftStartAnnealing(1e-3, total_steps=100, min_lr_ratio=0.01,
                                            soft_start=0.2, annealing_start=0.6)
    rates = _rates(schedule, [0, 10, 20, 40, 60, 80, 100, 150])
    # Ramp from min_lr = 1e-5 to 1e-3, exponential: halfway is the geometric mean 1e-4.
    np.testing.assert_allclose(rates[:3], [1e-5, 1e-4, 1e-3], rtol=1e-5)
    np.testing.assert_allclose(rates[3:5], [1e-3, 1e-3], rtol=1e-5)
    # Decay: t = (1 - 0.8) / (1 - 0.6) = 0.5 -> geometric mean again, then min_lr at the end.
    np.testing.assert_allclose(rates[5:], [1e-4, 1e-5, 1e-5], rtol=1e-5)


def test_soft_start_annealing_serializes_and_checks_arguments():
    schedule = schedules.SoftStartAnnealing(5e-4, total_steps=10, soft_start=0.0)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert restored.get_config() == schedule.get_config()
    assert float(restored(0)) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match=r"soft_start < annealing_start.*Received: soft_start=0.8"):
        schedules.SoftStartAnnealing(1e-3, 10, soft_start=0.8, annealing_start=0.5)
    with pytest.raises(ValueError, match="Received: total_steps=0"):
        schedules.SoftStartAnnealing(1e-3, 0)


def test_get_schedule_cosine_warms_up_then_decays():
    schedule = schedules.get_schedule(
        {"name": "cosine", "base_lr": 1e-2, "warmup_fraction": 0.1, "alpha": 0.0}, 100)
    rates = _rates(schedule, [0, 5, 10, 55, 100])
    np.testing.assert_allclose(rates, [0.0, 5e-3, 1e-2, 5e-3, 0.0], atol=1e-7)
    assert schedules.get_schedule({"name": "constant", "base_lr": 0.1}, 5) == 0.1
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['warmup'\]"):
        schedules.get_schedule({"name": "cosine", "warmup": 3}, 10)
    with pytest.raises(ValueError, match="Received: schedule="):
        schedules.get_schedule({"name": "step"}, 10)


# --------------------------------------------------------------------------- config
def test_resolve_config_fills_defaults_and_names_bad_keys(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "epochs": 3,
                                "optimizer": {"config": {"weight_decay": 0.01}}}))
    config = training.resolve_config(path)
    assert config["epochs"] == 3 and config["batch_size"] == 64
    assert config["optimizer"] == {"name": "adamw", "config": {"weight_decay": 0.01}}
    with pytest.raises(ValueError, match=r"Unknown training config key\(s\) \['epoch'\]"):
        training.resolve_config({"output_dir": "x", "epoch": 3})
    with pytest.raises(ValueError, match="Received: epochs=0"):
        training.resolve_config({"output_dir": "x", "epochs": 0})
    with pytest.raises(ValueError, match="Received: output_dir=None"):
        training.resolve_config({})


def test_benchmarks_are_refused_as_training_data():
    source = {"reader": "aflw2000_3d", "path": "../shared/data/aflw2000-3d"}
    with pytest.raises(ValueError, match="benchmark.*Received: reader='aflw2000_3d'"):
        training.resolve_config({"output_dir": "x", "data": {"sources": [source]}})


def _record(name, scheme="aflw21", folder="images"):
    points = np.full((21, 2), np.nan, dtype="float32")
    visibility = np.zeros(21, dtype="float32")
    points[[6, 11, 14]] = [[30, 40], [80, 40], [55, 70]]
    visibility[[6, 11, 14]] = 1
    return LandmarkRecord(image=pathlib.Path("/data") / folder / name, keypoints=points,
                          visibility=visibility, box=None, scheme=scheme, source="test")


def test_validation_split_is_by_image_and_has_the_requested_size():
    records = [_record(f"image{i:05d}.jpg") for i in range(4000)]
    chosen = [in_validation_split(r, 0.1, seed=0) for r in records]
    assert 0.08 < np.mean(chosen) < 0.12
    # Another source labelling the same images splits them the same way.
    again = [in_validation_split(_record(r.image.name), 0.1, seed=0) for r in records]
    assert chosen == again
    assert chosen != [in_validation_split(r, 0.1, seed=1) for r in records]
    assert not any(in_validation_split(r, 0.0, seed=0) for r in records[:50])


def test_source_box_must_be_a_box():
    source = {"reader": "mtfl", "path": "train.txt", "box": [10, 10, 5, 20]}
    with pytest.raises(ValueError, match=r"Received: box=\[10, 10, 5, 20\]"):
        training.resolve_config({"output_dir": "x", "data": {"sources": [source]}})


def test_config_extends_a_base_and_resolves_paths_relative_to_each_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FPEZOO_DATA", str(tmp_path / "data"))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.json").write_text(json.dumps({
        "data": {"sources": [{"reader": "mtfl", "path": "labels/train.txt"},
                             {"reader": "aflw_crops", "path": "$FPEZOO_DATA/aflw-crops",
                              "options": {"teacher": "3ddfa_v2"}}],
                 "augment": {"rotation": 30.0, "scale": 0.1}},
        "schedule": {"name": "cosine", "base_lr": 1e-3, "alpha": 0.01},
        "loss": {"name": "wing", "config": {"width": 10.0}},
        "epochs": 5, "output_dir": "runs/base"}))
    (tmp_path / "stage.json").write_text(json.dumps({
        "extends": "base/base.json", "data": {"augment": {"rotation": 180.0}},
        "schedule": {"name": "constant", "base_lr": 1e-4}, "loss": {"name": "l1"}, "output_dir": "runs/stage"}))
    config = training.resolve_config(tmp_path / "stage.json")
    assert config["data"]["sources"][0]["path"] == str(tmp_path / "base" / "labels" / "train.txt")
    assert config["data"]["sources"][1]["path"] == str(tmp_path / "data" / "aflw-crops")
    assert config["data"]["sources"][1]["options"] == {"teacher": "3ddfa_v2"}  # a name, not a path
    assert config["data"]["augment"] == {"rotation": 180.0, "scale": 0.1}  # dicts merge
    assert config["schedule"] == {"name": "constant", "base_lr": 1e-4}  # named dicts are replaced whole
    assert config["loss"]["name"] == "l1" and config["loss"]["config"] == {}  # no wing width left over
    assert (config["epochs"], config["output_dir"]) == (5, str(tmp_path / "runs" / "stage"))
    (tmp_path / "loop.json").write_text(json.dumps({"extends": "loop.json"}))
    with pytest.raises(ValueError, match="extends itself"):
        training.resolve_config(tmp_path / "loop.json")


def test_every_recipe_in_configs_has_only_relative_paths():
    for path in sorted((PROJECT_ROOT / "configs").rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'"(/|[A-Za-z]:\\)', text), f"{path.name} holds an absolute path"


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "configs").glob("*.json")),
                         ids=lambda path: path.name)
def test_every_recipe_in_configs_is_a_valid_training_config(path):
    config = training.resolve_config(path)
    assert set(config) == set(training.TOP_LEVEL_KEYS)
    assert config["data"]["sources"], "a recipe names its training data"


def test_every_recipe_the_cards_and_readme_name_exists():
    # A name after a commit, `git show 18771d0:configs/NAME.json`, is one git keeps: skipped.
    documents = sorted((PROJECT_ROOT / "weights").glob("*.md")) + [PROJECT_ROOT / "README.md"]
    named = {(document.name, match) for document in documents
             for match in re.findall(r"(?<![0-9a-f]{7}:)configs/[\w*.-]+\.json",
                                     document.read_text(encoding="utf-8"))}
    assert any(document == "README.md" for document, _ in named)
    missing = [(document, pattern) for document, pattern in sorted(named)
               if not list(PROJECT_ROOT.glob(pattern))]
    assert not missing, f"configs named in documents but absent: {missing}"


def test_model_entry_is_validated():
    def resolve(model):
        return training.resolve_config({"output_dir": "x", "model": model})

    assert resolve({"freeze_batch_norms": True})["model"] == {
        "builder": "FPENet", "config": {}, "weights": None, "grow_from": None,
        "freeze_batch_norms": True}
    with pytest.raises(ValueError, match=r"Unknown model key\(s\) \['freeze'\]"):
        resolve({"freeze": True})
    with pytest.raises(ValueError, match="Received: freeze_batch_norms='yes'"):
        resolve({"freeze_batch_norms": "yes"})
    with pytest.raises(ValueError, match="Unknown builder 'FPENett'.*Received: builder='FPENett'"):
        resolve({"builder": "FPENett"})
    with pytest.raises(ValueError, match="Received: builder='FPENet', weights='retail.xml'"):
        resolve({"weights": "retail.xml"})
    with pytest.raises(ValueError, match="Received: weights=3"):
        resolve({"weights": 3})
    with pytest.raises(ValueError, match="Received: weights='a.weights.h5', grow_from='fpenet68_w32'"):
        resolve({"weights": "a.weights.h5", "grow_from": "fpenet68_w32"})
    with pytest.raises(ValueError, match="Received: grow_from='retail5_mtfl'"):
        resolve({"grow_from": "retail5_mtfl"})
    with pytest.raises(ValueError, match="Unknown weights name 'fpenet68_w8'"):
        resolve({"grow_from": "fpenet68_w8"})
    with pytest.raises(ValueError, match="Received: weights='fpenet68_w32@sha256:0199'"):
        resolve({"grow_from": "fpenet68_w32@sha256:0199"})


def test_grow_from_pinned_weights_that_were_replaced_fails_when_building(tmp_path, monkeypatch):
    from fpezoo import weights as weights_module
    from fpezoo.models.fpenet import FPENet

    path = tmp_path / "narrow.weights.h5"
    FPENet(num_keypoints=68, width=4).save_weights(path)
    digest = weights_module.sha256(path)
    (tmp_path / "registry.json").write_text(json.dumps({"narrow": {
        "file": path.name, "sha256": digest, "builder": "FPENet",
        "config": {"num_keypoints": 68, "width": 4}, "card": "narrow.md", "scheme": "ibug68"}}))
    monkeypatch.setenv("FPEZOO_WEIGHTS_DIR", str(tmp_path))
    model = {"config": {"num_keypoints": 68, "width": 8}}
    stale = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    # The recipe itself stays valid (same builder); building it names the replaced weights.
    config = training.resolve_config(
        {"output_dir": "x", "model": {**model, "grow_from": f"narrow@sha256:{stale}"}})
    with pytest.raises(ValueError, match=f"not the pinned {stale}"):
        training.build_model(config)
    widened = training.build_model(training.resolve_config(
        {"output_dir": "x", "model": {**model, "grow_from": f"narrow@sha256:{digest[:8]}"}}))
    assert widened.get_layer("encoder1_conv").kernel.shape[-1] == 8


def test_build_model_freezes_the_batch_norms():
    model_config = {"builder": "RetailLandmarks5", "freeze_batch_norms": True}
    model = training.build_model(training.resolve_config({"output_dir": "x", "model": model_config}))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    assert model.trainable_weights
    unfrozen = training.build_model(training.resolve_config(
        {"output_dir": "x", "model": {**model_config, "freeze_batch_norms": False}}))
    assert len(unfrozen.trainable_weights) == len(model.trainable_weights) + 2 * len(norms)


@pytest.mark.parametrize("heatmap_size", [40, 80], ids=["wider", "wider_with_80x80_heatmaps"])
def test_build_model_grows_registered_weights_into_a_larger_model(heatmap_size):
    from fpezoo.weights import build_registered

    config = training.resolve_config({"output_dir": "x", "model": {
        "grow_from": "fpenet68_w32",
        "config": {"num_keypoints": 68, "width": 40, "heatmap_size": heatmap_size}}})
    wide = training.build_model(config)
    assert wide.get_layer("keypoint_head").output.shape[1] == heatmap_size
    assert wide.get_layer("encoder1_conv").get_weights()[0].shape == (3, 3, 1, 40)
    narrow = build_registered("fpenet68_w32")
    faces = np.random.default_rng(0).uniform(0, 255, (2, 80, 80, 1)).astype("float32")
    np.testing.assert_allclose(wide.predict_on_batch(faces)[0], narrow.predict_on_batch(faces)[0],
                               atol=1e-3)


@pytest.mark.data
def test_build_model_starts_from_the_official_openvino_weights(shared_data):
    xml = shared_data / OFFICIAL_IR
    if not xml.is_file():
        pytest.skip(f"the official IR is not in the shared data: {xml}")
    from fpezoo.models.retail import import_openvino_retail

    config = training.resolve_config({"output_dir": "x", "model": {
        "builder": "RetailLandmarks5", "weights": str(xml), "freeze_batch_norms": True}})
    model = training.build_model(config)
    official = import_openvino_retail(xml)
    for layer in official.layers:
        for ours, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(images)[0], official.predict_on_batch(images)[0],
                               rtol=0, atol=1e-5)


@pytest.mark.data
def test_landmark_box_sources_frame_each_face_by_its_points(shared_data):
    source = {"reader": "aflw_crops", "path": str(shared_data / "aflw-crops"), "limit": 60,
              "box": "landmarks"}
    records = training.read_source(source, "five_point")
    # AFLW faces lacking one of the five points (e.g. a hidden eye) are dropped.
    assert 0 < len(records) < 60
    for record in records:
        assert record.scheme == "five_point" and record.visibility.tolist() == [1.0] * 5
        assert record.box == record.landmark_box()
    with pytest.raises(ValueError, match="Received: scheme=None"):
        training.read_source(source)


def _label_script():
    """scripts/train_pretrained.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "train_pretrained", PROJECT_ROOT / "scripts" / "train_pretrained.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_pretrained_label_file_reads_back_through_the_coco_source(tmp_path):
    """scripts/train_pretrained.py writes what the configs' coco_keypoints source reads."""
    script = _label_script()
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    written = []
    for index in range(3):
        image = tmp_path / "images" / f"image{index:05d}.png"
        image.write_bytes(b"")
        keypoints = rng.uniform(10, 100, (68, 2)).astype("float32")
        visibility = (rng.uniform(size=68) > 0.3).astype("float32")
        written.append(LandmarkRecord(
            image=image, keypoints=np.where(visibility[:, None] > 0, keypoints, np.nan),
            visibility=visibility, box=(5.5, 6.25, 90.0, 101.0 + index), scheme="ibug68",
            source="test"))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(script.coco_keypoints(written, tmp_path)))
    source = {"reader": "coco_keypoints", "path": str(labels),
              "options": {"image_root": str(tmp_path), "scheme": "ibug68", "one_based": False}}
    read = training.read_source(source, "ibug68")
    assert [record.image for record in read] == [record.image for record in written]
    for ours, theirs in zip(read, written):
        assert ours.box == theirs.box and ours.scheme == "ibug68"
        np.testing.assert_array_equal(ours.visibility, theirs.visibility)
        np.testing.assert_array_equal(ours.keypoints, theirs.keypoints)


def test_mtfl_label_file_holds_the_faces_the_teacher_is_sure_of(tmp_path):
    """``--data-set mtfl``: teacher points of MTFL's training faces, framed by their box."""
    script = _label_script()
    folder = tmp_path / "mtfl"
    (folder / "lfw_5590").mkdir(parents=True)
    rng = np.random.default_rng(2)
    names, rows, points = [], [], []
    for index in range(3):
        name = f"lfw_5590/face{index}.jpg"
        (folder / name).write_bytes(b"")
        names.append(name)
        rows.append(f"{name} " + " ".join(["40"] * 10))
        points.append(np.concatenate([rng.uniform(20, 60, (68, 2)), np.zeros((68, 1))], axis=1))
    (folder / "train.txt").write_text("\n".join(rows) + "\n")
    np.savez(folder / "teacher_mediapipe_train.npz", names=np.array([f"mtfl/{name}" for name in names]),
             pts68=np.stack(points),
             views=np.array([2, 2, 2]), flip_disagreement_nme=np.array([0.05, 0.5, 0.08]))
    output = tmp_path / "labels.json"
    counts = script.write_labels(output, tmp_path, max_flip_disagreement=0.1, data_set="mtfl")
    assert counts == {"faces": 2}
    source = {"reader": "coco_keypoints", "path": str(output),
              "options": {"image_root": str(folder), "scheme": "ibug68", "one_based": False}}
    read = training.read_source(source, "ibug68")
    assert [record.image.name for record in read] == ["face0.jpg", "face2.jpg"]
    for record, expected in zip(read, (points[0], points[2])):
        np.testing.assert_allclose(record.keypoints, expected[:, :2], atol=1e-4)
        np.testing.assert_allclose(record.box, (*expected[:, :2].min(0), *expected[:, :2].max(0)),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="Received: max_convention_offset=0.02"):
        script.write_labels(output, tmp_path, 0.1, max_convention_offset=0.02, data_set="mtfl")
    with pytest.raises(ValueError, match="Received: data_set='lfw'"):
        script.write_labels(output, tmp_path, 0.1, data_set="lfw")


def _human_and_teacher_faces(offsets, angles, yaw_deg=0.0, flip_disagreement=0.05, name="face"):
    """AFLW-21 human and iBUG-68 teacher records of the same (rotated) faces.

    The human points are the teacher's plus ``offsets[ibug index]`` (a fraction
    of the face box, in the face's frame), turned with the face.
    """
    from fpezoo import schemes

    rng = np.random.default_rng(1)
    human, teacher = [], []
    for index, angle in enumerate(angles):
        upright = rng.uniform(20.0, 80.0, (68, 2))
        upright[36], upright[45] = (20.0, 40.0), (80.0, 40.0)
        upright[[0, 16], 0], upright[[19, 8], 1] = (15.0, 85.0), (15.0, 90.0)  # a 70 x 75 box
        shift = np.zeros((68, 2))
        for point, (dx, dy) in offsets.items():
            shift[point] = np.multiply((dx, dy), np.sqrt(70.0 * 75.0))
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        guide = (upright - 50.0) @ turn.T + 60.0
        human_points, visible = schemes.convert_keypoints(
            guide + shift @ turn.T, np.ones(68, "float32"), "ibug68", "aflw21")
        image = pathlib.Path(f"{name}{index}.jpg")
        teacher.append(LandmarkRecord(
            image=image, keypoints=guide, visibility=np.ones(68, "float32"), box=None,
            scheme="ibug68", source="test", metadata={"flip_disagreement_nme": flip_disagreement}))
        human.append(LandmarkRecord(
            image=image, keypoints=human_points, visibility=visible, box=None, scheme="aflw21",
            source="test", metadata={"yaw_deg": yaw_deg}))
    return human, teacher


def test_convention_offsets_are_measured_in_the_face_frame_and_pick_shared_points():
    script = _label_script()
    offsets = {19: (0.03, 0.02), 24: (-0.03, 0.02), 21: (0.0, 0.025), 48: (0.01, 0.0)}
    human, teacher = _human_and_teacher_faces(offsets, angles=np.radians([-170, -40, 0, 25, 90]))
    # Faces the measurement leaves out: a profile and an unsure teacher, both far off.
    for name, excluded in (("profile", dict(yaw_deg=60.0)), ("unsure", dict(flip_disagreement=0.5))):
        extra_human, extra_teacher = _human_and_teacher_faces(
            {19: (0.5, 0.5)}, angles=[0.3], name=name, **excluded)
        human += extra_human
        teacher += extra_teacher
    measured = script.convention_offsets(human, teacher, max_flip_disagreement=0.1)
    assert sorted(measured) == [8, 17, 19, 21, 22, 24, 26, 30, 31, 35, 36, 39, 42, 45, 48, 54]
    for point, (dx, dy) in offsets.items():
        assert measured[point]["dx"] == pytest.approx(dx, abs=1e-4)
        assert measured[point]["dy"] == pytest.approx(dy, abs=1e-4)
        assert measured[point]["faces"] == 5
    assert measured[36]["norm"] == pytest.approx(0.0, abs=1e-4)
    # 22 has no offset of its own but its mirror partner 21 has; 54 is 48's partner.
    assert script.points_with_shared_convention(measured, 0.02) == [
        8, 17, 26, 30, 31, 35, 36, 39, 42, 45, 48, 54]
    assert script.points_with_shared_convention(measured, 0.005) == [
        8, 17, 26, 30, 31, 35, 36, 39, 42, 45]
    merged, _ = script.merge_human_and_teacher(human[:1], teacher[:1], 0.1, human_points=[48])
    np.testing.assert_allclose(merged[0].keypoints[19], teacher[0].keypoints[19], atol=1e-4)
    assert not np.allclose(merged[0].keypoints[48], teacher[0].keypoints[48], atol=1e-2)


def _constant_landmark_model(point, num_keypoints=68, size=32):
    """A grayscale landmark model that puts every keypoint at ``point`` of its crop."""
    inputs = keras.Input((size, size, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    flat = keras.layers.Dense(2 * num_keypoints, kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(np.tile(point, num_keypoints)))
    keypoints = keras.layers.Reshape((num_keypoints, 2))(flat(pooled))
    confidence = keras.layers.Dense(num_keypoints, kernel_initializer="zeros")(pooled)
    return keras.Model(inputs, [keypoints, confidence])


def test_teacher_model_labels_every_point_in_image_pixels(tmp_path):
    """Distillation labels: the model's crop predictions, mapped back through the recipe crop."""
    import cv2

    from fpezoo.coordinates import crop_transform, invert_points

    script = _label_script()
    records = []
    for index, box in enumerate([(10.0, 12.0, 40.0, 50.0), (20.0, 5.0, 44.0, 29.0)]):
        image = tmp_path / f"face{index}.png"
        cv2.imwrite(str(image), np.full((64, 64), 100 + index, dtype="uint8"))
        records.append(LandmarkRecord(
            image=image, keypoints=np.full((68, 2), np.nan, "float32"),
            visibility=np.zeros(68, "float32"), box=box, scheme="ibug68", source="test"))
    size = 32

    def expected(record, point):
        transform = crop_transform(record.box, (size, size), enlarge=script.RECIPE_ENLARGE)
        return invert_points(np.tile(point, (68, 1)).astype("float64"), transform)

    labelled, failed = script.model_labelled(records, _constant_landmark_model((0.0, 0.0)),
                                             progress=False)
    assert failed == 0 and len(labelled) == 2
    for record, label in zip(records, labelled):
        np.testing.assert_array_equal(label.visibility, np.ones(68))
        assert label.box == record.box and label.image == record.image
        np.testing.assert_allclose(label.keypoints, expected(record, (0.0, 0.0)), atol=1e-4)
    # With flip averaging, x = 5 and its mirror (size - 1 - 5) average to the crop's middle.
    flipped, _ = script.model_labelled(records, _constant_landmark_model((5.0, 0.0)),
                                       flip_test=True, progress=False)
    for record, label in zip(records, flipped):
        np.testing.assert_allclose(label.keypoints, expected(record, ((size - 1) / 2, 0.0)),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="68 iBUG points.*5 keypoints"):
        script.model_labelled(records, _constant_landmark_model((0.0, 0.0), num_keypoints=5),
                              progress=False)


def test_even_jaw_spacing_moves_the_jaw_points_along_the_outline_only(tmp_path):
    """Jaw points crowded towards the ears end up evenly spaced on the same curve."""
    script = _label_script()
    # A U-shaped jaw on a circle: angle 0 (left end) to pi (right end) through the chin at
    # pi / 2; the points of each half crowd towards the ends like the teacher's do.
    half = (np.linspace(0.0, 1.0, 9) ** 1.4) * (np.pi / 2)
    angles = np.concatenate([half, np.pi - half[::-1][1:]])
    centre, radius = np.array([60.0, 40.0]), 30.0
    keypoints = np.random.default_rng(0).uniform(20, 80, (68, 2)).astype("float32")
    keypoints[:17] = centre + radius * np.stack([-np.cos(angles), np.sin(angles)], axis=1)
    respaced = script.evenly_spaced_jaw(keypoints)

    np.testing.assert_array_equal(respaced[17:], keypoints[17:])
    np.testing.assert_allclose(respaced[[0, 8, 16]], keypoints[[0, 8, 16]], atol=1e-4)
    offsets = respaced[:17] - centre
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), radius, rtol=5e-3)
    respaced_angles = np.arctan2(offsets[:, 1], -offsets[:, 0])
    np.testing.assert_allclose(respaced_angles, np.linspace(0.0, np.pi, 17), atol=0.01)
    assert np.abs(angles - respaced_angles).max() > 0.1, "the crowded points must move"

    records = [LandmarkRecord(image=tmp_path / f"face{index}.png", keypoints=keypoints,
                              visibility=visibility, box=(0.0, 0.0, 99.0, 99.0),
                              scheme="ibug68", source="test")
               for index, visibility in enumerate([np.ones(68, "float32"),
                                                   (np.arange(68) != 3).astype("float32")])]
    changed, count = script.with_evenly_spaced_jaws(records)
    assert count == 1
    np.testing.assert_array_equal(changed[0].keypoints, respaced)
    np.testing.assert_array_equal(changed[1].keypoints, keypoints)


@pytest.mark.data
def test_read_source_filters_limits_and_frames(shared_data):
    source = {"reader": "mtfl", "path": str(shared_data / "mtfl" / "train.txt"),
              "drop_off_face_rows": True, "box": [14.6, 18.3, 66.0, 69.6]}
    from fpezoo.data import readers

    records = training.read_source(source)
    everything = readers.read_mtfl(shared_data / "mtfl" / "train.txt")
    flagged = readers.find_off_face_rows(everything).all
    assert len(flagged) > 0 and len(records) == len(everything) - len(flagged)
    kept = {str(record.image) for record in records}
    assert not kept & {str(everything[i].image) for i in flagged}
    assert all(record.box == (14.6, 18.3, 66.0, 69.6) for record in records)
    assert len(training.read_source({**source, "limit": 7})) == 7


# --------------------------------------------------------------------------- training runs
def _synthetic_faces(count=32, size=16, num_keypoints=5):
    """Faces whose keypoints are marked by bright pixels, so the task is learnable."""
    rng = np.random.default_rng(0)
    points = rng.integers(2, size - 2, (count, num_keypoints, 2)).astype("float32")
    images = np.zeros((count, size, size, 1), dtype="float32")
    for face, face_points in enumerate(points):
        for x, y in face_points.astype(int):
            images[face, y, x, 0] = 255.0
    labels = np.concatenate([points, np.ones((count, num_keypoints, 1), "float32")], axis=-1)
    return images, labels


def _tiny_config(output_dir, epochs=4):
    return {
        "model": {"builder": "FPENet",
                  "config": {"num_keypoints": 5, "width": 8, "input_shape": [16, 16, 1]}},
        "loss": {"name": "l1"},
        "optimizer": {"name": "adam"},
        "schedule": {"name": "constant", "base_lr": 1e-2},
        "epochs": epochs, "batch_size": 8, "steps_per_epoch": 4, "verbose": 0,
        "output_dir": str(output_dir),
    }


@pytest.mark.slow
def test_train_learns_and_writes_the_run_files(tmp_path):
    import tensorflow as tf

    images, labels = _synthetic_faces()
    train_data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat()
    validation = tf.data.Dataset.from_tensor_slices((images[:16], labels[:16])).batch(8)
    model, summary = training.train(_tiny_config(tmp_path, epochs=6), train_data=train_data,
                                    validation_data=validation)
    history = training.read_history(tmp_path)
    losses = [float(row["loss"]) for row in history]
    assert [int(row["epoch"]) for row in history] == list(range(6))
    assert losses[-1] < 0.9 * losses[0]  # measured: 6.33 -> 5.45
    assert summary["optimizer_iterations"] == 24 and summary["scheme"] == "five_point"
    best = json.loads((tmp_path / "best.json").read_text())
    val_losses = [float(row["val_loss"]) for row in history]
    assert best["value"] == pytest.approx(min(val_losses), rel=1e-5)
    assert best["epoch"] == int(np.argmin(val_losses))
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    # best.keras is the model with the best weights; it reloads in safe mode.
    reloaded = keras.saving.load_model(tmp_path / "best.keras")
    best_model = training.build_model(training.resolve_config(_tiny_config(tmp_path)))
    best_model.load_weights(tmp_path / "best.weights.h5")
    np.testing.assert_allclose(reloaded.predict(images[:4], verbose=0)[0],
                               best_model.predict(images[:4], verbose=0)[0], atol=1e-5)


# Trains the tiny model; with "kill", SIGKILLs itself after epoch `kill_after`'s backup.
RESUME_SCRIPT = r"""
import json, os, signal, sys
import keras, numpy as np, tensorflow as tf
sys.path.insert(0, sys.argv[1])
from tests.test_training import _synthetic_faces, _tiny_config
import fpezoo.training

output_dir, kill_after = sys.argv[2], int(sys.argv[3])

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

images, labels = _synthetic_faces()
data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat()
callbacks = [Kill()] if kill_after >= 0 else []
_, summary = fpezoo.training.train(_tiny_config(output_dir), train_data=data, callbacks=callbacks)
print("SUMMARY " + json.dumps(summary))
"""


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    def run(kill_after):
        return subprocess.run(
            [sys.executable, "-c", RESUME_SCRIPT, str(PROJECT_ROOT), str(tmp_path), str(kill_after)],
            capture_output=True, text=True, timeout=240,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )

    killed = run(kill_after=1)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    assert not (tmp_path / "summary.json").exists()

    resumed = run(kill_after=-1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.split("SUMMARY ")[-1])
    assert summary["first_epoch_this_run"] == 2 and summary["epochs_run"] == 2
    # Optimizer state (and with it the schedule's step) came back with the weights.
    assert summary["optimizer_iterations"] == 4 * 4
    epochs = [int(row["epoch"]) for row in training.read_history(tmp_path)]
    assert epochs == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()  # removed once the run finished
    best = json.loads((tmp_path / "best.json").read_text())
    losses = [float(row["loss"]) for row in training.read_history(tmp_path)]
    assert best["value"] == pytest.approx(min(losses), rel=1e-5)
    assert math.isfinite(best["value"])


TINY_FAN = {"num_keypoints": 5, "width": 8, "input_size": 128}


def _fan_config(output_dir, num_stacks):
    return {
        "model": {"builder": "FAN", "config": {**TINY_FAN, "num_stacks": num_stacks}},
        "loss": {"name": "adaptive_wing", "config": {"sigma": 1.5}},
        "optimizer": {"name": "adam"},
        "schedule": {"name": "constant", "base_lr": 1e-3},
        "epochs": 2, "batch_size": 2, "steps_per_epoch": 2, "verbose": 0,
        "output_dir": str(output_dir),
    }


def _fan_faces():
    """Four 128x128 RGB faces with their five keypoints marked, batches of two."""
    import tensorflow as tf

    images, labels = _synthetic_faces(count=4, size=128)
    images = np.repeat(images, 3, axis=-1)
    return images, tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)


def _check_run_saved_the_fan(run_dir, config, model, images):
    """best.keras, best.weights.h5 and final.weights.h5 are the FAN of the config."""
    import fpezoo

    assert model.get_layer("heatmap_argmax") is not None and len(model.outputs) == 2
    best = fpezoo.FAN(**config["model"]["config"], weights=str(run_dir / "best.weights.h5"))
    reloaded = keras.saving.load_model(run_dir / "best.keras")
    for ours, theirs in zip(best.predict_on_batch(images), reloaded.predict_on_batch(images)):
        np.testing.assert_array_equal(ours, theirs)
    final = fpezoo.FAN(**config["model"]["config"], weights=str(run_dir / "final.weights.h5"))
    for ours, theirs in zip(final.predict_on_batch(images), model.predict_on_batch(images)):
        np.testing.assert_array_equal(ours, theirs)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("interrupted")


@pytest.mark.slow
def test_a_two_stack_fan_run_learns_from_both_stacks_and_resumes(tmp_path):
    images, data = _fan_faces()
    config = _fan_config(tmp_path, num_stacks=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        training.train(config, train_data=data.repeat(), validation_data=data, callbacks=[_Interrupt()])
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    model, summary = training.train(config, train_data=data.repeat(), validation_data=data)
    assert summary["first_epoch_this_run"] == 1 and summary["optimizer_iterations"] == 4
    assert summary["scheme"] == "five_point"
    history = training.read_history(tmp_path)
    assert [int(row["epoch"]) for row in history] == [0, 1]
    losses = [float(row["loss"]) for row in history]
    assert losses[-1] < losses[0], losses  # Adaptive Wing on both stacks' heatmaps
    for row in history:
        stacks = float(row["keypoint_head_stack1_loss"]) + float(row["keypoint_head_loss"])
        assert float(row["loss"]) == pytest.approx(stacks, rel=1e-4)
        assert math.isfinite(float(row["val_keypoints_nme_eye_centres"]))
    _check_run_saved_the_fan(tmp_path, config, model, images)


def test_the_loss_must_fit_the_model(tmp_path):
    fan = {"builder": "FAN", "config": {**TINY_FAN, "num_stacks": 1}}
    # Refused before any data is needed (the configs name no data source).
    with pytest.raises(ValueError, match=r"argmax.*Received: loss.name='wing', builder='FAN'"):
        training.train({"model": fan, "loss": {"name": "wing"}, "output_dir": str(tmp_path)})
    fpenet = {"config": {"num_keypoints": 5, "width": 8}}
    with pytest.raises(ValueError,
                       match="Received: loss.name='adaptive_wing', builder='FPENet'"):
        training.train({"model": fpenet, "loss": {"name": "adaptive_wing"},
                        "output_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"Received: loss.config.input_size=\[64, 64\]"):
        training.resolve_config({"model": fan, "output_dir": "x", "loss": {
            "name": "adaptive_wing", "config": {"input_size": [64, 64]}}})


@pytest.mark.data
@pytest.mark.slow
def test_train_command_on_real_mixed_sources(shared_data, tmp_path):
    """``fpezoo train`` on AFLW human 21 points + teacher 68 points + MTFL 5 points."""
    from fpezoo import cli

    crops, mtfl = str(shared_data / "aflw-crops"), str(shared_data / "mtfl" / "train.txt")
    config = {
        "model": {"builder": "FPENet", "config": {"num_keypoints": 68, "width": 4}},
        "data": {"sources": [
            {"reader": "aflw_crops", "path": crops, "limit": 200, "weight": 1.0},
            {"reader": "aflw_crops", "path": crops, "limit": 200, "weight": 1.0,
             "options": {"teacher": True, "max_flip_disagreement": 0.05}},
            {"reader": "mtfl", "path": mtfl, "limit": 200, "weight": 0.5, "drop_off_face_rows": True},
        ], "validation_fraction": 0.1},
        "epochs": 2, "batch_size": 8, "steps_per_epoch": 3, "validation_steps": 2,
        "output_dir": str(tmp_path / "run"), "verbose": 0,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert cli.main(["train", str(path)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scheme"] == "ibug68" and summary["optimizer_iterations"] == 6
    faces = summary["faces"]
    assert [source["train"] + source["validation"] for source in faces["sources"]] == [200, 200, 200]
    assert 0 < faces["validation"] < 120
    history = training.read_history(tmp_path / "run")
    assert all(math.isfinite(float(row["val_loss"])) for row in history)
    assert (tmp_path / "run" / "best.weights.h5").is_file()


def test_tao80_labels_put_iris_points_where_taos_flip_pairs_expect_them():
    """Pupils from MediaPipe's iris10 order, ears from AFLW: a mirrored face maps onto itself."""
    from fpezoo import schemes

    script = _label_script()
    width = 101.0  # mirror axis x = 50
    # iris10 as MediaPipe gives it: per eye (image-left first) centre, right, top, left, bottom.
    left_eye, right_eye = np.array([35.0, 40.0]), np.array([65.0, 40.0])
    ring = np.array([[0, 0], [3, 0], [0, -3], [-3, 0], [0, 3]], dtype="float32")
    iris = np.concatenate([left_eye + ring, right_eye + ring])
    ibug = np.random.default_rng(0).uniform(20, 80, (68, 2)).astype("float32")
    record = LandmarkRecord(image=pathlib.Path("a.jpg"), keypoints=ibug, visibility=np.ones(68, "float32"),
                            box=(0.0, 0.0, width, width), scheme="ibug68", source="test")
    human = np.full((21, 2), np.nan, dtype="float32")
    human[12], human[16] = (10.0, 50.0), (90.0, 50.0)
    human_visibility = np.zeros(21, "float32")
    human_visibility[[12, 16]] = 1.0
    human_record = dataclasses.replace(record, keypoints=human, visibility=human_visibility, scheme="aflw21")
    (labelled,), counts = script.with_tao80_points([record], {record.image: iris},
                                                   {record.image: human_record})
    assert counts == {"faces_with_pupils": 1, "ear_points": 2} and labelled.scheme == "tao80"
    np.testing.assert_array_equal(labelled.visibility[68:], [1] * 8 + [1, 0, 1, 0])
    np.testing.assert_array_equal(labelled.keypoints[68:72], left_eye + ring[[3, 2, 1, 4]])
    pupils = labelled.keypoints[68:80]
    mirrored = np.stack([width - 1 - pupils[:, 0], pupils[:, 1]], axis=1)
    permutation = np.asarray(schemes.get_scheme("tao80").flip_permutation[68:]) - 68
    seen = labelled.visibility[68:] > 0
    np.testing.assert_allclose(mirrored[permutation][seen], pupils[seen])


def test_every_label_file_the_recipes_read_is_written_by_the_recipe_labels_command():
    """``python scripts/train_pretrained.py runs/labels --recipe-labels`` writes each file configs/ reads."""
    script = _label_script()
    named = set()
    for path in (PROJECT_ROOT / "configs").rglob("*.json"):
        named.update(re.findall(r'runs/labels/([\w.-]+\.json)"', path.read_text(encoding="utf-8")))
    assert named and named <= set(script.RECIPE_LABELS), named - set(script.RECIPE_LABELS)
