"""Package layout and install checks."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

import fpezoo

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_public_names_resolve_lazily():
    assert fpezoo.coordinates.rescale_points is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = fpezoo.nope


def test_version_is_the_packaged_one():
    # `fpezoo --version` prints fpezoo.__version__; setup.py holds the version pip installs.
    assert f'version="{fpezoo.__version__}"' in (ROOT / "setup.py").read_text()


def test_no_tensorflow_addons_dependency():
    for path in [ROOT / "setup.py", *ROOT.joinpath("fpezoo").rglob("*.py")]:
        assert "tensorflow_addons" not in path.read_text() and "tensorflow-addons" not in path.read_text(), path


@pytest.mark.slow
def test_wheel_ships_weights_and_data_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("fpezoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fpezoo/_weights/registry.json" in names
    shipped = {pathlib.Path(p).name for p in ROOT.joinpath("weights").iterdir() if p.is_file() and p.suffix != ".py"}
    in_wheel = {pathlib.Path(n).name for n in names if n.startswith("fpezoo/_weights/")}
    assert shipped <= in_wheel, shipped - in_wheel
    # The demo image and the TensorRT operator list are read at run time.
    assert "fpezoo/assets/astronaut.png" in names
    assert "fpezoo/deploy/tensorrt_onnx_operators.json" in names
