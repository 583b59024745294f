"""Function-preserving growth (Net2Net): fpezoo.models.widen widens, and
fpezoo.models.fpenet.copy_to_full_resolution_heatmaps adds FPENet's last decoder block."""

import keras
import numpy as np
import pytest

import fpezoo
from fpezoo.models.fpenet import copy_to_full_resolution_heatmaps
from fpezoo.models.widen import widen_weights


def _random_weights(model, seed=0):
    """He-normal kernels and small random biases, so heatmaps vary across the image."""
    rng = np.random.default_rng(seed)
    arrays = []
    for array in model.get_weights():
        scale = np.sqrt(2.0 / np.prod(array.shape[:-1])) if array.ndim > 1 else 0.1
        arrays.append(rng.normal(0.0, scale, array.shape).astype("float32"))
    model.set_weights(arrays)
    return model


def _heatmaps(model):
    return keras.Model(model.inputs, model.get_layer("keypoint_head").output)


@pytest.mark.parametrize("options", [
    {"heatmap_size": 40},
    {"variant": "release"},
    {"include_preprocessing": True, "input_shape": (96, 96, 3)},
], ids=["base_heatmap40", "release", "with_preprocessing"])
def test_wide_fpenet_computes_what_the_narrow_one_computes(options):
    narrow = _random_weights(fpezoo.FPENet(num_keypoints=5, width=4, **options))
    wide = fpezoo.FPENet(num_keypoints=5, width=7, **options)
    widen_weights(narrow, wide)
    images = np.random.default_rng(1).uniform(0, 255, (2,) + tuple(narrow.input.shape[1:]))
    expected = _heatmaps(narrow).predict_on_batch(images)
    spread = expected.std(axis=(1, 2)).min()
    assert spread > 0.1, "the check needs heatmaps that vary across the image"
    np.testing.assert_allclose(_heatmaps(wide).predict_on_batch(images), expected,
                               rtol=1e-4, atol=1e-4 * spread)
    for ours, theirs in zip(wide.predict_on_batch(images), narrow.predict_on_batch(images)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_copies_of_a_channel_get_different_weights_downstream():
    narrow = _random_weights(fpezoo.FPENet(num_keypoints=3, width=4, heatmap_size=40))
    wide = fpezoo.FPENet(num_keypoints=3, width=8, heatmap_size=40)
    widen_weights(narrow, wide, seed=3)
    kernel, bias = wide.get_layer("trunk_conv1").get_weights()
    narrow_kernel, narrow_bias = narrow.get_layer("trunk_conv1").get_weights()
    # outputs 0-3 copy the narrow outputs, 4-7 copy them again ...
    np.testing.assert_array_equal(bias, np.tile(narrow_bias, 2))
    # ... and the two copies of input channel c share its weights unevenly
    np.testing.assert_allclose(kernel[:, :, :4, :4] + kernel[:, :, 4:, :4], narrow_kernel, rtol=1e-5,
                               atol=1e-7)
    assert not np.allclose(kernel[:, :, :4, :4], kernel[:, :, 4:, :4])


def test_widening_refuses_models_it_cannot_widen():
    fpenet = fpezoo.FPENet(num_keypoints=5, width=8, heatmap_size=40)
    with pytest.raises(ValueError, match="narrower in the wide model.*narrow channels=8, wide channels=4"):
        widen_weights(fpenet, fpezoo.FPENet(num_keypoints=5, width=4, heatmap_size=40))
    with pytest.raises(ValueError, match="outputs of the same shapes"):
        widen_weights(fpenet, fpezoo.FPENet(num_keypoints=6, width=8, heatmap_size=40))
    with pytest.raises(ValueError, match="same layers in the same order"):
        widen_weights(fpenet, fpezoo.FPENet(num_keypoints=5, width=8, variant="public", heatmap_size=40))
    retail = fpezoo.RetailLandmarks5()
    with pytest.raises(ValueError, match="of type BatchNormalization cannot be widened"):
        widen_weights(retail, fpezoo.RetailLandmarks5())


@pytest.mark.parametrize("variant", ["base", "release", "base_5x5"])
def test_full_resolution_fpenet_starts_with_the_half_resolution_keypoints(variant):
    # a sharp soft-argmax (beta 1, not TAO's 0.01) puts the random heatmaps' points off the centre
    half = _random_weights(fpezoo.FPENet(num_keypoints=5, width=4, variant=variant, heatmap_size=40, beta=1.0))
    full = fpezoo.FPENet(num_keypoints=5, width=4, variant=variant, beta=1.0)
    copy_to_full_resolution_heatmaps(half, full)
    images = np.random.default_rng(1).uniform(0, 255, (2, 80, 80, 1))
    half_keypoints, _ = half.predict_on_batch(images)
    assert half_keypoints.std() > 3.0, "the check needs keypoints away from the image centre"
    full_keypoints, _ = full.predict_on_batch(images)
    np.testing.assert_allclose(full_keypoints, half_keypoints, atol=1e-3)
    # the full-resolution skip starts unused, with weights that training can change
    kernel = full.get_layer("decoder4_conv1").get_weights()[0]
    assert not kernel[:, :, 4:, :].any() and full.get_layer("decoder4_conv1").trainable


def test_full_resolution_copy_refuses_other_models():
    half = fpezoo.FPENet(num_keypoints=5, width=4, heatmap_size=40)
    with pytest.raises(ValueError, match="differ in more than the heatmap size.*Received: layer='encoder1_conv'"):
        copy_to_full_resolution_heatmaps(half, fpezoo.FPENet(num_keypoints=5, width=8))
    with pytest.raises(ValueError, match="must add exactly decoder block 4.*Received: extra layers=\\[\\]"):
        copy_to_full_resolution_heatmaps(half, fpezoo.FPENet(num_keypoints=5, width=4, heatmap_size=40))
