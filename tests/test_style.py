"""The repository's lint check (``ruff check``, configured in ``ruff.toml``) runs with the tests."""

import pathlib
import shutil
import subprocess

import pytest

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install '.[test]' installs it)")
    result = subprocess.run([ruff, "check", "--no-cache", str(PROJECT_ROOT)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
