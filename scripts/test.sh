#!/usr/bin/env bash
# Sets up (if needed) and runs the default test suite (slow tests excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -m "not slow" -q "$@"
