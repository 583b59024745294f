"""Tests of the TensorRT and TF-TRT paths up to the engine build (no GPU here)."""

import importlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fpezoo.deploy import tensorrt, tftrt

convert_module = importlib.import_module("fpezoo.deploy.convert")
from test_convert import build_family  # noqa: E402


def test_operator_list_is_data_with_its_source():
    support = json.loads(tensorrt.OPERATORS_FILE.read_text())
    assert "onnx-tensorrt" in support["source"] and "docs/operators.md" in support["source"]
    assert {"Conv", "ConvTranspose", "Resize", "MaxPool", "Relu"} <= set(support["supported"])
    assert {"Unique", "LayerNormalization"} <= set(support["unsupported"])
    assert not set(support["supported"]) & set(support["unsupported"])


@pytest.mark.parametrize("family", ["fpenet_preprocessing", "retail", "fan"])
def test_exported_graphs_would_build_in_tensorrt(family, tmp_path):
    model = build_family(family)
    path = convert_module.convert(model, tmp_path / "model.onnx", to="onnx")
    onnx_model = onnx.load(str(path))
    onnx.checker.check_model(onnx_model, full_check=True)
    assert importlib.import_module("fpezoo.deploy.export").onnx_opset(onnx_model) <= 18
    assert tensorrt.tensorrt_problems(onnx_model) == []
    assert {node.op_type for node in onnx_model.graph.node} <= set(tensorrt.operator_support()["supported"])


def _graph(nodes, initializers=(), extra_inputs=(), opset=17):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in extra_inputs]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_problems_are_found():
    weights = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    fine = _graph([helper.make_node("Conv", ["x", "w"], ["y"])], [weights])
    assert tensorrt.tensorrt_problems(fine) == []

    unsupported = _graph([helper.make_node("Hardmax", ["x"], ["y"])])
    assert "Hardmax is not in TensorRT's ONNX operator list" in tensorrt.tensorrt_problems(unsupported)[0]
    plugin = _graph([helper.make_node("MyOp", ["x"], ["y"], domain="com.example")])
    assert "plugin" in tensorrt.tensorrt_problems(plugin)[0]
    runtime_weights = _graph([helper.make_node("Conv", ["x", "w"], ["y"])], extra_inputs=[("w", [2, 3, 1, 1])])
    assert "must be a constant" in tensorrt.tensorrt_problems(runtime_weights)[0]
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    cubic = _graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")], [scales])
    assert "mode=cubic" in tensorrt.tensorrt_problems(cubic)[0]
    new_opset = _graph([helper.make_node("Relu", ["x"], ["y"])], opset=19)
    assert "opset 19" in tensorrt.tensorrt_problems(new_opset)[0]
    with pytest.raises(ValueError, match="Hardmax.*Received: onnx_model="):
        tensorrt.check_onnx_for_tensorrt(unsupported)


def test_batch_range_and_trtexec_command():
    assert tensorrt.batch_range(4, 64) == (4, 4, 4)
    assert tensorrt.batch_range(None, 64) == (1, 8, 64)
    assert tensorrt.batch_range(None, 4) == (1, 4, 4)
    dynamic = tensorrt.trtexec_command("m.onnx", "m.plan", "fp16", ("images", [-1, 80, 80, 1]), (1, 8, 64))
    assert dynamic == ("trtexec --onnx=m.onnx --saveEngine=m.plan --minShapes=images:1x80x80x1 "
                       "--optShapes=images:8x80x80x1 --maxShapes=images:64x80x80x1 --fp16")
    static = tensorrt.trtexec_command("m.onnx", "m.plan", "int8", ("images", [4, 80, 80, 1]), (4, 4, 4),
                                      calibration_cache="m.cache")
    assert static == "trtexec --onnx=m.onnx --saveEngine=m.plan --int8 --fp16 --calib=m.cache"


class _Crops:
    """Stands in for CalibrationImages: numbered constant crops."""

    def __init__(self, count):
        self.crops = np.stack([np.full((6, 5, 1), i, np.float32) for i in range(count)])

    def batches(self, batch_size):
        for start in range(0, len(self.crops) - batch_size + 1, batch_size):
            yield self.crops[start:start + batch_size]


def test_calibration_feeder_batches_and_cache(tmp_path):
    feeder = tensorrt.CalibrationFeeder(_Crops(7), batch_size=3, cache_path=tmp_path / "c" / "calib.cache")
    first, second = feeder.next_batch(), feeder.next_batch()
    assert first.shape == (3, 6, 5, 1) and first.dtype == np.float32 and first.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(second[:, 0, 0, 0], [3, 4, 5])
    assert feeder.next_batch() is None and feeder.batches_served == 2
    assert feeder.read_cache() is None
    feeder.write_cache(b"TRT-1001-EntropyCalibration2\nimages: 3c010a14\n")
    again = tensorrt.CalibrationFeeder(None, batch_size=3, cache_path=tmp_path / "c" / "calib.cache")
    assert again.read_cache() == b"TRT-1001-EntropyCalibration2\nimages: 3c010a14\n"
    assert again.next_batch() is None
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["calib.cache"]


@pytest.mark.data
def test_calibration_feeder_on_real_crops(shared_data, tmp_path):
    """Batches of real MTFL crops are shaped and valued as the model input."""
    import cv2

    lines = (shared_data / "mtfl" / "test.txt").read_text().split("\n")[:5]
    folder = tmp_path / "crops"
    folder.mkdir()
    for index, line in enumerate(lines):
        image = cv2.imread(str(shared_data / "mtfl" / line.split()[0]))
        cv2.imwrite(str(folder / f"{index}.png"), image)
    images = convert_module.CalibrationImages(folder, (80, 80), 1, "grayscale")
    feeder = tensorrt.CalibrationFeeder(images, batch_size=2, cache_path=tmp_path / "cache")
    batch = feeder.next_batch()
    expected = cv2.imread(str(folder / "0.png"), cv2.IMREAD_GRAYSCALE)
    assert batch.shape == (2, 80, 80, 1)
    # MTFL crops are 80x80 already: the batch holds the image's own gray levels.
    np.testing.assert_allclose(batch[0, ..., 0], expected, atol=1.01)  # OpenCV rounds to uint8


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_engine_build_without_tensorrt_names_the_trtexec_command(tmp_path):
    model = build_family("fpenet")
    with pytest.raises(RuntimeError, match="trtexec --onnx=.*model.onnx --saveEngine=.*model.plan"):
        convert_module.convert(model, tmp_path / "model.plan", to="tensorrt", precision="fp16")
    assert list(tmp_path.iterdir()) == []


def test_tftrt_without_a_tensorrt_build_points_to_onnx(tmp_path):
    import tensorflow as tf

    if tf.sysconfig.get_build_info().get("is_tensorrt_build"):
        pytest.skip("this TensorFlow is built with TensorRT")
    with pytest.raises(RuntimeError, match=f"TensorFlow {tf.__version__}.*--to tensorrt"):
        tftrt.check_available()
    model = build_family("fpenet")
    with pytest.raises(RuntimeError, match="Received: tensorflow="):
        convert_module.convert(model, tmp_path / "tftrt", to="tftrt")
    assert list(tmp_path.iterdir()) == []
