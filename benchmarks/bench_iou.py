"""IoU benchmarks: counting throughput vs torchmetrics, and end to end from two large HDF5 files.

Usage (each prints a table and a JSON line; record results in benchmarks/results_iou.md):
  python benchmarks/bench_iou.py throughput [--shape 256 1024 1024] [--tm-slices 32] [--repeats 3]
  python benchmarks/bench_iou.py e2e [--shape 1024 2048 2048] [--folder /tmp]
  python benchmarks/bench_iou.py all

throughput: two in-memory uint8 label volumes, 3 classes, scored with ``compute_iou`` (1 and all threads)
and, in the same process on the first ``--tm-slices`` slices of the same volumes, with torchmetrics'
MulticlassJaccardIndex (BONe's metric; its time is scaled to the whole volume). Two kinds of data: a
structured phantom (long runs of one label, like real label volumes) and uniform random labels.

e2e: writes two HDF5 files (uncompressed, chunks 16x256x256, created slab by slab with h5py so creation
stays bounded), runs ``python -m bone_avizo.standalone iou --prediction A --reference B --report R`` in a
child process, and reports its wall time and peak RSS (the child's VmHWM at exit, psutil polling every
50 ms, and ru_maxrss of the children, which can include pages of this process forked before exec).
The files are deleted afterwards. Reads may come from the page cache: the files were just written.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bone_avizo.config import IoUConfig
from bone_avizo.metrics import compute_iou
from bone_avizo.metrics.confusion import resolve_threads

CLASSES = 3


def machine() -> str:
    """CPU model (from lscpu), usable cores, load average and numpy version."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        cpu = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("Model name")), platform.machine())
    except (OSError, subprocess.SubprocessError):
        cpu = platform.machine()
    return (f"{cpu}, {resolve_threads(0)} usable cores, load average {os.getloadavg()[0]:.2f}, "
            f"numpy {np.__version__}")


# ---------------------------------------------------------------------------------------------
# data
def phantom_slice_maker(ny: int, nx: int, seed: int = 0):
    """A function z -> (reference, prediction) slices (ny, nx) uint8, 3 classes: a bone ring with pores,
    and a prediction that differs at ~8 % of the voxels (shifted boundary and speckle)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    r = np.hypot(y - ny / 2, x - nx / 2) / (min(ny, nx) / 2)
    base = np.where((r > 0.5) & (r < 0.8), 1, 0).astype(np.uint8)
    pores = (rng.random((ny, nx)) < 0.002)
    base[np.roll(pores, 1, 0) | pores | np.roll(pores, 1, 1)] = 2
    speckle = rng.random((ny, nx)) < 0.05

    def make(z: int) -> tuple[np.ndarray, np.ndarray]:
        ref = np.roll(base, z % 64, axis=1)
        pred = np.roll(ref, 3, axis=0)
        noise = np.roll(speckle, 7 * z, axis=0)
        pred[noise] = (pred[noise] + 1) % CLASSES
        return ref, pred

    return make


def phantom_volume(shape) -> tuple[np.ndarray, np.ndarray]:
    make = phantom_slice_maker(shape[1], shape[2])
    ref, pred = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
    for z in range(shape[0]):
        ref[z], pred[z] = make(z)
    return ref, pred


def random_volume(shape, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, CLASSES, shape, dtype=np.uint8), rng.integers(0, CLASSES, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# throughput
def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_torchmetrics(pred: np.ndarray, ref: np.ndarray, repeats: int) -> tuple[float, float]:
    import torch
    from torchmetrics.classification import MulticlassJaccardIndex

    p, t = torch.from_numpy(pred), torch.from_numpy(ref)

    def run():
        metric = MulticlassJaccardIndex(num_classes=CLASSES, average="macro")
        metric.update(p, t)
        return float(metric.compute())

    value = run()
    return best_time(run, repeats), value


def throughput(shape, tm_slices: int, repeats: int) -> list[dict]:
    rows = []
    for kind, make in (("phantom", phantom_volume), ("random", random_volume)):
        ref, pred = make(shape)
        voxels = ref.size
        row = {"data": kind, "shape": list(shape), "mvoxel": voxels / 1e6}
        for threads in sorted({1, resolve_threads(0)}):
            config = IoUConfig(num_classes=CLASSES, threads=threads)
            result = compute_iou(pred, ref, config)
            seconds = best_time(lambda: compute_iou(pred, ref, config), repeats)
            row[f"ours_{threads}t_mvox_s"] = voxels / seconds / 1e6
            row["ours_mean_iou"] = result.mean_iou
        tm_seconds, tm_value = time_torchmetrics(pred[:tm_slices], ref[:tm_slices], max(1, repeats - 1))
        row["torchmetrics_mvox_s"] = pred[:tm_slices].size / tm_seconds / 1e6
        row["torchmetrics_slices_timed"] = tm_slices
        part = compute_iou(pred[:tm_slices], ref[:tm_slices], IoUConfig(num_classes=CLASSES))
        row["agree_on_timed_part"] = abs(part.mean_iou - tm_value) < 1e-5
        best = max(v for k, v in row.items() if k.startswith("ours_") and k.endswith("mvox_s"))
        row["ratio_vs_torchmetrics"] = best / row["torchmetrics_mvox_s"]
        rows.append(row)
        del ref, pred
    return rows


# ---------------------------------------------------------------------------------------------
# end to end
def write_hdf5(path: Path, shape, which: int) -> None:
    """Write the reference (which=0) or prediction (which=1) phantom, 16 slices at a time."""
    import h5py

    make = phantom_slice_maker(shape[1], shape[2])
    with h5py.File(path, "w") as file:
        ds = file.create_dataset("data", shape=shape, dtype=np.uint8, chunks=(16, 256, 256))
        ds.attrs["voxel_size"] = [0.0195, 0.0195, 0.0195]
        ds.attrs["unit"] = "mm"
        for z0 in range(0, shape[0], 16):
            z1 = min(z0 + 16, shape[0])
            ds[z0:z1] = np.stack([make(z)[which] for z in range(z0, z1)])


# runs the CLI in the child and, at its exit, prints the child's own peak resident memory (VmHWM: the
# high-water mark of the memory of the exec'd process; ru_maxrss can include the parent's pages, since
# the child is forked from the parent before exec)
CHILD = ("import sys\nfrom bone_avizo.standalone.__main__ import main\ncode = main(sys.argv[1:])\n"
         "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
         "print('VmHWM', hwm[0].split()[1] if hwm else 'nan', file=sys.stderr)\nsys.exit(code)")


def run_cli_child(args: list[str], env: dict | None = None) -> dict:
    """Run ``python -m bone_avizo.standalone ARGS`` in a fresh process: exit code, wall seconds from process
    start, stderr, and peak RSS (GB) as the process's own VmHWM and polled every 50 ms."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    child = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    _, err = proc.communicate()
    hwm = [line.split()[1] for line in err.splitlines() if line.startswith("VmHWM")]
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - start, "stderr": err,
            "peak_rss_gb_vmhwm": float(hwm[-1]) * 1024 / 1e9 if hwm and hwm[-1] != "nan" else float("nan"),
            "peak_rss_gb_polled": peak / 1e9}


