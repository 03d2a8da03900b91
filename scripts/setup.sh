#!/usr/bin/env bash
# Set up slotlab on a fresh machine: the pinned CPU torch wheel first (when torch is missing),
# then the package in editable mode with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU wheel)"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev]"
"$PY" -c "import torch, slotlab; print(f'[setup] slotlab {slotlab.__version__}, torch {torch.__version__}')"
