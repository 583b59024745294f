"""Tests of the Triton model repository export."""

import importlib

import numpy as np
import onnxruntime as ort
import pytest

from fpezoo.deploy import triton

convert_module = importlib.import_module("fpezoo.deploy.convert")
from test_convert import build_family  # noqa: E402

ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32"}


@pytest.mark.parametrize("family", ["fpenet", "retail"])
def test_repository_config_matches_the_exported_model(family, tmp_path):
    model = build_family(family)
    path = convert_module.convert(model, tmp_path / "repository", to="triton", model_name="landmarks")
    assert path == tmp_path / "repository" / "landmarks"
    assert sorted(p.name for p in (tmp_path / "repository").iterdir()) == ["landmarks"]
    config = triton.read_config(path / "config.pbtxt")
    session = ort.InferenceSession(str(path / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    assert config["name"] == "landmarks" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 64 and config["dynamic_batching"] == {}
    for section, tensors in (("input", session.get_inputs()), ("output", session.get_outputs())):
        assert [entry["name"] for entry in config[section]] == [t.name for t in tensors]
        for entry, tensor in zip(config[section], tensors):
            assert entry["data_type"] == ORT_TO_TRITON[tensor.type]
            assert not isinstance(tensor.shape[0], int)  # dynamic batch
            assert entry["dims"] == list(tensor.shape[1:])
    assert [entry["name"] for entry in config["output"]] == ["keypoints", "confidence"]
    # The served model answers a batch shaped as the config says.
    images = np.random.default_rng(0).uniform(0, 255, (3, *config["input"][0]["dims"])).astype("float32")
    keypoints, confidence = session.run(None, {"images": images})
    assert list(keypoints.shape) == [3, *config["output"][0]["dims"]]
    assert list(confidence.shape) == [3, *config["output"][1]["dims"]]


def test_static_batch_has_no_dynamic_batching(tmp_path):
    model = build_family("fpenet")
    path = convert_module.convert(model, tmp_path, to="triton", batch_size=2, model_name="fixed")
    config = triton.read_config(path / "config.pbtxt")
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [2, 80, 80, 1]
    assert config["output"][0]["dims"] == [2, 68, 2]


def test_existing_model_folder_needs_force(tmp_path):
    model = build_family("fpenet")
    (tmp_path / "fpenet").mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        convert_module.convert(model, tmp_path, to="triton")
    assert list((tmp_path / "fpenet").iterdir()) == []


def test_read_config_handles_comments_lists_and_repeated_keys(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text(
        '# a comment\nname: "m"  # trailing\nmax_batch_size: 8\n'
        'instance_group [ { count: 2 kind: KIND_CPU } ]\n'
        'parameters { key: "a" value: { string_value: "x y" } }\n'
        'parameters { key: "b" value: { string_value: "z" } }\n'
        "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }\n"
    )
    config = triton.read_config(path)
    assert config["name"] == "m" and config["max_batch_size"] == 8
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert [p["key"] for p in config["parameters"]] == ["a", "b"]
    assert config["parameters"][0]["value"] == {"string_value": "x y"}
    assert config["dynamic_batching"] == {"preferred_batch_size": [4, 8],
                                          "max_queue_delay_microseconds": 100}


def test_bad_model_name(tmp_path):
    model = build_family("fpenet")
    with pytest.raises(ValueError, match="Received: model_name='a/b'"):
        convert_module.convert(model, tmp_path, to="triton", model_name="a/b")
    with pytest.raises(ValueError, match="Received: precision='int8'"):
        convert_module.convert(model, tmp_path, to="triton", precision="int8")
    assert list(tmp_path.iterdir()) == []
