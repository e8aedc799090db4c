#!/usr/bin/env bash
# Sets up (if needed) and runs the default test suite: one pytest-xdist worker per core (pytest.ini), each held to
# one BLAS/torch thread by tests/conftest.py. The whole-job and long training tests (`integration`), the tests that
# spawn process groups (`multiprocess`), the full fuzz counts (DSTE_FUZZ=thorough) and the slow tests are left to CI
# (.ci/run) or to a run that asks for them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -q "$@"
