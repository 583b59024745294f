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
def _module_imports():
    """``{module: fpezoo modules it imports}``, function-level imports included (a package's
    modules importing the package itself are left out: Python loads the package first)."""
    import ast

    modules = {}
    for path in ROOT.joinpath("fpezoo").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    imports = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fpezoo"):
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        imports[name] = {other for other in found & set(modules) if other != name and not name.startswith(other + ".")}
    return imports


def test_no_import_cycles():
    imports = _module_imports()
    assert "fpezoo.runtime" in imports["fpezoo.predictor"]  # the scan sees function-level imports too

    def reaches(start, target, seen):
        return any(other == target or (other not in seen and not seen.add(other) and reaches(other, target, seen))
                   for other in imports[start])

    cycles = sorted(name for name in imports if reaches(name, name, set()))
    assert cycles == [], f"modules on an import cycle: {cycles}"


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
