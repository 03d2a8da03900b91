#!/usr/bin/env bash
# Every check that needs a GPU, as one script for a lent CUDA machine (results under $OUT):
# the CUDA tests (official-fixture equivalence with TF32 off, fast paths incl. CUDA graphs,
# metrics on the GPU), the throughput table (with the projected CLEVR6 schedule), the top
# kernels of the official object-discovery model in its fastest mode, and a one-process DDP
# run of the quick-start preset under torchrun.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/slotlab-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_gpu.txt"
python3 benchmarks/throughput.py --device cuda --configs od-official sp-official \
    --json "$OUT/throughput_cuda.json" 2>&1 | tee "$OUT/throughput_cuda.txt"
python3 benchmarks/throughput.py --device cuda --profile od-official bf16-cl-pad-compile \
    2>&1 | grep -v USDT | tee "$OUT/profile_od_official.txt"
torchrun --standalone --nproc_per_node 1 -m slotlab.cli train object-discovery \
    --preset quickstart --out "$OUT/ddp1" --steps 300 --bf16 --no-progress 2>&1 \
    | tail -5 | tee "$OUT/ddp1.txt"
grep '"images_per_s"' "$OUT/ddp1/metrics.jsonl" | tail -1 | tee -a "$OUT/ddp1.txt"
