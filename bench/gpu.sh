#!/usr/bin/env bash
# Everything that needs a GPU, in one call, so a rare device lease is spent measuring:
#   1. build the fused op and say whether its CUDA kernel is registered (a GPU machine without
#      nvcc builds a CPU-only op: the CUDA tests would then skip and the benchmarks could not run);
#   2. every CUDA test (-m "gpu or trt"), summarised as JSON;
#   3. bench/kernels.py --device cuda: the fused op against the plain-torch chain and the
#      reference, effective bandwidth against a device copy, float32 with the encoder's frames/s
#      per fidelity, then bfloat16 and float16;
#   4. bench/memory.py --device cuda: peak training memory per fidelity against the planner.
# Run from anywhere on the GPU machine:
#   bash bench/gpu.sh [all|tests|kernels|memory]    (default all; parts fit shorter leases)
# JSON lands in bench/results/*-cuda*.json, also copied to $OUT when set; gpu-summary-cuda.json
# records the device, each step's exit status and seconds. Exit status 1 if any step failed.
# The GPU image has torch but no PyAV: wheels downloaded here into .gpu-wheels are installed
# (av, and PyNvVideoCodec for the NVDEC test: `pip download av PyNvVideoCodec --python-version
# 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 --no-deps -d .gpu-wheels`, ~61 MB).
set -uo pipefail
cd "$(dirname "$0")/.."
part="${1:-all}"
case "$part" in all | tests | kernels | memory) ;; *)
  echo "usage: bash bench/gpu.sh [all|tests|kernels|memory]" >&2
  exit 2
  ;;
esac
results=bench/results
mkdir -p "$results"
if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
  pip install -q --no-index .gpu-wheels/*.whl
fi
pip install -q --no-deps -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

steps=()
status=0
step() { # step NAME COMMAND...: run, time and record one step
  local name=$1 start rc
  shift
  echo "== $name: $*"
  start=$(date +%s)
  "$@"
  rc=$?
  steps+=("$name $rc $(($(date +%s) - start))")
  [ "$rc" -eq 0 ] || status=1
}

step build python - <<'EOF'
import sys, torch
from lofi.cpp_ext.build import cuda_home
from lofi.cpp_ext.ops import has_kernel
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, nvcc at {cuda_home()}")
ok = has_kernel("cuda")
print("fused op: CUDA kernel", "registered" if ok else "MISSING (the reference would run instead)")
sys.exit(0 if ok else 1)
EOF

if [ "$part" = all ] || [ "$part" = tests ]; then
  step tests python -m pytest -q -rs -m "gpu or trt" --junitxml="$results/tests-cuda.xml" tests
  python - "$results/tests-cuda.xml" "$results/tests-cuda.json" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
cases = []
for c in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    outcome = next((t.tag for t in c if t.tag in ("failure", "error", "skipped")), "passed")
    detail = next((t.get("message", "") for t in c if t.tag in ("failure", "error", "skipped")), "")
    cases.append({"test": f"{c.get('classname')}::{c.get('name')}", "outcome": outcome,
                  "seconds": float(c.get("time", 0)), "detail": detail.splitlines()[0] if detail else ""})
counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
json.dump({"counts": counts, "cases": cases}, open(sys.argv[2], "w"), indent=1)
print("tests:", counts)
EOF
fi

if [ "$part" = all ] || [ "$part" = kernels ]; then
  step kernels-fp32 python bench/kernels.py --device cuda --repeat 20 --encoder \
    --out "$results/kernels-cuda.json"
  step kernels-bf16 python bench/kernels.py --device cuda --repeat 20 --dtype bfloat16 \
    --out "$results/kernels-cuda-bf16.json"
  step kernels-fp16 python bench/kernels.py --device cuda --repeat 20 --dtype float16 \
    --out "$results/kernels-cuda-fp16.json"
fi

if [ "$part" = all ] || [ "$part" = memory ]; then
  step memory python bench/memory.py --device cuda --out "$results/memory-cuda.json"
fi

python - "$results/gpu-summary-cuda.json" "$part" "${steps[@]}" <<'EOF'
import json, sys, torch
rows = [dict(zip(("step", "exit", "seconds"), s.split())) for s in sys.argv[3:]]
summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "torch": torch.__version__, "cuda": torch.version.cuda, "part": sys.argv[2],
           "steps": [{**r, "exit": int(r["exit"]), "seconds": int(r["seconds"])} for r in rows]}
json.dump(summary, open(sys.argv[1], "w"), indent=1)
for r in summary["steps"]:
    print(f"{r['step']:>14}: exit {r['exit']}, {r['seconds']} s")
EOF
if [ -n "${OUT:-}" ]; then
  cp "$results"/*-cuda*.json "$results"/tests-cuda.xml "$OUT"/ 2>/dev/null || true
fi
exit "$status"
