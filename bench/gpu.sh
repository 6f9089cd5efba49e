#!/usr/bin/env bash
# Everything that needs the GPU machine, in one call, so a rare device lease is spent measuring:
#   build    the fused op, and whether its CUDA kernel is registered (a GPU machine without nvcc
#            builds a CPU-only op: the CUDA tests would then skip and the benchmarks could not run);
#   tests    every CUDA test (-m "gpu or trt"), summarised as JSON;
#   kernels  bench/kernels.py --device cuda: the fused op against the plain-torch chain and the
#            reference, effective bandwidth against a device copy, float32 with the encoder's
#            frames/s per fidelity, then bfloat16 and float16;
#   memory   bench/memory.py --device cuda: peak training memory per fidelity against the planner;
#   runtime  bench/runtime.py on all the machine's CPU cores: where one stream leaves cores
#            idle, what --parallel gains (with the demo's trained bundle where .gpu-demo holds a
#            copy of lofi-demo-out's bundle/ and runs/head/checkpoint.pt, else random weights);
#   runtime-2cores  the same on two of its cores (taskset), beside the 2-core dev machine;
#   runtime-sweep   4 five-minute streams at once under other decoder threads and encoder
#            calls than the plan's, each beside the same 4 one after another;
#   runtime-scaling where 4 streams at once stop scaling: decoding alone, the main thread, the
#            GIL's switch interval.
# Run from anywhere on the GPU machine:
#   bash bench/gpu.sh [all | PART...]     (default all; parts fit shorter leases)
# JSON lands in bench/results/ (*-cuda*.json, runtime-gpu-machine-*.json) and, after every step,
# in $OUT/gpu-results.tgz when OUT is set; gpu-summary-PARTS.json records the device, each step's
# exit status and seconds. Exit status 1 if any step failed.
# The GPU image has torch but no PyAV: wheels downloaded here into .gpu-wheels are installed
# (av and setuptools, for building this package offline: `pip download av setuptools
# --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 --no-deps
# -d .gpu-wheels`, 36 MB), and PyNvVideoCodec for the NVDEC tests from .gpu-nvdec (the same
# command, 27 MB). A call carries 64 MiB at most: .gpu-nvdec for tests, .gpu-demo for runtime.
set -uo pipefail
cd "$(dirname "$0")/.."
all_parts=(tests kernels memory runtime runtime-2cores runtime-sweep runtime-scaling)
parts=("${@:-all}")
[ "${parts[*]}" = all ] && parts=("${all_parts[@]}")
for p in "${parts[@]}"; do
  if [[ " ${all_parts[*]} " != *" $p "* ]]; then
    echo "usage: bash bench/gpu.sh [all | ${all_parts[*]}]" >&2
    exit 2
  fi
done
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }
results=bench/results
mkdir -p "$results"
wheels=$(ls .gpu-wheels/*.whl .gpu-nvdec/*.whl 2>/dev/null)
[ -z "$wheels" ] || python3 -m pip install -q --no-index --no-deps $wheels
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
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
  pack # what a step measured comes back even if a later one runs out of time
}
pack() { # the results so far into $OUT, where the device tool brings files back from
  [ -n "${OUT:-}" ] || return 0
  local files
  files=$(cd "$results" && ls -- *-cuda* runtime-gpu-machine-* 2>/dev/null)
  [ -z "$files" ] || (cd "$results" && tar czf "$OUT/gpu-results.tgz" $files)
}

wants tests || wants kernels || wants memory && step build python3 - <<'EOF'
import sys, torch
from lofi.cpp_ext.build import cuda_home
from lofi.cpp_ext.ops import has_kernel
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, nvcc at {cuda_home()}")
ok = has_kernel("cuda")
print("fused op: CUDA kernel", "registered" if ok else "MISSING (the reference would run instead)")
sys.exit(0 if ok else 1)
EOF

if wants tests; then
  step tests python3 -m pytest -q -rs -m "gpu or trt" --junitxml="$results/tests-cuda.xml" tests
  python3 - "$results/tests-cuda.xml" "$results/tests-cuda.json" <<'EOF'
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

if wants kernels; then
  step kernels-fp32 python3 bench/kernels.py --device cuda --repeat 20 --encoder \
    --out "$results/kernels-cuda.json"
  step kernels-bf16 python3 bench/kernels.py --device cuda --repeat 20 --dtype bfloat16 \
    --out "$results/kernels-cuda-bf16.json"
  step kernels-fp16 python3 bench/kernels.py --device cuda --repeat 20 --dtype float16 \
    --out "$results/kernels-cuda-fp16.json"
fi

if wants memory; then
  step memory python3 bench/memory.py --device cuda --out "$results/memory-cuda.json"
fi

demo=()
[ -f .gpu-demo/bundle/manifest.json ] && demo=(--demo .gpu-demo)
if wants runtime; then
  step runtime-all-cores python3 bench/runtime.py "${demo[@]}" --work /tmp/bench-runtime \
    --out "$results/runtime-gpu-machine-$(nproc)c.json"
fi
if wants runtime-sweep; then
  step runtime-sweep python3 bench/runtime.py "${demo[@]}" --sweep --minutes 5 \
    --work /tmp/bench-runtime --out "$results/runtime-gpu-machine-sweep-$(nproc)c.json"
fi
if wants runtime-scaling; then
  step runtime-scaling python3 bench/runtime.py "${demo[@]}" --scaling --minutes 5 \
    --work /tmp/bench-runtime --out "$results/runtime-gpu-machine-scaling-$(nproc)c.json"
fi
if wants runtime-2cores; then
  step runtime-2-cores taskset -c 0,1 python3 bench/runtime.py "${demo[@]}" \
    --work /tmp/bench-runtime --out "$results/runtime-gpu-machine-2c.json"
fi

summary="$results/gpu-summary-$(IFS=-; echo "${parts[*]}")-cuda.json"
python3 - "$summary" "${parts[*]}" "${steps[@]}" <<'EOF'
import json, sys, torch
rows = [dict(zip(("step", "exit", "seconds"), s.split())) for s in sys.argv[3:]]
summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "torch": torch.__version__, "cuda": torch.version.cuda, "part": sys.argv[2],
           "steps": [{**r, "exit": int(r["exit"]), "seconds": int(r["seconds"])} for r in rows]}
json.dump(summary, open(sys.argv[1], "w"), indent=1)
for r in summary["steps"]:
    print(f"{r['step']:>14}: exit {r['exit']}, {r['seconds']} s")
EOF
pack
exit "$status"
