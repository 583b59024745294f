"""TF-TRT: a SavedModel with TensorRT-optimised segments (``TrtGraphConverterV2``).

``fpezoo convert MODEL --to tftrt --precision fp16 --input-size 80x80 --output out/``
exports the SavedModel and converts it with TensorFlow's TensorRT integration
(FP32, FP16, or INT8 calibrated on face crops through a calibration input
function). It needs a TensorFlow built with TensorRT and an NVIDIA GPU; the
PyPI TensorFlow wheels (2.21 included) are not built with TensorRT, and there
:func:`check_available` raises a clear error pointing to the ONNX -> TensorRT path
(``--to tensorrt``), which NVIDIA supports now.

**Not yet run on a GPU**: this machine has neither a GPU nor a TensorRT build
of TensorFlow; only the availability check is tested here.
"""

import os

PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


def check_available():
    """Raises ``RuntimeError`` when this TensorFlow cannot run TF-TRT."""
    import tensorflow as tf

    if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
        raise RuntimeError(
            f"TF-TRT needs TensorFlow built with TensorRT; this TensorFlow {tf.__version__} is "
            "not (tf.sysconfig.get_build_info()['is_tensorrt_build'] is False). Use the ONNX "
            "path instead: `fpezoo convert MODEL --to tensorrt` builds a TensorRT engine from "
            f"the ONNX export. Received: tensorflow={tf.__version__}"
        )


def convert_saved_model(saved_model_dir, output_dir, precision="fp32", calibration_images=None,
                        calibration_batch_size=1):
    """Converts a SavedModel with ``TrtGraphConverterV2`` and saves the result.

    **Not yet run on a GPU.**

    Args:
        saved_model_dir: the SavedModel written by
            :func:`fpezoo.deploy.convert.export_saved_model`.
        output_dir: where to save the TF-TRT SavedModel.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        calibration_images: a :class:`fpezoo.deploy.convert.CalibrationImages`
            (INT8 only): its batches feed the calibration input function.
        calibration_batch_size: batch of the calibration runs.

    Raises:
        RuntimeError: TensorFlow is not built with TensorRT.
        ValueError: INT8 without calibration images.
    """
    check_available()
    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert

    if precision == "int8" and calibration_images is None:
        raise ValueError("TF-TRT INT8 needs calibration images. Received: calibration=None")
    converter = trt_convert.TrtGraphConverterV2(
        input_saved_model_dir=os.fspath(saved_model_dir),
        precision_mode=getattr(trt_convert.TrtPrecisionMode, PRECISION_MODES[precision]),
        use_calibration=precision == "int8",
    )
    if precision == "int8":
        def calibration_input_fn():
            for batch in calibration_images.batches(calibration_batch_size):
                yield (tf.constant(batch),)

        converter.convert(calibration_input_fn=calibration_input_fn)
    else:
        converter.convert()
    converter.save(os.fspath(output_dir))