def run_child(args: list[str]) -> dict:
    """Run ``python -m bone_avizo.standalone ARGS``; wall time and peak RSS measured three ways (GB)."""
    run = run_cli_child(args)
    if run["returncode"] != 0:
        raise SystemExit(f"iou failed ({run['returncode']}): {run['stderr']}")
    return {"iou_s": run["seconds"], "peak_rss_gb_vmhwm": run["peak_rss_gb_vmhwm"],
            "peak_rss_gb_polled": run["peak_rss_gb_polled"],
            "peak_rss_gb_ru_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9}


def end_to_end(shape, folder: str) -> dict:
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench_iou_") as tmp:
        ref_path, pred_path, report = Path(tmp, "reference.h5"), Path(tmp, "prediction.h5"), Path(tmp, "r.json")
        start = time.perf_counter()
        write_hdf5(ref_path, shape, 0)
        write_hdf5(pred_path, shape, 1)
        created = time.perf_counter() - start
        args = ["iou", "--prediction", str(pred_path), "--reference", str(ref_path), "--report", str(report)]
        row = run_child(args)
        data = json.loads(report.read_text())
        voxels = int(np.prod(shape))
        command = "python -m bone_avizo.standalone " + " ".join(args).replace(tmp, "$TMP")
        row.update(shape=list(shape), file_gb_each=voxels / 1e9, create_s=created, mean_iou=data["mean_iou"],
                   mvox_s=voxels / row["iou_s"] / 1e6, command=command)
        return row


# ---------------------------------------------------------------------------------------------
def print_throughput(rows: list[dict]) -> None:
    for row in rows:
        ours = ", ".join(f"{k[5:-7].replace('_', ' ')} {v:.0f}" for k, v in row.items()
                         if k.startswith("ours_") and k.endswith("mvox_s"))
        print(f"{row['data']:8s} {row['shape']}: ours (Mvoxel/s) {ours}; torchmetrics "
              f"{row['torchmetrics_mvox_s']:.1f} Mvoxel/s (timed on {row['torchmetrics_slices_timed']} slices); "
              f"ratio {row['ratio_vs_torchmetrics']:.0f}x; "
              f"same mean IoU on the timed part: {row['agree_on_timed_part']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("throughput", "e2e", "all"))
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="volume shape z y x")
    parser.add_argument("--tm-slices", type=int, default=32, help="slices timed with torchmetrics")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the HDF5 files are written")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; date {time.strftime('%Y-%m-%d %H:%M %Z')}")
    record: dict = {"machine": machine()}
    if args.part in ("e2e", "all"):  # first, while this process is small (see CHILD)
        record["e2e"] = row = end_to_end(tuple(args.shape or (1024, 2048, 2048)) if args.part == "e2e"
                                         else (1024, 2048, 2048), args.folder)
        print(f"e2e {row['shape']} ({row['file_gb_each']:.1f} GB each): {row['iou_s']:.1f} s, "
              f"{row['mvox_s']:.0f} Mvoxel/s, peak RSS {row['peak_rss_gb_vmhwm']:.3f} GB (VmHWM), "
              f"{row['peak_rss_gb_polled']:.3f} GB (polled), {row['peak_rss_gb_ru_maxrss']:.3f} GB (ru_maxrss); "
              f"files created in {row['create_s']:.0f} s")
    if args.part in ("throughput", "all"):
        record["throughput"] = throughput(tuple(args.shape or (256, 1024, 1024)) if args.part == "throughput"
                                          else (256, 1024, 1024), args.tm_slices, args.repeats)
        print_throughput(record["throughput"])
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
