"""Tests for the weights registry, checksums, partial loading and model cards."""

import json

import keras
import numpy as np
import pytest

from fpezoo import weights as weights_module
from fpezoo.cli import main as cli_main
from fpezoo.models.fpenet import FPENet

TINY = dict(width=4)
FACES = np.random.default_rng(0).uniform(0, 255, (2, 80, 80, 1)).astype("float32")


def _saved(tmp_path, filename="tiny.weights.h5", **config):
    model = FPENet(**{**TINY, **config})
    # Non-default values everywhere, so a layer that did not load is detected.
    for layer in model.layers:
        layer.set_weights([np.random.default_rng(1).normal(size=w.shape) for w in layer.get_weights()])
    path = tmp_path / filename
    model.save_weights(path)
    return model, path


def _register(tmp_path, monkeypatch, path, name="tiny", config=None, digest=None):
    (tmp_path / f"{name}.md").write_text(f"# {name}\nTrained on nothing; test weights.\n")
    entry = {
        "file": path.name,
        "sha256": digest or weights_module.sha256(path),
        "builder": "FPENet",
        "config": config or {"num_keypoints": 68, **TINY},
        "card": f"{name}.md",
        "scheme": "ibug68",
    }
    (tmp_path / "registry.json").write_text(json.dumps({name: entry}))
    monkeypatch.setenv("FPEZOO_WEIGHTS_DIR", str(tmp_path))


def test_path_round_trip_gives_identical_outputs(tmp_path):
    original, path = _saved(tmp_path)
    restored = FPENet(weights=path, **TINY)
    for expected, actual in zip(original(FACES), restored(FACES)):
        np.testing.assert_array_equal(expected, actual)


