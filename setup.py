"""Packaging for fpezoo.

The top-level ``weights/`` folder is shipped inside the wheel as the package
``fpezoo._weights`` (a wheel only installs files that live inside packages), so
``fpezoo.FPENet(weights="<name>")`` works after ``pip install .``. The data
folder ``fpezoo/assets`` (the demo image) is listed as a package of its own.
"""

from setuptools import find_packages, setup

EXPORT = ["tf2onnx>=1.17", "onnx", "onnxruntime", "ai-edge-litert"]
DETECT = ["mtcnn>=1.0", "scikit-image"]
TEST = ["pytest", "hypothesis", "pytest-timeout", "ruff"]

setup(
    name="fpezoo",
    version="0.1.0",
    description="Facial landmark estimation model zoo for Keras 3 / TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fpezoo", "fpezoo.*"])
    + ["fpezoo.assets", "fpezoo._weights"],
    package_dir={"fpezoo._weights": "weights"},
    package_data={
        "fpezoo._weights": ["*.weights.h5", "*.json", "*.md", "*.png"],
        "fpezoo.assets": ["*"],
        "fpezoo.deploy": ["*.json"],
    },
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.12,<3.16",  # fpezoo.training patches keras.src (multi-worker fit)
        "numpy>=1.26",
        "h5py",
        "opencv-python-headless",
        "albumentations==2.0.8",
        "pillow",
        "tqdm",
        "matplotlib",
        "tensorboard>=2.20,<2.22",
    ],
    extras_require={
        "export": EXPORT,
        "detect": DETECT,
        "openvino": ["openvino"],
        "tensorrt": ["tensorrt", "cuda-python"],
        "test": TEST,
        "all": EXPORT + DETECT + ["openvino"],
    },
    entry_points={
        "console_scripts": [
            "fpezoo=fpezoo.cli:main",
            "fpezoo-convert=fpezoo.deploy.convert:main",
        ]
    },
)
