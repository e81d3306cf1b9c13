"""Scaling of one prediction over processes on CPU: 1 process x N threads vs N processes (torchrun)
x 1 thread each, same volume, same model; checks the labels are identical.

    python benchmarks/bench_scaling.py [--slices 16 --size 512 --procs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import machine, unet_resnet18, write_h5  # noqa: E402

from bone_avizo.io import load_volume  # noqa: E402
from bone_avizo.models import save_model  # noqa: E402


def run(cmd, env) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loaded = unet_resnet18()
        model = save_model(tmp / "m.safetensors", loaded.module, loaded.metadata)
        scan = tmp / "scan.h5"
        write_h5(scan, (args.slices, args.size, args.size))
        base = [sys.executable, "-m", "bone_avizo.standalone", "-q", "predict", "--model", str(model), "--input",
                str(scan), "--backend", args.backend, "--slab-slices", "2"]
        single = run(base + ["--output", str(tmp / "one.h5"), "--threads", str(args.procs)], env)
        ranked = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                      str(args.procs), "-m", "bone_avizo.standalone", "-q", "predict", *base[5:],
                      "--output", str(tmp / "many.h5"), "--threads", "1"], {**env, "OMP_NUM_THREADS": "1"})
        same = np.array_equal(load_volume(tmp / "one.h5").array, load_volume(tmp / "many.h5").array)
    voxels = args.slices * args.size * args.size
    print(json.dumps({"benchmark": "predict-scaling-cpu", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                      "shape": [args.slices, args.size, args.size], "backend": args.backend,
                      f"1 process x {args.procs} threads (s)": single,
                      f"{args.procs} processes x 1 thread, torchrun (s)": ranked,
                      "speedup": single / ranked, "labels_identical": bool(same),
                      "mvoxel_per_s": {"single": voxels / single / 1e6, "ranked": voxels / ranked / 1e6},
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