def test_registered_name_card_and_build(tmp_path, monkeypatch, capsys):
    original, path = _saved(tmp_path)
    _register(tmp_path, monkeypatch, path)
    by_name = FPENet(weights="tiny", **TINY)
    np.testing.assert_array_equal(original(FACES)[0], by_name(FACES)[0])
    built = weights_module.build_registered("tiny")
    np.testing.assert_array_equal(original(FACES)[0], built(FACES)[0])
    assert "Trained on nothing" in weights_module.model_card("tiny")
    assert cli_main(["card", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "# tiny" in printed and weights_module.sha256(path) in printed
    assert cli_main(["card"]) == 0
    assert capsys.readouterr().out.startswith("tiny\tFPENet\tibug68")


def test_checksum_mismatch_is_reported(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    _register(tmp_path, monkeypatch, path, digest="0" * 64)
    with pytest.raises(ValueError, match=r"Checksum mismatch.*Received: weights='tiny'"):
        FPENet(weights="tiny", **TINY)


def test_pinned_name_loads_its_weights_and_refuses_others(tmp_path, monkeypatch):
    original, path = _saved(tmp_path)
    _register(tmp_path, monkeypatch, path)
    digest = weights_module.sha256(path)
    pinned = FPENet(weights=f"tiny@sha256:{digest[:8]}", **TINY)
    np.testing.assert_array_equal(original(FACES)[0], pinned(FACES)[0])
    assert weights_module.build_registered(f"tiny@sha256:{digest}").count_params() == original.count_params()
    other = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    with pytest.raises(ValueError, match=(
            rf"registered as 'tiny' in {tmp_path} have sha256 {digest[:12]}\.\.\., not the pinned "
            rf"{other}\.\.\..*git log --reverse --format=%h -S {other} -- weights/registry.json.*"
            rf"Received: weights='tiny@sha256:{other}'$")):
        FPENet(weights=f"tiny@sha256:{other}", **TINY)
    for malformed in ("tiny@sha256:", "tiny@sha256:0199d41", "tiny@sha256:0199D41E",
                      "tiny@sha256:0199d41g", f"tiny@sha256:{digest}0"):
        with pytest.raises(ValueError, match=rf"NAME@sha256:HEX.*Received: weights='{malformed}'$"):
            weights_module.registry_entry(malformed)
    with pytest.raises(ValueError, match=r"Unknown weights name 'nope'.*Received: weights='nope@sha256:"):
        weights_module.registry_entry(f"nope@sha256:{digest[:8]}")


def test_unknown_name_lists_known_names(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    _register(tmp_path, monkeypatch, path)
    with pytest.raises(ValueError, match=r"Unknown weights name 'nope'\. Known names: tiny.*Received: weights='nope'$"):
        FPENet(weights="nope", **TINY)
    with pytest.raises(ValueError, match="Unknown weights name"):
        weights_module.model_card("nope")


def test_other_keypoint_count_loads_trunk_and_warns(tmp_path):
    original, path = _saved(tmp_path, num_keypoints=68)
    with pytest.warns(UserWarning, match=r"except \['keypoint_head'\]"):
        partial = FPENet(num_keypoints=10, weights=path, **TINY)
    for layer in partial.layers:
        if layer.weights and layer.name != "keypoint_head":
            for expected, actual in zip(original.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(expected, actual)
    assert partial.get_layer("keypoint_head").get_weights()[0].shape == (1, 1, 4, 10)
    assert partial(FACES)[0].shape == (2, 10, 2)


@pytest.mark.parametrize(
    "saved_config, first_mismatch",
    [({"width": 8}, "encoder1_conv"),
     ({"variant": "release"}, "decoder1_upsample"),
     ({"heatmap_size": 40}, "decoder4_upsample")],
)
def test_weights_of_another_model_name_first_mismatching_layer(tmp_path, saved_config, first_mismatch):
    _, path = _saved(tmp_path, **saved_config)
    with pytest.raises(ValueError, match=f"another model: the first mismatching layer is '{first_mismatch}'"):
        FPENet(weights=path, **TINY)


def test_weights_of_an_unrelated_keras_model(tmp_path):
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2, name="dense_head")(inputs))
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="first mismatching layer is 'encoder1_conv' .absent from the file"):
        FPENet(weights=path, **TINY)


def test_extra_layers_in_file_are_a_mismatch(tmp_path):
    _, path = _saved(tmp_path, variant="base")
    with pytest.raises(ValueError, match="file has layer 'extra_conv'"):
        FPENet(weights=path, variant="public", **TINY)


def test_truncated_and_corrupt_files(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated or corrupt.*Received: weights="):
        FPENet(weights=truncated, **TINY)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        FPENet(weights=garbage, **TINY)


def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: weights="):
        FPENet(weights=tmp_path / "missing.weights.h5", **TINY)
    with pytest.raises(ValueError, match=r"'\.weights\.h5' files.*Received: weights="):
        FPENet(weights=tmp_path / "model.h5", **TINY)
    with pytest.raises(TypeError, match="Received: weights=3"):
        FPENet(weights=3, **TINY)


def test_registry_found_in_source_checkout(monkeypatch):
    monkeypatch.delenv("FPEZOO_WEIGHTS_DIR", raising=False)
    folder = weights_module.weights_dir()
    assert (folder / "registry.json").is_file()
    assert isinstance(weights_module.registry(), dict)


def test_plain_weights_load_into_a_preprocessing_model(tmp_path):
    original, path = _saved(tmp_path)
    wrapped = FPENet(weights=path, include_preprocessing=True, input_shape=(80, 80, 1), **TINY)
    np.testing.assert_allclose(original(FACES)[0], wrapped(FACES)[0], atol=1e-4)


def _two_head_model(num_keypoints):
    """A model with an intermediate head and its projection, as FAN's stacks."""
    images = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", name="stem")(images)
    early = keras.layers.Conv2D(num_keypoints, 1, name="keypoint_head_stack1")(features)
    projected = keras.layers.Conv2D(4, 1, name="keypoint_head_stack1_projection")(early)
    merged = keras.layers.Add(name="merge")([features, projected])
    heatmaps = keras.layers.Conv2D(num_keypoints, 1, name="keypoint_head")(merged)
    return keras.Model(images, heatmaps)


def test_every_keypoint_head_layer_starts_fresh(tmp_path):
    source = _two_head_model(7)
    path = tmp_path / "two_heads.weights.h5"
    source.save_weights(path)
    target = _two_head_model(3)
    with pytest.warns(UserWarning) as record:
        fresh = weights_module.load_weights(target, path)
    assert fresh == ["keypoint_head_stack1", "keypoint_head_stack1_projection", "keypoint_head"]
    assert all(name in str(record[0].message) for name in fresh)
    for expected, actual in zip(source.get_layer("stem").get_weights(), target.get_layer("stem").get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_card_command_reports_unknown_name(tmp_path, monkeypatch, capsys):
    _, path = _saved(tmp_path)
    _register(tmp_path, monkeypatch, path)
    assert cli_main(["card", "nope"]) == 2
    assert "Unknown weights name 'nope'. Known names: tiny" in capsys.readouterr().err


def _register_script():
    """``scripts/register_weights.py`` as a module."""
    import importlib.util

    script = weights_module.pathlib.Path(__file__).resolve().parents[1] / "scripts" / "register_weights.py"
    spec = importlib.util.spec_from_file_location("register_weights", script)
    register = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(register)
    return register


def _training_run(tmp_path, config):
    """A training-run folder holding only ``config.json`` (the caller adds the weights)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"builder": "FPENet", "config": config}}))
    return run


def test_register_script_keeps_the_model_weights_without_the_optimizer(tmp_path):
    import h5py

    register = _register_script()
    config = {"num_keypoints": 68, **TINY}
    run = _training_run(tmp_path, config)
    trained = FPENet(**config)
    trained.compile(optimizer="adam", loss="mse")
    trained.fit(FACES, np.zeros((2, 68, 2), "float32"), epochs=1, verbose=0)
    trained.save_weights(run / "best.weights.h5")  # a checkpoint: with Adam's moments
    with h5py.File(run / "best.weights.h5") as file:
        assert len(file["optimizer"]["vars"]), "the checkpoint carries the optimizer state"
    shipped = tmp_path / "weights"
    shipped.mkdir()
    assert register.main([str(run), "tiny", "--scheme", "ibug68", "--weights-dir", str(shipped)]) == 0
    target = shipped / "tiny.weights.h5"
    with h5py.File(target) as file:
        assert "optimizer" not in file or not len(file["optimizer"].get("vars", {}))
    entry = json.loads((shipped / "registry.json").read_text())["tiny"]
    assert entry["sha256"] == weights_module.sha256(target) and entry["config"] == config
    restored = FPENet(weights=target, **TINY)
    for expected, actual in zip(trained(FACES), restored(FACES)):
        np.testing.assert_array_equal(expected, actual)


def test_register_script_warns_when_fpezoo_resolves_another_weights_folder(
        tmp_path, monkeypatch, capsys):
    register = _register_script()
    config = {"num_keypoints": 68, **TINY}
    run = _training_run(tmp_path, config)
    FPENet(**config).save_weights(run / "best.weights.h5")
    shipped = tmp_path / "weights"
    shipped.mkdir()
    monkeypatch.setenv("FPEZOO_WEIGHTS_DIR", str(shipped))
    assert register.main([str(run), "tiny", "--scheme", "ibug68", "--weights-dir", str(shipped)]) == 0
    assert "Warning" not in capsys.readouterr().err
    elsewhere = tmp_path / "installed"
    monkeypatch.setenv("FPEZOO_WEIGHTS_DIR", str(elsewhere))
    assert register.main([str(run), "tiny", "--scheme", "ibug68", "--weights-dir", str(shipped)]) == 0
    err = capsys.readouterr().err
    assert f"fpezoo resolves registered names from {elsewhere}" in err
    assert f"FPEZOO_WEIGHTS_DIR={shipped}" in err
