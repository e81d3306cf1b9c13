"""DLPred benchmarks: throughput vs MONAI and a naive loop, peak memory, seams, torch vs ONNX.

Usage (each prints a JSON line and a short table; record results in benchmarks/RESULTS.md):
  python benchmarks/bench_predict.py throughput [--slices 32 --size 1024 --device cpu]
  python benchmarks/bench_predict.py memory --gb 4 [--planes xy]      (peak RSS, HDF5 -> HDF5)
  python benchmarks/bench_predict.py seams --model MODEL --input VOLUME
  python benchmarks/bench_predict.py agreement --model MODEL --input VOLUME
  python benchmarks/bench_predict.py threads [--mb 64]      (what a second thread adds, by kind of work)
All side-by-side timings run in one process on the same volume and model; compare ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bone_avizo._memory import peak_rss_bytes
from bone_avizo.config import PredictConfig
from bone_avizo.data.normalize import normalize, scan_stats
from bone_avizo.io import create_writer, open_volume
from bone_avizo.io.base import ArraySource
from bone_avizo.models import LoadedModel, ModelMetadata, build_model, estimate_gflops, load_model
from bone_avizo.predict import predict_volume
from bone_avizo.predict.backends import build_backend
from bone_avizo.volume import VolumeInfo

GFLOP_PER_PATCH_NOTE = "U-Net/resnet18, 1 channel, 3 classes, 256x256 patch"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def emit(result: dict, json_path: str | None) -> None:
    """Print ``result`` as one JSON line and append it to ``json_path`` when given."""
    text = json.dumps(result, default=str)
    print(text)
    if json_path:
        with open(json_path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


def unet_resnet18(seed: int = 0, classes: int = 3, patch: int = 256) -> LoadedModel:
    torch.manual_seed(seed)
    module = build_model("unet", "resnet18", in_channels=1, num_classes=classes).eval()
    meta = ModelMetadata(arch="unet", encoder="resnet18", in_channels=1, num_classes=classes,
                         patch_size=patch, class_names=("background", "bone", "pores")[:classes])
    return LoadedModel(module=module, metadata=meta, source_path=None, format="bone_avizo")


class TinyNet(torch.nn.Module):
    """A small fully-convolutional net (3x3 conv, 8 channels) for memory benchmarks."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.body(x)


def tiny_model() -> LoadedModel:
    torch.manual_seed(0)
    meta = ModelMetadata(arch="unet", encoder="resnet18", in_channels=1, num_classes=3, patch_size=256)
    return LoadedModel(module=TinyNet().eval(), metadata=meta, source_path=None, format="bone_avizo")


def synthetic_scan(shape, seed=0) -> np.ndarray:
    """A (z, y, x) uint16 scan: a phantom when available, else smooth random structure."""
    try:
        from bone_avizo.phantom import PhantomConfig, make_phantom
        image, _ = make_phantom(PhantomConfig(shape=tuple(shape), seed=seed, dtype="uint16"))
        return image.array
    except ImportError:
        rng = np.random.default_rng(seed)
        return (rng.normal(20000, 3000, shape)).clip(1, 65535).astype(np.uint16)


def write_h5(path: Path, shape, *, slab=16, seed=0, compression="gzip") -> None:
    """A uint16 HDF5 scan written slab by slab (bounded memory); repeated structure, varied noise."""
    info = VolumeInfo(tuple(shape), np.uint16, voxel_size=(0.02, 0.02, 0.02), name=path.stem)
    base = synthetic_scan((min(slab, shape[0]), *shape[1:]), seed=seed)
    rng = np.random.default_rng(seed)
    with create_writer(path, info, overwrite=True, compression=compression) as writer:
        for z0 in range(0, shape[0], slab):
            n = min(slab, shape[0] - z0)
            noise = rng.integers(0, 64, (n, *shape[1:]), dtype=np.uint16)
            writer.write_slab(z0, base[:n] + noise)


