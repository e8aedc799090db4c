"""Packaging entry point for DSTE (Dynamic Sparse Tensor Encoding).

Install torch first and on its own (``pip install torch==2.13.0``): an
unpinned resolver pulls a multi-GB CUDA build. ``requirements.txt`` pins the
rest of the runtime; the ``dev`` extra adds the test and benchmark tools.
"""

from setuptools import find_packages, setup

RUNTIME = [
    "torch==2.13.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "ml_dtypes==0.6.0",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "pymetis==2025.2.2",
    "numba==0.68.0",
    "llvmlite==0.50.0",
]

DEV = [
    "pytest==9.2.0",
    "pytest-benchmark==5.3.1",
    "hypothesis==6.170.17",
    "pytest-xdist==3.8.0",
    "execnet==2.1.2",
]

setup(
    name="dste",
    version="0.1.0",
    description=(
        "Dynamic Sparse Tensor Encoding: blocked INT8/FP16/bitmap sparse tiles "
        "and NKI SpMM kernels for GNN inference on AWS NeuronCores"
    ),
    packages=find_packages(include=["dste", "dste.*"]),
    python_requires=">=3.11",
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={"console_scripts": ["dste=dste.cli:main"]},
)
