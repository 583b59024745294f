"""Tests for the weights registry, checksums, partial loading and model cards."""

import json
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

import fpezoo
from fpezoo import weights as weights_module
from fpezoo.cli import main as cli_main
from fpezoo.models import fpenet as fpenet_module
from fpezoo.models.fan import FAN
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


def _register(tmp_path, monkeypatch, path, name="tiny", config=None, digest=None, **extra):
    (tmp_path / f"{name}.md").write_text(f"# {name}\nTrained on nothing; test weights.\n")
    entry = {
        "file": path.name,
        "sha256": digest or weights_module.sha256(path),
        "builder": "FPENet",
        "config": config or {"num_keypoints": 68, **TINY},
        "card": f"{name}.md",
        "scheme": "ibug68",
        **extra,
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
    by_name = FPENet(weights="tiny")  # width 4 from the registry
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
    pinned = FPENet(weights=f"tiny@sha256:{digest[:8]}")
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


# --------------------------------------------------------------- registered weights carry their architecture
REGISTERED = weights_module.list_pretrained()


def _random_batch(model, seed=0):
    """A random 0-255 batch of two images for ``model`` (96x96 where its input takes any size)."""
    shape = [96 if size is None else size for size in model.inputs[0].shape[1:]]
    return np.random.default_rng(seed).uniform(0, 255, (2, *shape)).astype("float32")


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_every_registered_name_builds_from_weights_alone(name):
    builder = weights_module.registered_builder(REGISTERED[name]["builder"])
    model = builder(weights=name)
    registered = weights_module.build_registered(name)
    assert [w.shape for w in model.weights] == [w.shape for w in registered.weights]
    batch = _random_batch(model)
    for expected, actual in zip(registered(batch), model(batch)):
        np.testing.assert_array_equal(expected, actual)


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_an_80_point_head_on_every_registered_name(name):
    """TAO's 80 points on every trunk (a 68-point head on the registered 80-point one)."""
    builder = weights_module.registered_builder(REGISTERED[name]["builder"])
    count = 68 if REGISTERED[name]["config"].get("num_keypoints") == 80 else 80
    with pytest.warns(UserWarning, match=rf"{name}.*another keypoint count.*'keypoint_head'"):
        model = builder(num_keypoints=count, weights=name)
    stored, _ = weights_module.read_layer_weights(weights_module.resolve_weights(name))
    for layer in model.layers:
        # keypoint_head and the other keypoint_head_* layers (a 3D FAN's depth stem and depth
        # head) start fresh; every other layer loads.
        if layer.weights and not weights_module._is_keypoint_head(layer.name):
            for saved, loaded in zip(stored[layer.name], layer.get_weights()):
                np.testing.assert_array_equal(saved, loaded)
    keypoints, confidence = model(_random_batch(model))
    assert keypoints.shape[:2] == (2, count) and confidence.shape == (2, count)


def test_argument_contradicting_the_registry_fails_before_building(tmp_path, monkeypatch):
    _, path = _saved(tmp_path, heatmap_size=40)
    _register(tmp_path, monkeypatch, path, config={"num_keypoints": 68, "width": 4, "heatmap_size": 40})

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    with monkeypatch.context() as patch:
        patch.setattr(fpenet_module, "resolve_network_input", no_build)
        with pytest.raises(ValueError, match=r"carry their architecture: 'tiny' fills in width, so leave it out"
                                             r".*Received: width=64; tiny is width=4$"):
            FPENet(width=64, weights="tiny")
        with pytest.raises(ValueError, match=r"Received: width=8, heatmap_size=None; tiny is width=4, heatmap_size=40$"):
            FPENet(68, "tiny", width=8, heatmap_size=None)
        with pytest.raises(ValueError, match=r"registered for the 'FPENet' builder, not 'FAN'.*Received: weights='tiny'$"):
            FAN(weights="tiny")
    # Agreeing and free arguments (the keypoint count, the input) are taken as given.
    model = FPENet(width=4, weights="tiny", include_preprocessing=True, name="framed")
    assert model.name == "framed" and model.get_layer("encoder1_conv").filters == 4


def test_list_pretrained(tmp_path, monkeypatch, capsys):
    assert fpezoo.list_pretrained is weights_module.list_pretrained
    _, path = _saved(tmp_path)
    _register(tmp_path, monkeypatch, path, crop={"enlarge": 1.5})
    expected = {"builder": "FPENet", "config": {"num_keypoints": 68, **TINY}, "scheme": "ibug68",
                "crop": {"enlarge": 1.5}}
    assert fpezoo.list_pretrained() == {"tiny": expected}
    assert fpezoo.list_pretrained("FPENet") == {"tiny": expected}
    assert fpezoo.list_pretrained("FAN") == {}
    assert cli_main(["card"]) == 0
    assert capsys.readouterr().out == 'tiny\tFPENet\tibug68\t{"num_keypoints": 68, "width": 4}\tcrop {"enlarge": 1.5}\n'


def test_weights_module_imports_no_model_code():
    """``fpezoo.weights`` (the registry, ``fpezoo card``) needs neither Keras nor the models: no import cycle."""
    code = ("import sys, fpezoo.weights; "
            "print(sorted(m for m in sys.modules if m.startswith(('fpezoo.models', 'keras', 'tensorflow'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------- damaged files loaded by path
def test_sha256_checks_a_file_loaded_by_path(tmp_path):
    original, path = _saved(tmp_path)
    digest = weights_module.sha256(path)
    restored = FPENet(weights=path, sha256=digest.upper(), **TINY)
    np.testing.assert_array_equal(original(FACES)[0], restored(FACES)[0])
    other = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ValueError, match=(rf"Checksum mismatch for the weights file: {path} has sha256 {digest}, "
                                          rf"not the expected {other} .*Received: sha256='{other}'$")):
        FPENet(weights=path, sha256=other, **TINY)
    with pytest.raises(ValueError, match=r"64 hex digits.*Received: sha256='1234'$"):
        FPENet(weights=path, sha256="1234", **TINY)
    with pytest.raises(ValueError, match=r"without weights.*Received: sha256='1234', weights=None$"):
        FPENet(sha256="1234", **TINY)


def _flip(data, start, length):
    """``data`` with ``length`` bytes from ``start`` inverted."""
    damaged = bytearray(data)
    damaged[start:start + length] = bytes(byte ^ 0xFF for byte in damaged[start:start + length])
    return bytes(damaged)


def test_damaged_file_fails_with_an_error_naming_it(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    header = tmp_path / "header.weights.h5"
    header.write_bytes(_flip(data, 0, 4096))
    with pytest.raises(ValueError, match=rf"Cannot read weights from {header}: the file is truncated or corrupt"):
        FPENet(weights=header, **TINY)
    # Damaged values read without an HDF5 error: the file's sha256 tells.
    with h5py.File(path, "r") as file:
        kernel = next(group["vars"]["0"] for group in file["layers"].values()
                      if group["vars"].attrs["name"] == "encoder2_conv")
        start, length = kernel.id.get_offset(), kernel.id.get_storage_size()
    values = tmp_path / "values.weights.h5"
    values.write_bytes(_flip(data, start, length))
    damaged = FPENet(weights=values, **TINY)
    assert not np.array_equal(damaged.get_layer("encoder2_conv").get_weights()[0],
                              FPENet(weights=path, **TINY).get_layer("encoder2_conv").get_weights()[0])
    with pytest.raises(ValueError, match=rf"Checksum mismatch for the weights file: {values} .*damaged"):
        FPENet(weights=values, sha256=weights_module.sha256(path), **TINY)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_infinite_weights_fail(tmp_path, bad_value):
    model = FPENet(**TINY)
    kernel, bias = model.get_layer("decoder2_conv1").get_weights()
    kernel[0, 0, 0, 0] = bad_value
    model.get_layer("decoder2_conv1").set_weights([kernel, bias])
    path = tmp_path / "diverged.weights.h5"
    model.save_weights(path)
    with pytest.raises(ValueError, match=(rf"weights in {path} hold NaN or infinite values \(layer 'decoder2_conv1'\)"
                                          rf".*Received: weights='{path}'$")):
        FPENet(weights=path, **TINY)