# --------------------------------------------------------------------------------------------
def throughput(args) -> dict:
    torch.set_num_threads(args.threads or os.cpu_count())
    device = torch.device(args.device)
    loaded = unet_resnet18()
    shape = (args.slices, args.size, args.size)
    gflop = estimate_gflops(loaded.module, 1, 256)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        src = Path(tmp) / "scan.h5"
        write_h5(src, shape)
        volume = open_volume(src).read_all()
        voxels = volume.size
        rows: dict[str, float] = {}
        for _, cfg in _engine_variants(args):  # warm-up: ONNX export cached, sessions and code paths loaded
            predict_volume(volume[:2], loaded, cfg)
        for _ in range(args.repeat):  # interleaved repetitions, best time kept: a shared machine is noisy
            for label, cfg in _engine_variants(args):
                out = Path(tmp) / f"out_{label}.h5"
                t = time.perf_counter()
                with open_volume(src) as source:
                    predict_volume(source, loaded, cfg, output=out, overwrite=True)
                keep_best(rows, f"bone_avizo {label} (file to file)", time.perf_counter() - t)
            t = time.perf_counter()
            predict_volume(volume, loaded, PredictConfig(device=args.device))
            keep_best(rows, "bone_avizo default (in memory)", time.perf_counter() - t)
            keep_best(rows, "MONAI sliding_window_inference (in memory)", _monai(volume, loaded, device, args))
            keep_best(rows, "naive whole-slice torch loop (in memory)", _naive(volume, loaded, device))
    peak_flops = _peak_note(gflop)
    result = {"benchmark": "predict-throughput", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "shape": shape, "gflop_per_256_patch": round(gflop, 2), "seconds": rows,
              "mvoxel_per_s": {k: voxels / v / 1e6 for k, v in rows.items()}}
    monai = rows["MONAI sliding_window_inference (in memory)"]
    result["speedup_vs_monai"] = {k: monai / v for k, v in rows.items()}
    result["fraction_of_flop_limit"] = {k: (voxels / v) * gflop * 1e9 / 65536 / peak_flops
                                        for k, v in rows.items()} if peak_flops else None
    return result


def keep_best(rows: dict, key: str, seconds: float) -> None:
    rows[key] = min(seconds, rows.get(key, float("inf")))


def _engine_variants(args):
    """(label, config) of the engine variants --variants names (all by default); an unknown name: SystemExit."""
    variants = list(_all_engine_variants(args))
    wanted = [v.strip() for v in getattr(args, "variants", "").split(",") if v.strip()]
    unknown = sorted(set(wanted) - {label for label, _ in variants})
    if unknown:
        raise SystemExit(f"unknown --variants {', '.join(unknown)}; valid: {', '.join(l for l, _ in variants)}")
    return [(label, cfg) for label, cfg in variants if not wanted or label in wanted]


def _all_engine_variants(args):
    common = dict(device=args.device)
    yield "default", PredictConfig(**common)
    yield "tile=patch 256", PredictConfig(tile_size=256, **common)
    if args.device == "cpu":
        yield "backend=torch", PredictConfig(backend="torch", **common)
        yield "bf16 (torch)", PredictConfig(backend="torch", precision="bf16", **common)
    else:
        yield "fp32", PredictConfig(backend="torch", precision="fp32", **common)
        yield "bf16", PredictConfig(backend="torch", precision="bf16", **common)
        yield "fp16 batch 64", PredictConfig(backend="torch", precision="fp16", batch_size=64, **common)
        if _onnxruntime_cuda():
            yield "backend=onnxruntime (CUDA provider)", PredictConfig(backend="onnxruntime", **common)


