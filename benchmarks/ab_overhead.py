"""The engine of two checkouts side by side on the overhead benchmark's TIFF -> TIFF case.

    python benchmarks/ab_overhead.py /path/to/checkout-a /path/to/checkout-b [--runs 30] [--classes 3]

Each checkout runs in its own worker process (its package first on PYTHONPATH; the near-free network
and the scan come from this script's bench_predict.py, so both run the same network); the workers take
turns, one call each, and a numpy floor (read the TIFF, one pointwise op, write uint8) runs before each
round. Interleaved runs in separate processes keep this machine's drift and each process's history
(earlier allocations, other libraries' threads) out of the comparison. Prints one JSON line: the best
and median seconds of each checkout and the ratio to the best floor.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
import bench_predict as bp
from bone_avizo.config import PredictConfig
from bone_avizo.io import open_volume
from bone_avizo.predict import predict_volume
loaded, config, tmp = bp.pointwise_model({classes}, "scaled"), PredictConfig(device="cpu"), Path({tmp!r})
predict_volume(bp.synthetic_scan((2, {size}, {size})), loaded, config)
print("ready", flush=True)
for line in sys.stdin:
    start, ran = time.perf_counter(), "numpy"
    if line.strip() == "floor":
        bp._floor_tiff(tmp / "scan.tif", tmp / "floor.tif")
    else:
        with open_volume(tmp / "scan.tif") as source:
            result = predict_volume(source, loaded, config, output=tmp / "out_{name}.tif", overwrite=True)
        ran = f"{{result.backend}} on {{result.device}}, tile {{result.tile}}, batch {{result.batch_size}}"
    print(time.perf_counter() - start, ran, flush=True)
"""


def _worker(checkout: Path, name: str, args, tmp: Path) -> subprocess.Popen:
    code = WORKER.format(bench=str(HERE), classes=args.classes, tmp=str(tmp), size=args.size, name=name)
    env = dict(os.environ, PYTHONPATH=str(checkout))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env, cwd=tmp)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the worker for {checkout} did not start")
    return proc


def _timed(proc: subprocess.Popen, what: str) -> tuple[float, str]:
    proc.stdin.write(what + "\n")
    proc.stdin.flush()
    answer = proc.stdout.readline()
    if not answer:
        raise SystemExit(f"a worker stopped (exit status {proc.wait()}); its error is printed above")
    seconds, ran = answer.split(" ", 1)
    return float(seconds), ran.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs=2, type=Path, help="two source trees (each holding bone_avizo/)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import tifffile

    import bench_predict as bp
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        tifffile.imwrite(tmp / "scan.tif", bp.synthetic_scan((args.slices, args.size, args.size)),
                         photometric="minisblack")
        names = [f"{i}:{path}" for i, path in enumerate(args.checkouts)]
        workers = {name: _worker(path.resolve(), str(i), args, tmp)
                   for i, (name, path) in enumerate(zip(names, args.checkouts))}
        times: dict[str, list[float]] = {name: [] for name in workers}
        floor: list[float] = []
        settings: dict[str, str] = {}
        try:
            for _ in range(args.runs):
                floor.append(_timed(workers[names[0]], "floor")[0])
                for name, proc in workers.items():
                    seconds, settings[name] = _timed(proc, "engine")
                    times[name].append(seconds)
        finally:
            for proc in workers.values():
                proc.stdin.close()
                proc.wait()
    best_floor = min(floor)
    print(json.dumps({"benchmark": "predict-overhead-ab", "machine": bp.machine(), "shape":
                      [args.slices, args.size, args.size], "network": f"pointwise scaled, {args.classes} classes",
                      "precision": "fp32 (onnxruntime and torch on CPU)", "runs": args.runs,
                      "floor_s": {"best": best_floor, "median": statistics.median(floor)},
                      "engine_s": {name: {"best": min(v), "median": statistics.median(v),
                                          "ratio_to_best_floor": best_floor / min(v), "ran": settings[name]}
                                   for name, v in times.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
