#!/usr/bin/env bash
# GPU checks and figures for DLPred, run on a CUDA machine from the repository root.
# Needs segmentation-models-pytorch and monai wheels in .whl/ when they are not installed.
set -euo pipefail
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 benchmarks/gpu_agreement.py | tee "$OUT/agreement.json"
python3 benchmarks/bench_predict.py throughput --slices "${SLICES:-64}" --size 1024 --device cuda \
  --monai-slices 8 --monai-batch 16 --json "$OUT/throughput.json" 2>&1 | grep -v Warning
python3 benchmarks/bench_io.py --repeat 1 --json "$OUT/io.json"
python3 benchmarks/bench_fit.py pipeline --device cuda --steps 20 --json "$OUT/fit_pipeline.json" 2>&1 | grep -v "progress:"
