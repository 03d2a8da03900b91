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
# Optional: headless Chromium (Debian's package) for the report's browser tests
# (tests/report/test_browser.py skip cleanly without it); the package lists are updated if needed.
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
    || echo "[setup] chromium not installed: browser tests will skip"
fi
# The evaluation notebook (notebooks/eval.ipynb) runs with `jupyter nbconvert --execute`: nbconvert
# and jupyter-core come with the dev extras above; the notebook needs a "python3" kernel of this
# interpreter (ipykernel provides it; registered for the user only where Jupyter finds none).
if ! "$PY" -c "from jupyter_client.kernelspec import KernelSpecManager as K; K().get_kernel_spec('python3')" >/dev/null 2>&1; then
  "$PY" -m ipykernel install --user --name python3 >/dev/null
fi
if "$PY" -m jupyter nbconvert --version >/dev/null 2>&1; then
  echo "[setup] notebook: SLOTLAB_MODEL=RUN_DIR jupyter nbconvert --to html --execute notebooks/eval.ipynb --output-dir RUN_DIR"
fi
