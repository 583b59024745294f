"""Tests for the OpenVINO IR importer of landmarks-regression-retail-0009.

The parity test needs the optional ``openvino`` package (``pip install openvino``);
the importer itself reads the IR with the standard library and NumPy.
"""

import cv2
import keras
import numpy as np
import pytest

from fpezoo.coordinates import rescale_points
from fpezoo.data.readers import read_mtfl
from fpezoo.metrics import nme
from fpezoo.models.retail import (
    RetailLandmarks5,
    import_openvino_retail,
    load_openvino_retail_weights,
    read_openvino_ir,
)

IR_NAME = "landmarks-regression-retail-0009"


@pytest.fixture(scope="module")
def ir_xml(shared_data):
    path = shared_data / f"openvino-{IR_NAME}" / f"{IR_NAME}.xml"
    if not path.is_file():
        pytest.skip(f"the official IR is not in the shared data: {path}")
    return path


def _mtfl_test_crops(folder, count=None):
    """MTFL test faces: BGR 80x80 crops and (N, 5, 2) 0-based labels."""
    records = read_mtfl(folder / "test.txt")[:count]
    images = np.array([record.load_image("bgr") for record in records])
    return images, np.array([record.keypoints for record in records], "float64")


def _to_48(images):
    return np.array([cv2.resize(image, (48, 48), interpolation=cv2.INTER_LINEAR)
                     for image in images], "float32")


def test_ir_reader_finds_the_chain_and_every_constant(ir_xml):
    chain = read_openvino_ir(ir_xml)
    assert chain[0][0] == "Parameter" and tuple(chain[0][2][0]) == (1, 3, 48, 48)
    assert chain[-1][0] == "Sigmoid"
    assert [op[0] for op in chain].count("PReLU") == 8
    # Every value of the 762,464-byte .bin is a constant of some op.
    assert sum(c.size for op in chain[1:] for c in op[2]) == 190_616


def test_import_gives_the_keras_architecture(ir_xml):
    model = import_openvino_retail(ir_xml)
    first_conv = model.get_layer("conv1").get_weights()[0]
    assert first_conv.shape == (3, 3, 3, 16)
    bn = model.get_layer("input_bn")
    assert np.all(bn.moving_mean.numpy() == 0)


def test_keras_matches_openvino_on_mtfl_faces(ir_xml, shared_data):
    openvino = pytest.importorskip(
        "openvino", reason="the parity test needs the optional `openvino` package")
    core = openvino.Core()
    # f32 explicitly: on CPUs with bf16 support OpenVINO otherwise infers in bf16
    # (differences up to 3.6e-3 were measured).
    compiled = core.compile_model(core.read_model(ir_xml), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    images, _ = _mtfl_test_crops(shared_data / "mtfl", count=64)
    faces = _to_48(images)
    expected = np.concatenate(
        [compiled(face[None].transpose(0, 3, 1, 2))[0].reshape(1, 10) for face in faces])
    model = import_openvino_retail(ir_xml)
    values = keras.Model(model.input, model.get_layer("values").output).predict(faces, verbose=0)
    assert np.abs(values - expected).max() < 1e-4
    # And the decoded keypoints are those values in the "centres" convention.
    np.testing.assert_allclose(model.predict(faces, verbose=0)[0],
                               expected.reshape(-1, 5, 2) * 47, atol=5e-3)


def test_official_weights_fit_the_centres_convention_best(ir_xml, shared_data):
    images, labels = _mtfl_test_crops(shared_data / "mtfl")
    faces = _to_48(images)
    scores = {}
    for convention in ("corners", "centres"):
        model = load_openvino_retail_weights(RetailLandmarks5(convention=convention), ir_xml)
        points = rescale_points(model.predict(faces, batch_size=256, verbose=0)[0],
                                (48, 48), (80, 80))
        scores[convention] = np.mean(nme(points, labels, normalization="eye_centres",
                                         scheme="five_point"))
    # Measured: corners 0.1437, centres 0.1361 (2,995 faces).
    assert scores["centres"] < scores["corners"], scores
    assert 0.10 < scores["centres"] < 0.17, scores


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: path="):
        import_openvino_retail(tmp_path / "nothing.xml")


def test_an_ir_of_another_network_is_refused(tmp_path):
    xml = tmp_path / "other.xml"
    xml.write_text(
        '<net name="other" version="11"><layers>'
        '<layer id="0" name="x" type="Parameter"><data shape="1,3,64,64" element_type="f32"/>'
        '</layer><layer id="1" name="out" type="Result"/></layers>'
        '<edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/></edges></net>'
    )
    (tmp_path / "other.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"input must be 1x3x48x48. Received: input shape=\(1, 3, 64, 64\)"):
        import_openvino_retail(xml)


def test_the_convert_command_exports_the_official_ir_to_onnx(ir_xml, shared_data, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the ONNX parity test needs onnxruntime")
    from fpezoo.deploy.convert import main as convert_main

    output = tmp_path / "retail-0009.onnx"
    assert convert_main([str(ir_xml), "--to", "onnx", "--output", str(output)]) == 0
    images, _ = _mtfl_test_crops(shared_data / "mtfl", count=8)
    faces = _to_48(images)
    expected_keypoints, expected_confidence = import_openvino_retail(ir_xml).predict(faces, verbose=0)
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    keypoints, confidence = session.run(["keypoints", "confidence"], {"images": faces})
    assert keypoints.shape == (8, 5, 2)
    np.testing.assert_allclose(keypoints, expected_keypoints, rtol=0, atol=1e-3)
    np.testing.assert_allclose(confidence, expected_confidence, rtol=0, atol=1e-3)


def test_the_convert_command_refuses_an_ir_with_another_builder(tmp_path):
    from fpezoo.deploy.convert import convert

    with pytest.raises(ValueError, match="Received: source=.*builder='FPENet'"):
        convert(str(tmp_path / "model.xml"), tmp_path / "m.onnx", builder="FPENet")
    with pytest.raises(FileNotFoundError, match="Received: source="):
        convert(str(tmp_path / "model.xml"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_importer_is_exported_by_the_package():
    import fpezoo

    assert fpezoo.import_openvino_retail is import_openvino_retail
    assert "import_openvino_retail" in dir(fpezoo)
