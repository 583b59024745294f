"""Shared test fixtures.

Real data is read from ``$FPEZOO_DATA`` or ``../shared/data`` next to the project;
tests that need it skip with a clear reason when it is absent.
"""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The shared data folder (``fpezoo.evaluation.data_dir``), or None when it is absent."""
    from fpezoo.evaluation import data_dir

    path = data_dir()
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data():
    """Path to ``../shared/data``; skips the test when the data is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real face data not found: set FPEZOO_DATA or place the shared data "
            f"at {PROJECT_ROOT.parent / 'shared' / 'data'}"
        )
    return path


@pytest.fixture(autouse=True)
def _clear_keras_session():
    import keras

    yield
    keras.backend.clear_session()
