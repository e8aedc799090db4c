#!/usr/bin/env bash
# Sets up (if needed) and runs the default test suite, then the tests that spawn process groups
# (`multiprocess`); slow tests stay excluded. pytest.ini runs one pytest-xdist worker per core, each held
# to one BLAS/torch thread by tests/conftest.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -q "$@"
python -m pytest -m "multiprocess and not slow" -q "$@"
