"""Inference speed of every model family on every CPU backend.

Usage::

    python benchmarks/inference_speed.py [--quick] [--models ...] [--backends ...]
                                         [--output inference_speed.json]

The same as ``fpezoo benchmark``; see :mod:`fpezoo.benchmarking` for what is
measured (latency at batch 1, throughput at batch 64, FLOPs per face, achieved
GFLOP/s beside NumPy's float32 GEMM rate, and the crop step).
"""

import sys

from fpezoo.benchmarking import main

if __name__ == "__main__":
    sys.exit(main())
