#!/usr/bin/env bash
# The README's main job on a fresh machine: set up, train the quick-start preset on procedural
# sprites for a few minutes on the CPU (or GPU if present), evaluate, and draw the slot picture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/quickstart}
STEPS=${STEPS:-1000}
start=$(date +%s)
slotlab train object-discovery --preset quickstart --out "$RUN" --steps "$STEPS"
slotlab eval "$RUN" --num 256
slotlab visualize "$RUN" --out "$RUN/slots.png" --num 8
echo "quickstart: ${STEPS} steps, $(( $(date +%s) - start )) s; metrics in $RUN/metrics.jsonl," \
     "picture in $RUN/slots.png"
