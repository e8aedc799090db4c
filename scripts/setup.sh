#!/usr/bin/env bash
# Installs DSTE and its pinned dependencies into the active Python environment.
# torch goes first and alone: an unpinned resolver would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -r requirements-dev.txt
python -m pip install --quiet --no-deps -e .
# the cpu backend's compiled CSR product and the cpu forward pass's row quantization (Numba): compiled here once,
# cached beside their modules
python -c "from dste.bindings.csr_kernel import compile_products as c; print(f'dste: CSR product ready in {c():.1f} s')"
python -c "from dste.gnn.execution import compile_quantization_passes as c; print(f'dste: row quantization passes ready in {c():.1f} s')"
python -c "from dste.format.rcm import compile_orders as c; print(f'dste: RCM order ready in {c():.1f} s')"
