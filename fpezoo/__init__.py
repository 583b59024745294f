"""fpezoo: facial landmark estimation models for Keras 3 / TensorFlow.

Builders follow ``keras.applications``::

    import fpezoo
    model = fpezoo.FPENet(num_keypoints=68, weights=None)
    keypoints, confidence = model(face_crops)

Registered weights carry their architecture (``fpezoo.list_pretrained()`` lists
them)::

    model = fpezoo.FPENet(weights="fpenet68_w32")                   # as registered
    eighty = fpezoo.FPENet(num_keypoints=80, weights="fpenet68_w32")  # new 80-point head

Attributes are imported on first use, so ``import fpezoo`` stays cheap and an
optional dependency is only needed by the feature that uses it.
"""

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "FPENet": "fpezoo.models.fpenet",
    "RetailLandmarks5": "fpezoo.models.retail",
    "import_openvino_retail": "fpezoo.models.retail",
    "FAN": "fpezoo.models.fan",
    "LandmarkModel": "fpezoo.models.common",
    "LandmarkDetector": "fpezoo.predictor",
    "train": "fpezoo.training",
    "evaluate": "fpezoo.evaluation",
    "convert": "fpezoo.deploy.convert",
    "model_card": "fpezoo.weights",
    "list_pretrained": "fpezoo.weights",
}
_SUBMODULES = (
    "schemes", "coordinates", "layers", "losses", "metrics", "models", "weights",
    "data", "training", "evaluation", "deploy", "detection", "predictor", "geometry", "runtime",
)

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"fpezoo.{name}")
    raise AttributeError(f"module 'fpezoo' has no attribute {name!r}")


def __dir__():
    return __all__
