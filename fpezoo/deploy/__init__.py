"""Deployment: one convert command for every fpezoo model family.

* :mod:`fpezoo.deploy.convert`: :func:`convert` and the ``fpezoo convert`` /
  ``fpezoo-convert`` command (SavedModel, ONNX, LiteRT FP32/FP16/INT8, TensorRT,
  TF-TRT, Triton), with the calibration images shared by every INT8 path.
* :mod:`fpezoo.deploy.tensorrt`: TensorRT engines from ONNX (optional
  ``tensorrt`` extra), the INT8 entropy calibrator and its cache, the
  equivalent ``trtexec`` command, and the check of an ONNX graph against
  TensorRT's operator support list.
* :mod:`fpezoo.deploy.tftrt`: TF-TRT conversion of a SavedModel.
* :mod:`fpezoo.deploy.triton`: Triton Inference Server model repositories.

Every export carries the model's preprocessing and decoding layers: it takes a
batch of face crops ``images`` (N, H, W, C) of raw 0-255 values and returns
``keypoints`` (N, K, 2) in the crop's pixels and ``confidence`` (N, K).

The convert function is also ``fpezoo.convert``. This package imports nothing
itself, so ``fpezoo.deploy.convert`` is the module and TensorFlow loads only
when an export runs.
"""
