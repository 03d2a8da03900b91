#!/usr/bin/env bash
# The test command (README and CI): ruff, then the default pytest suite (slow/gpu excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m ruff check .
"$PY" -m pytest -q "$@"
