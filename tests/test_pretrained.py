"""The pretrained weights of ``weights/``: they load by name, match their checksum,
and give sensible landmarks on real faces (AFLW2000-3D, each at its registered crop)."""

import json

import numpy as np
import pytest

import fpezoo
from fpezoo import evaluation, weights

# name -> (benchmark of ``fpezoo.evaluate``, bound on the mean of its primary
# NME over the first NUM_FACES faces). AFLW2000-3D: NME over sqrt(w * h) of the
# fitted landmark box (3DDFA protocol); MTFL: NME over the eye-centre distance.
# Each bound is the measurement on those faces (see the model card) plus a margin.
PRETRAINED = {
    "fpenet68_w32": ("aflw2000-3d", 0.05),
    "fpenet68_w64": ("aflw2000-3d", 0.045),
    "fan68_1x128": ("aflw2000-3d", 0.05),
    "fan68_3d_1x128": ("aflw2000-3d", 0.05),
    "fpenet80_w32": ("aflw2000-3d", 0.05),
}
NUM_FACES = 50
# 3D models: name -> bound on the mean 3D NME (fpezoo.evaluation.nme_3d, fitted (x, y, z))
# over the first NUM_FACES AFLW2000-3D faces, the measurement (model card) plus a margin.
PRETRAINED_3D = {
    "fan68_3d_1x128": 0.06,
}
# The registered files stay small; the 3D FAN (a 2D FAN and its depth network, 1.2 M
# parameters) is the largest at 5.3 MiB.
MAX_WEIGHTS_BYTES = 6 * 2**20


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_registered_with_card_and_checksum(name):
    entry = weights.registry()[name]
    path = weights.weights_dir() / entry["file"]
    assert weights.sha256(path) == entry["sha256"]
    card = weights.model_card(name)
    assert entry["sha256"] in card, "the model card states the file's sha256"
    assert path.stat().st_size < MAX_WEIGHTS_BYTES, "registered weights stay small"


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_loads_by_name_into_every_layer(name):
    entry = weights.registry()[name]
    model = getattr(fpezoo, entry["builder"])(weights=name, **entry["config"])
    stored, _ = weights.read_layer_weights(weights.weights_dir() / entry["file"])
    layers = [layer for layer in model.layers if layer.weights]
    assert sorted(stored) == sorted(layer.name for layer in layers)
    for layer in layers:
        for loaded, saved in zip(layer.get_weights(), stored[layer.name]):
            np.testing.assert_array_equal(loaded, saved)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="fpenet68_w32"):
        fpezoo.FPENet(weights="fpenet68_no_such_width")


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_landmarks_on_real_faces(name, shared_data):
    benchmark, bound = PRETRAINED[name]
    data = shared_data / ("aflw2000-3d" if benchmark == "aflw2000-3d" else "mtfl/test.txt")
    results = evaluation.evaluate(name, benchmark, data=data, limit=NUM_FACES, progress=False)
    errors = np.asarray(results["per_face"][results["primary"]])
    assert errors.shape == (NUM_FACES,) and np.isfinite(errors).all()
    assert errors.mean() < bound, json.dumps({"mean_nme": errors.mean(), "bound": bound})


@pytest.mark.parametrize("name", sorted(PRETRAINED_3D))
def test_depth_on_real_faces(name, shared_data):
    results = evaluation.evaluate(name, "aflw2000-3d", data=shared_data / "aflw2000-3d", limit=NUM_FACES,
                                  progress=False)
    errors = np.asarray(results["per_face"]["nme_3d"])
    assert errors.shape == (NUM_FACES,) and np.isfinite(errors).all()
    assert errors.mean() < PRETRAINED_3D[name], json.dumps({"mean_nme_3d": errors.mean()})
    assert fpezoo.FAN(dimensions=3, weights=name).outputs[0].shape[-1] == 3
