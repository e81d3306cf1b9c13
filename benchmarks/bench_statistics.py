"""The statistics pass of DLPred: exact (every voxel) against sampled (whole slices, read until the
mean and standard deviation are known to within 0.1 %; bone_avizo.data.sampled_stats).

Usage (each prints one JSON object; record results in benchmarks/RESULTS.md):
  python benchmarks/bench_statistics.py io [--slices 256 --size 1024 --repeat 2]
      the pass alone and a whole file-to-file prediction (near-free network), TIFF and gzip HDF5, with the
      file in the page cache (warm) and evicted from it (cold: posix_fadvise DONTNEED), alternately
  python benchmarks/bench_statistics.py real
      the real scans of ../shared/data: slices read and relative error of the sampled statistics
  python benchmarks/bench_statistics.py agreement [--slices 64 --size 512 --steps 150]
      label agreement between the exact and the sampled statistics for a BONe-format .pth checkpoint
      (U-Net/resnet18, 2D, trained briefly on a phantom) predicting a phantom scan
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import keep_best, emit, machine, pointwise_model, synthetic_scan, write_h5  # noqa: E402
from bone_agreement import save_bone_checkpoint, train  # noqa: E402

from bone_avizo.config import PredictConfig  # noqa: E402
from bone_avizo.data.normalize import normalize, scan_stats  # noqa: E402
from bone_avizo.data.sampled_stats import sampled_stats  # noqa: E402
from bone_avizo.io import open_volume  # noqa: E402
from bone_avizo.io.base import ArraySource  # noqa: E402
from bone_avizo.models import load_model  # noqa: E402
from bone_avizo.phantom import PhantomConfig, make_phantom  # noqa: E402
from bone_avizo.predict import predict_volume  # noqa: E402
from bone_avizo.predict.backends import resolve_precision  # noqa: E402
from bone_avizo.volume import Volume  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = ["lhdl_3155_D_4_bc_trabecular_uct.tif", "lhdl_Ti_2923_D_1_trabecular_uct.tif", "simplect_mouse_femur_uct.tif"]
EXACT_SLAB = 8  # slices per read of the exact pass (the engine's CPU slab is 3-48 for 1024^2 slices)


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (written back first), so the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def relative_error(found, exact) -> float:
    """The larger relative deviation of the mean and of the standard deviation, in percent."""
    return 100 * max(abs(found.mean - exact.mean) / abs(exact.mean), abs(found.std - exact.std) / exact.std)


def _pass(path: Path, mode: str):
    """(seconds, stats, report or None) of one statistics pass over the file at ``path``."""
    t = time.perf_counter()
    with open_volume(path) as source:
        if mode == "exact":
            stats, report = scan_stats(source, slab_slices=EXACT_SLAB), None
        else:
            stats, report = sampled_stats(source)
    return time.perf_counter() - t, stats, report


def io(args) -> dict:
    """The pass alone and whole predictions, exact against sampled, warm and cold, TIFF and HDF5."""
    import tifffile
    shape = (args.slices, args.size, args.size)
    loaded = pointwise_model(3)
    rows: dict[str, float] = {}
    described, errors, ran_with = {}, {}, set()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        tifffile.imwrite(tmp / "scan.tif", synthetic_scan(shape))
        write_h5(tmp / "scan.h5", shape)
        files = {"TIFF": tmp / "scan.tif", "HDF5": tmp / "scan.h5"}
        predict_volume(np.ones((2, 64, 64), np.uint16), loaded, PredictConfig())  # warm-up
        for _ in range(args.repeat):
            for kind, path in files.items():
                for cache in ("warm", "cold"):
                    found = {}
                    for mode in ("exact", "sampled"):
                        if cache == "cold":
                            evict(path)
                        seconds, found[mode], report = _pass(path, mode)
                        keep_best(rows, f"{kind}, {cache}: statistics pass {mode}", seconds)
                        if report is not None:
                            described[kind] = report.describe()
                    errors[kind] = relative_error(found["sampled"], found["exact"])
                    for mode in ("exact", "auto"):
                        if cache == "cold":
                            evict(path)
                        t = time.perf_counter()
                        with open_volume(path) as source:
                            result = predict_volume(source, loaded, PredictConfig(statistics=mode),
                                                    output=tmp / f"out{path.suffix}", overwrite=True)
                        keep_best(rows, f"{kind}, {cache}: predict file to file, statistics={mode}",
                                   time.perf_counter() - t)
                        described[f"{kind} predict statistics={mode}"] = result.statistics
                        ran_with.add(_ran_with(result))
    ratios = {}
    for key, seconds in rows.items():
        if key.endswith("sampled") or key.endswith("statistics=auto"):
            base = key.rsplit(" ", 1)[0] + " exact" if key.endswith("sampled") else key.replace("=auto", "=exact")
            ratios[key] = rows[base] / seconds
    return {"benchmark": "statistics-io", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "shape": shape, "dtype": "uint16", "network": "pointwise affine, 3 classes",
            "engine_ran_with": sorted(ran_with),
            "exact_pass_slab_slices": EXACT_SLAB, "seconds": rows, "speed-up_of_sampled": ratios,
            "how": described, "sampled_error_percent": errors}


def real(args) -> dict:
    """Slices read and relative error of the sampled statistics on the real scans."""
    out = {}
    for name in REAL:
        path = SHARED / name
        if not path.is_file():
            out[name] = "not available"
            continue
        with open_volume(path) as source:
            exact = scan_stats(source)
            found, report = sampled_stats(source)
        out[name] = {"shape": list(source.shape), "how": report.describe(),
                     "error_percent": relative_error(found, exact)}
    return {"benchmark": "statistics-real-scans", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "scans": out}


def agreement(args) -> dict:
    """Labels of a BONe .pth checkpoint with the exact and with the sampled statistics."""
    torch.set_num_threads(os.cpu_count() or 1)
    image, labels = make_phantom(PhantomConfig(shape=(args.slices, args.size, args.size), seed=1, dtype="uint16"))
    train_image, train_labels = make_phantom(PhantomConfig(shape=(16, 256, 256), seed=2, dtype="uint16"))
    scan = train_image.array
    normed = normalize(scan, scan_stats(ArraySource(train_image)), "zscore").numpy()
    bone = (train_labels.array > 0).astype(np.int64)  # bone and pores against background: a 2-class model
    model = train(normed, bone, 1, args.steps, seed=0)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = save_bone_checkpoint(Path(tmp) / "phantom_bone.pth", model, 1)
        loaded = load_model(path)
        results = {mode: predict_volume(Volume(image.array), loaded, PredictConfig(statistics=mode))
                   for mode in ("exact", "sampled")}
    exact, sampled = (results[m].labels.array for m in ("exact", "sampled"))
    truth = labels.array > 0
    return {"benchmark": "statistics-label-agreement", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "model": f"BONe .pth, U-Net/resnet18 2D, 2 classes, trained {args.steps} steps on a 16 x 256^2 phantom",
            "scan": f"phantom {args.slices} x {args.size}^2 uint16 (seed 1)",
            "engine_ran_with": _ran_with(results["exact"]),
            "how": results["sampled"].statistics,
            "sampled_error_percent": relative_error(results["sampled"].stats, results["exact"].stats),
            "label_agreement": float((exact == sampled).mean()),
            "bone_iou_exact": _iou(exact == 1, truth), "bone_iou_sampled": _iou(sampled == 1, truth)}


def _ran_with(result) -> str:
    """Backend, device and precision a prediction (default precision) actually ran with."""
    device = torch.device(result.device.split(",")[0])
    precision = resolve_precision("auto", device) if result.backend == "torch" else "fp32"
    return f"{result.backend} on {result.device}, {precision}"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("io")
    p.add_argument("--slices", type=int, default=256)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=2, help="interleaved repetitions; the best time is kept")
    sub.add_parser("real")
    p = sub.add_parser("agreement")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=150, help="training steps of the checkpoint")
    for p in sub.choices.values():
        p.add_argument("--tmp", default=None, help="folder for temporary files")
        p.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)
    emit({"io": io, "real": real, "agreement": agreement}[args.what](args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