def _onnxruntime_cuda() -> bool:
    """Whether onnxruntime (onnxruntime-gpu) offers its CUDA execution provider here."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _prepared(volume, loaded):
    stats = scan_stats(ArraySource(volume))
    return normalize(volume, stats, loaded.metadata.normalization)


def _monai(volume, loaded, device, args) -> float:
    from monai.inferers import sliding_window_inference
    model = loaded.module.to(device).eval()
    t = time.perf_counter()
    normed = _prepared(volume, loaded)
    with torch.inference_mode():
        for z0 in range(0, volume.shape[0], args.monai_slices):
            x = normed[z0:z0 + args.monai_slices, None].to(device)
            out = sliding_window_inference(x, (256, 256), args.monai_batch, model, overlap=0.25, mode="gaussian")
            out.argmax(1).to(torch.uint8).cpu()
    return time.perf_counter() - t


def _naive(volume, loaded, device) -> float:
    model = loaded.module.to(device).eval()
    t = time.perf_counter()
    normed = _prepared(volume, loaded)
    with torch.inference_mode():
        for z in range(volume.shape[0]):
            model(normed[z][None, None].to(device)).argmax(1).to(torch.uint8).cpu()
    return time.perf_counter() - t


def _peak_note(gflop: float) -> float | None:
    """Peak FP32 FLOP/s of this CPU if known from the environment (BENCH_PEAK_GFLOPS), else None."""
    value = os.environ.get("BENCH_PEAK_GFLOPS")
    return float(value) * 1e9 if value else None


# --------------------------------------------------------------------------------------------
class ScaledNet(torch.nn.Module):
    """The near-free network of the overhead benchmark: K channels, each a multiple of the input's first
    channel (w_k * x, w from 1 to -1: class 0 where the normalised voxel is above the scan's mean, class
    K-1 below it). One broadcast multiply: onnxruntime runs it at about the cost of writing its K outputs
    (0.064 s for 64 x 1024^2 x 3 on the Zen 3 2-core machine, against 0.125-0.165 s for the affine
    network's multiply and add: benchmarks/RESULTS.md 0c), so the benchmark measures the pipeline."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(1.0, -1.0, classes).view(1, classes, 1, 1))

    def forward(self, x):
        return x * self.weight  # (B, 1, H, W) * (1, K, 1, 1): K channels in one broadcast multiply


class PointwiseNet(ScaledNet):
    """K channels, each an affine function of the input's first channel (one fused multiply-add in torch;
    onnxruntime runs it as a broadcast multiply then a broadcast add: 2-3x the numpy floor by itself)."""

    def __init__(self, classes: int = 3):
        super().__init__(classes)
        self.bias = torch.nn.Parameter(torch.linspace(-0.5, 0.5, classes).view(1, classes, 1, 1))

    def forward(self, x):
        return torch.addcmul(self.bias, x, self.weight)


NETWORKS = {"scaled": ScaledNet, "affine": PointwiseNet}


def pointwise_model(classes: int = 3, network: str = "affine") -> LoadedModel:
    """A near-free model: ``network`` (a key of NETWORKS) with ``classes`` outputs."""
    torch.manual_seed(0)
    meta = ModelMetadata(arch="unet", encoder="resnet18", in_channels=1, num_classes=classes, patch_size=256)
    return LoadedModel(module=NETWORKS[network](classes).eval(), metadata=meta, source_path=None,
                       format="bone_avizo")


def _floor_tiff(src: Path, dst: Path) -> None:
    """numpy floor: read the TIFF, one pointwise op, write uint8 labels as a TIFF."""
    import tifffile
    tifffile.imwrite(dst, (tifffile.imread(src) > 20000).astype(np.uint8))


def _floor_h5(src: Path, dst: Path) -> None:
    """numpy floor: read the HDF5 dataset, one pointwise op, write uint8 gzip-1 chunked like our writer."""
    import h5py
    from bone_avizo.io.hdf5 import chunk_shape
    with h5py.File(src, "r") as f:
        labels = (f["data"][...] > 20000).astype(np.uint8)
    with h5py.File(dst, "w") as f:
        f.create_dataset("data", data=labels, chunks=chunk_shape(labels.shape), compression="gzip",
                         compression_opts=1)


def _network_alone(volume: np.ndarray, loaded, backend: str = "torch") -> float:
    """Seconds of the network's own work: its forward passes, one slice each, over already normalised
    float32 slices, by torch or by the onnxruntime session the engine builds for it."""
    normed = _prepared(volume, loaded)
    run = loaded.module
    if backend == "onnxruntime":
        run = build_backend(loaded.module, backend=backend, device=torch.device("cpu"), precision="auto",
                            threads=0)
        run(normed[0][None, None])  # the session's first run
    t = time.perf_counter()
    with torch.inference_mode():
        for z in range(volume.shape[0]):
            run(normed[z][None, None])
    return time.perf_counter() - t


ONNX_ALONE = "in memory: the network's forward passes alone, onnxruntime (cpu)"
FLOOR_RUNS = 3  # numpy floor runs per repetition, the best kept: a floor that happens to be slow flatters the engine


def overhead(args) -> dict:
    """The pipeline's own cost: the engine with a near-free network (--network: K pointwise channels) file to
    file, against a numpy floor (read the same file, one pointwise op, write uint8 the same way)."""
    import tifffile
    torch.set_num_threads(args.threads or os.cpu_count())
    shape = (args.slices, args.size, args.size)
    loaded = pointwise_model(args.classes, args.network)
    configs = {"default": PredictConfig(device=args.device), "backend=torch": PredictConfig(device=args.device,
                                                                                             backend="torch")}
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        volume = synthetic_scan(shape)
        tifffile.imwrite(tmp / "scan.tif", volume)
        write_h5(tmp / "scan.h5", shape)
        cases = {"TIFF -> TIFF": ("scan.tif", "out.tif", _floor_tiff),
                 "HDF5 -> HDF5": ("scan.h5", "out.h5", _floor_h5)}
        for name, cfg in configs.items():  # warm-up, untimed: ONNX export cached, each case's code paths loaded
            predict_volume(volume[:2], loaded, cfg)
            for src, dst, _ in cases.values():
                with open_volume(tmp / src) as source:
                    predict_volume(source, loaded, cfg, output=tmp / dst, overwrite=True)
        for _ in range(args.repeat):
            for case, (src, dst, floor) in cases.items():
                for _ in range(FLOOR_RUNS):  # its fresh arrays' page faults vary several-fold between runs
                    t = time.perf_counter()
                    floor(tmp / src, tmp / f"floor_{dst}")
                    keep_best(rows, f"{case}: numpy floor", time.perf_counter() - t)
                for name, cfg in configs.items():
                    t = time.perf_counter()
                    with open_volume(tmp / src) as source:
                        result = predict_volume(source, loaded, cfg, output=tmp / dst, overwrite=True)
                    keep_best(rows, f"{case}: engine {name} ({result.backend}, {result.device})",
                               time.perf_counter() - t)
            t = time.perf_counter()
            predict_volume(volume, loaded, configs["default"])
            keep_best(rows, "in memory: engine default", time.perf_counter() - t)
            keep_best(rows, "in memory: the network's forward passes alone (normalised slices)",
                       _network_alone(volume, loaded))
            if args.device == "cpu":  # the engine's own CPU session: what its default runs here
                keep_best(rows, ONNX_ALONE, _network_alone(volume, loaded, "onnxruntime"))
    voxels = float(np.prod(shape))
    ratios = {}
    for case in cases:
        floor_s = rows[f"{case}: numpy floor"]
        ratios.update({k: floor_s / v for k, v in rows.items() if k.startswith(case) and "floor" not in k})
    beyond = {case: rows[f"{case}: engine default (onnxruntime, cpu)"] - rows[ONNX_ALONE] for case in cases
              if ONNX_ALONE in rows and f"{case}: engine default (onnxruntime, cpu)" in rows}
    return {"benchmark": "predict-overhead", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "shape": shape, "seconds": rows,
            "network": f"pointwise {args.network} ({NETWORKS[args.network].__name__}), {args.classes} classes",
            "mvoxel_per_s": {k: voxels / v / 1e6 for k, v in rows.items()},
            "ratio_to_numpy_floor": ratios,
            "engine_default_beyond_its_network_s": beyond,
            "floor_over_engine_beyond_network": {case: rows[f"{case}: numpy floor"] / s for case, s in beyond.items()}}


# --------------------------------------------------------------------------------------------
def _two_threads_speedup(work, repeat: int) -> dict:
    """Seconds of ``work(k)`` in one thread, and of two threads each doing it at once (k = 0, 1); the
    speedup is 2 x one / two (2.0: a second core doubles the work done, 1.0: it adds nothing)."""
    import threading
    one = two = float("inf")
    work(0)
    for _ in range(repeat):
        t = time.perf_counter()
        work(0)
        one = min(one, time.perf_counter() - t)
        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        t = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        two = min(two, time.perf_counter() - t)
    return {"one_thread_s": one, "two_threads_s": two, "speedup": 2 * one / two}


def kernels_bench(args) -> dict:
    """The CPU kernels around the network, numba against the numpy route (the same results), on
    ``slices`` x size^2: statistics of uint16 voxels, normalisation to float32 one image at a time, labels
    of K-class float32 scores one image at a time (one thread, best of ``repeat``)."""
    from bone_avizo import kernels
    from bone_avizo.data.normalize import _unsigned_moments
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 60000, (args.slices, args.size, args.size), dtype=np.uint16)
    scores = rng.standard_normal((1, args.classes, args.size * args.size), dtype=np.float32)
    normed = np.empty((1, args.size, args.size), np.float32)
    labels = np.empty((1, args.size * args.size), np.uint8)
    affine = (30000.0, 1 / 17000, -5.0, 5.0)
    work = {"statistics (uint16, one thread)": lambda: _unsigned_moments(raw.reshape(-1), skip_zeros=True),
            "normalise (uint16 -> float32, image by image)":
                lambda: [kernels.normalise_into(raw[z:z + 1], normed, affine) for z in range(len(raw))],
            f"labels ({args.classes} float32 scores, image by image)":
                lambda: [kernels.labels_into(scores, labels) for _ in range(len(raw))]}
    rows: dict[str, float] = {}
    routes = {"numba": "1", "numpy": "0"}
    before = os.environ.get("BONE_AVIZO_NUMBA")
    for _ in range(args.repeat):
        for route, flag in routes.items():
            os.environ["BONE_AVIZO_NUMBA"] = flag
            kernels.compiled.cache_clear()
            if route == "numba" and kernels.compiled() is None:
                continue
            for name, run in work.items():
                run()  # compiled (or loaded from numba's cache) before timing
                t = time.perf_counter()
                run()
                keep_best(rows, f"{name}: {route}", time.perf_counter() - t)
    if before is None:
        os.environ.pop("BONE_AVIZO_NUMBA")
    else:
        os.environ["BONE_AVIZO_NUMBA"] = before
    kernels.compiled.cache_clear()
    speedup = {name: rows[f"{name}: numpy"] / rows[f"{name}: numba"] for name in work if f"{name}: numba" in rows}
    return {"benchmark": "predict-kernels", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "shape": [args.slices, args.size, args.size], "classes": args.classes, "seconds": rows,
            "numba_speedup": speedup}


