#!/usr/bin/env bash
# One device session, every GPU figure of issue 13 side by side (docs/PERFORMANCE.md "Targets").
# Run from the repository root on the GPU machine:  bash bench/gpu_check.sh [OUT_DIR]
# Needs torch and open-clip-torch (carry its wheel); no MLflow, Optuna or PyAV.
set -uo pipefail
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# 1. paper step at the MSR-VTT shape: reference (eager) and fast (eager, then compiled)
timeout 240 $py bench/bench_train.py --only paper --numerics reference fast --json > "$out/paper_eager.json" 2> "$out/paper_eager.log"
timeout 300 $py bench/bench_train.py --only paper --numerics fast --compile --json > "$out/paper_compiled.json" 2> "$out/paper_compiled.log"
# 2. 1k-A evaluation and a frozen epoch on MSR-VTT-sized features (x 5 epochs x 50 trials = the search)
timeout 120 $py bench/bench_train.py --only eval frozen --json > "$out/eval_frozen.json" 2> "$out/eval_frozen.log"
# 3. a whole epoch from a 224-px cache on disk, with evaluation, against the step-only rate
timeout 240 $py bench/bench_epoch.py --variant meanP --numerics fast --json > "$out/epoch.json" 2> "$out/epoch.log"
tail -n 40 "$out"/*.log
