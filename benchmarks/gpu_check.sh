#!/usr/bin/env bash
# GPU checks and figures, run on a CUDA machine from the repository root (bench_gpu.py about 4 minutes
# on one H200; bench_io.py and bench_fit.py pipeline not yet timed there, estimated 1-2 minutes).
# Needs segmentation-models-pytorch and monai wheels in .whl/ when they are not installed.
set -euo pipefail
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 benchmarks/gpu_agreement.py | tee "$OUT/agreement.json"
# every speed target of DLPred in one run: network bound, engine in memory and file to file, MONAI,
# the CLI on a 1024 x 2048^2 uint16 scan (wall time, peak RSS), fp16 vs fp32 label agreement
python3 benchmarks/bench_gpu.py --device cuda --json "$OUT/gpu.json" 2>&1 | grep -v Warning
# volume I/O on all host cores: plain h5py/tifffile/zarr vs the threaded sources and writers
python3 benchmarks/bench_io.py --repeat 1 --json "$OUT/io.json"
# DLFit: training steps/s vs pre-made batches on the GPU at the fit defaults (AMP, default workers)
python3 benchmarks/bench_fit.py pipeline --device cuda --steps 10 --json "$OUT/fit_pipeline.json" 2>&1 | grep -v "progress:"