def threads(args) -> dict:
    """What a second thread adds on this machine, by the kinds of work the CPU pipeline does: streaming
    over arrays far larger than the caches (memory bandwidth), short numpy calls on cache-resident
    arrays (the GIL between calls), compute-bound numpy in cache, and the CPU argmax of K-class scores."""
    from bone_avizo.predict.engine import labels_from_scores
    rng = np.random.default_rng(0)
    big = [np.ones(args.mb << 18, np.float32) for _ in range(2)]  # args.mb MB each
    small = [rng.standard_normal(1 << 15, dtype=np.float32) for _ in range(2)]
    angles = [np.linspace(0, 1, 1 << 16) for _ in range(2)]
    scores = [torch.from_numpy(rng.standard_normal((1, args.classes, args.size, args.size), dtype=np.float32))
              for _ in range(2)]
    labels = [torch.empty((1, args.size, args.size), dtype=torch.uint8) for _ in range(2)]

    def streaming(k):
        for _ in range(10):
            np.multiply(big[k], np.float32(1.0001), out=big[k])

    def short_calls(k):
        out = np.empty_like(small[k])
        for _ in range(2000):
            np.multiply(small[k], np.float32(1.5), out=out)
            np.maximum(small[k], out, out=out)

    def compute(k):
        out = np.empty_like(angles[k])
        for _ in range(100):
            np.sin(angles[k], out=out)

    def argmax(k):
        for _ in range(8):
            labels_from_scores(scores[k], out=labels[k])

    kinds = {f"streaming multiply, {args.mb} MB float32 a thread": streaming,
             "short numpy calls (2 x 128 KB, cache-resident)": short_calls,
             "compute-bound numpy (sin, cache-resident)": compute,
             f"CPU argmax, {args.classes} x {args.size}^2 float32 scores": argmax}
    return {"benchmark": "predict-threads", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "numpy": np.__version__, "results": {name: _two_threads_speedup(work, args.repeat)
                                                  for name, work in kinds.items()}}


