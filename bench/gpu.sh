#!/usr/bin/env bash
# Everything that needs a GPU, in one call, so a rare device lease is spent measuring:
# the CUDA tests, then every GPU benchmark. Run from the repository root on the GPU machine:
#   bash bench/gpu.sh            (results land in bench/results/*-cuda.json and $OUT if set)
# The GPU image has torch but no PyAV: wheels downloaded here into .gpu-wheels are installed.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
  pip install -q --no-index .gpu-wheels/*.whl
fi
pip install -q --no-deps -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
status=0
python -m pytest -q -m gpu tests || status=1
python bench/kernels.py --device cuda --out bench/results/kernels-cuda.json || status=1
python bench/memory.py --device cuda --out bench/results/memory-cuda.json || status=1
if [ -n "${OUT:-}" ]; then
  cp bench/results/*-cuda.json "$OUT"/ 2>/dev/null || true
fi
exit "$status"
