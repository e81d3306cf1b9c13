# Sourced by the GPU scripts (benchmarks/gpu_check.sh, models/gpu_sweep.sh) from the repository root:
# installs the wheels in .whl/ (segmentation-models-pytorch, monai: machines without them) into
# /tmp/site when that folder exists, and puts the repository on PYTHONPATH.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
