#!/usr/bin/env bash
# GPU checks and figures for DLPred, run on a CUDA machine from the repository root (about 4 minutes
# on one H200). Needs segmentation-models-pytorch and monai wheels in .whl/ when they are not installed.
set -euo pipefail
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
# every speed target of DLPred in one run: network bound, engine in memory and file to file, MONAI,
# the CLI on a 1024 x 2048^2 uint16 scan (wall time, peak RSS), fp16 vs fp32 label agreement
python3 benchmarks/bench_gpu.py --device cuda --json "$OUT/gpu.json" 2>&1 | grep -v Warning