# --------------------------------------------------------------------------------------------
def memory(args) -> dict:
    """Peak RSS of predicting an HDF5 scan of --gb GB (uint16) to HDF5, in a fresh subprocess."""
    results = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for gb in args.gb:
            voxels = int(gb * (1 << 30) / 2)
            side = 2048 if gb >= 1 else 1024
            shape = (max(1, voxels // (side * side)), side, side)
            src = Path(tmp) / f"scan_{gb}.h5"
            t = time.perf_counter()
            write_h5(src, shape, compression="none")
            made = time.perf_counter() - t
            for planes in args.planes:
                cmd = [sys.executable, __file__, "_memory_case", str(src), str(Path(tmp) / "out.h5"), planes]
                t = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                case = json.loads(out.stdout.strip().splitlines()[-1])
                case.update(seconds=time.perf_counter() - t, shape=shape, input_gb=src.stat().st_size / 1e9,
                            make_input_seconds=made)
                results[f"{gb} GB, planes {planes}"] = case
            src.unlink()
    return {"benchmark": "predict-memory", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "cases": results}


def _memory_case(src: str, out: str, planes: str) -> None:
    torch.set_num_threads(os.cpu_count())
    cfg = PredictConfig(backend="torch", planes=tuple(planes.split("+")))
    with open_volume(src) as source:
        result = predict_volume(source, tiny_model(), cfg, output=out, overwrite=True)
    peak = peak_rss_bytes() / (1 << 30)  # VmHWM: ru_maxrss would include this parent's pages
    print(json.dumps({"peak_rss_gb": round(peak, 3), "mvoxel_per_s": result.voxels_per_second / 1e6,
                      "slab_slices": result.slab_slices}))


# --------------------------------------------------------------------------------------------
def seams(args) -> dict:
    """Label disagreement between tiled and whole-slice prediction of a trained model."""
    loaded = load_model(args.model)
    with open_volume(args.input) as source:
        volume = source.read_all()
    whole_tile = -(-max(volume.shape[1:]) // 32) * 32
    whole = predict_volume(volume, loaded, PredictConfig(tile_size=whole_tile, backend="torch")).labels.array
    rows = {}
    patch = loaded.metadata.patch_size
    for tile in (0, patch):
        for blend in ("gaussian", "cosine", "constant"):
            for overlap in (0.0, 0.25, 0.5):
                cfg = PredictConfig(tile_size=tile, blend=blend, overlap=overlap, backend="torch")
                result = predict_volume(volume, loaded, cfg)
                name = f"tile {result.tile}{' (auto)' if tile == 0 else ' (patch)'}, {blend}, overlap {overlap}"
                rows[name] = float((result.labels.array != whole).mean())
    return {"benchmark": "predict-seams", "model": str(args.model), "input": str(args.input),
            "patch": loaded.metadata.patch_size, "whole_slice_tile": whole_tile,
            "disagreement_fraction": rows, "machine": machine(), "date": time.strftime("%Y-%m-%d")}


def agreement(args) -> dict:
    """Fraction of identical labels between the torch and onnxruntime backends."""
    loaded = load_model(args.model)
    with open_volume(args.input) as source:
        volume = source.read_all()
    a = predict_volume(volume, loaded, PredictConfig(backend="torch")).labels.array
    b = predict_volume(volume, loaded, PredictConfig(backend="onnxruntime")).labels.array
    return {"benchmark": "predict-agreement", "identical_fraction": float((a == b).mean()),
            "voxels": int(a.size), "model": str(args.model), "input": str(args.input),
            "machine": machine(), "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_memory_case":
        _memory_case(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--monai-slices", type=int, default=4)
    p.add_argument("--monai-batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2, help="interleaved repetitions; the best time is kept")
    p.add_argument("--variants", default="",
                   help="comma-separated engine variants to time (default: all), e.g. default,backend=torch")
    p = sub.add_parser("overhead")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--network", choices=sorted(NETWORKS), default="scaled",
                   help="the near-free network: scaled (w_k * x, one multiply) or affine (w_k * x + b_k)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeat", type=int, default=5, help="interleaved repetitions; the best time is kept")
    p = sub.add_parser("kernels")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3, help="the best time of this many is kept")
    p = sub.add_parser("threads")
    p.add_argument("--mb", type=int, default=64, help="size of each streaming thread's array")
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3, help="the best time of this many is kept")
    p = sub.add_parser("memory")
    p.add_argument("--gb", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--planes", nargs="+", default=["xy", "xy+xz+yz"],
                   help="plane sets to run for every size (xy+xz+yz = three-plane fusion)")
    for name in ("seams", "agreement"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--input", required=True)
    for p in sub.choices.values():
        p.add_argument("--tmp", default=None, help="folder for temporary files")
        p.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)
    result = {"throughput": throughput, "overhead": overhead, "threads": threads, "kernels": kernels_bench,
              "memory": memory, "seams": seams, "agreement": agreement}[args.what](args)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
