"""Robust, distribution-shift aware SAR-optical fusion for BigEarthNet-MM (Keras 3 / TensorFlow)."""
from setuptools import find_packages, setup

# TensorFlow comes through an extra so CPU-only machines get the small `tensorflow-cpu` wheel and
# GPU machines the CUDA build; requiring plain `tensorflow` here would pull it in next to either.
TENSORFLOW = {
    "cpu": ["tensorflow-cpu>=2.20,<2.22"],
    "gpu": ["tensorflow[and-cuda]>=2.20,<2.22"],
    "tf": ["tensorflow>=2.20,<2.22"],
}

setup(
    name="sar-optical-ood-fusion",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tf_fusion", "tf_fusion.*", "tfrecords_builder", "tfrecords_builder.*"]),
    install_requires=[
        "keras>=3.10,<4",
        "keras-tuner>=1.4.7,<1.5",
        "tensorboard>=2.20,<2.22",
        "rasterio>=1.4,<1.5",
        "numpy>=1.26,<3",
        "pyarrow>=14",
        "google-crc32c>=1.5,<2",
        "tqdm>=4.66",
        "pyyaml>=6",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
    ],
    extras_require={
        **TENSORFLOW,
        # pytest 9 keeps a node's id where pytest-xdist 3.8's --dist loadgroup cannot add the
        # group to it, so xdist_group is silently ignored (the smoke run would train per worker)
        "dev": ["pytest>=8,<9", "pytest-xdist>=3", "pandas>=2"],
        # gRPC client and TF Serving warm-up requests (tf_fusion.serving / export); optional because
        # tensorflow-serving-api requires full `tensorflow`, which would sit beside tensorflow-cpu
        "serving": ["tensorflow-serving-api>=2.20,<2.22", "grpcio>=1.60"],
        # `python -m tf_fusion.map --runner ...`: the map as an Apache Beam pipeline (RunInference);
        # pip resolves apache-beam 2.78 beside tensorflow-cpu 2.21 with protobuf 6 (Beam caps it below 7).
        # Beam's TensorFlow handler imports tensorflow-hub, whose tf-keras requires the full `tensorflow`
        # wheel: on CPU add `pip install --no-deps tensorflow-hub tf-keras` (docs/map.md)
        "scale": ["apache-beam>=2.70,<3"],
    },
    entry_points={
        "console_scripts": [
            "tfrecords-builder=tfrecords_builder.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: GIS",
    ],
)
