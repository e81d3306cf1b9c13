"""DLPred on a GPU, every figure of the speed targets in one run (ratios are taken inside this run).

  python benchmarks/bench_gpu.py --device cuda --json OUT.json          (the GPU machine; ~3 min)
  python benchmarks/bench_gpu.py --device cpu --slices 4 --size 128 --cli-slices 4 --cli-size 128 --no-compile
                                                                        (the same code at tiny sizes)

Rows (Mvoxel/s = output voxels per second):
- network bound: U-Net/resnet18 (1 channel, 3 classes), batch --batch x size^2, forward + argmax on
  the device, fp32 / fp16 weights / bf16 weights (channels_last) / torch.compile bf16;
- engine in memory: uint16 (z, y, x) array -> uint8 labels, default settings, and with --compile on;
  MONAI sliding_window_inference (roi 256, overlap 0.25, gaussian, sw_batch_size 16) on the same volume;
- engine file to file (the whole predict_volume call): TIFF -> TIFF, HDF5 -> HDF5 (default gzip),
  Zarr -> Zarr;
- CLI: `bone-avizo predict` on a --cli-slices x --cli-size^2 uint16 TIFF, wall time from process start
  and the process's peak RSS (polled), with a warm and a cold compile cache where compile runs;
- agreement: labels of the default precision, fp16 and bf16 weights vs fp32 with the shipped model on a phantom.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_iou import run_cli_child  # noqa: E402
from bench_predict import emit, machine, synthetic_scan, unet_resnet18  # noqa: E402

from bone_avizo.config import PredictConfig  # noqa: E402
from bone_avizo.io import create_writer, open_volume  # noqa: E402
from bone_avizo.predict import predict_volume  # noqa: E402
from bone_avizo.predict.backends import resolve_precision  # noqa: E402
from bone_avizo.volume import VolumeInfo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "bone-bp-unet-resnet18.safetensors"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeat: int = 3) -> float:
    """Best wall time of ``fn`` over ``repeat`` runs after one warm-up, device work included."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def network_bound(args, device: torch.device) -> dict:
    """Forward + argmax of the bare network on a device-resident batch, several precisions."""
    module = unet_resnet18().module.eval().to(device).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    voxels = x.numel()
    variants = {"fp32": (module, torch.float32)}
    if device.type == "cuda":
        variants["fp16 weights"] = (_copy_as(module, torch.float16), torch.float16)
    variants["bf16 weights"] = (_copy_as(module, torch.bfloat16), torch.bfloat16)
    if args.compile:
        variants["torch.compile bf16 weights"] = (torch.compile(_copy_as(module, torch.bfloat16), dynamic=False),
                                                  torch.bfloat16)
    rows = {}
    with torch.inference_mode():
        for name, (net, dtype) in variants.items():
            inp = x.to(dtype)
            t = time.perf_counter()
            net(inp).argmax(1).to(torch.uint8)  # the first call compiles
            _sync(device)
            first = time.perf_counter() - t
            seconds = _timed(lambda: net(inp).argmax(1).to(torch.uint8), device)
            rows[name] = {"mvoxel_per_s": voxels / seconds / 1e6, "first_call_s": round(first, 2)}
    return rows


def _copy_as(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    import copy
    return copy.deepcopy(module).to(dtype)


def _monai(volume: np.ndarray, loaded, device: torch.device) -> float:
    from monai.inferers import sliding_window_inference
    from bone_avizo.data.normalize import normalize, scan_stats
    from bone_avizo.io.base import ArraySource
    model = loaded.module.to(device).eval()
    t = time.perf_counter()
    stats = scan_stats(ArraySource(volume))
    with torch.inference_mode():
        for z0 in range(0, volume.shape[0], 16):
            x = normalize(torch.from_numpy(volume[z0:z0 + 16].astype(np.float32)).to(device), stats, "zscore")
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                out = sliding_window_inference(x[:, None], (256, 256), 16, model, overlap=0.25, mode="gaussian")
            out.argmax(1).to(torch.uint8).cpu()
    _sync(device)
    return time.perf_counter() - t


def repeated_scan(shape, slab: int = 16, seed: int = 0) -> np.ndarray:
    """A (z, y, x) uint16 scan made of one phantom slab repeated with fresh noise (a phantom of 512 x 1024^2
    would take minutes to generate)."""
    base = synthetic_scan((min(slab, shape[0]), *shape[1:]), seed=seed)
    rng = np.random.default_rng(seed)
    volume = np.empty(shape, np.uint16)
    for z0 in range(0, shape[0], slab):
        n = min(slab, shape[0] - z0)
        volume[z0:z0 + n] = base[:n] + rng.integers(0, 64, (n, *shape[1:]), dtype=np.uint16)
    return volume


def engine_rows(args, device: torch.device, tmp: Path) -> dict:
    loaded = unet_resnet18()
    shape = (args.slices, args.size, args.size)
    volume = repeated_scan(shape)
    voxels = volume.size
    base = PredictConfig(device=str(device))
    rows: dict[str, dict] = {}

    def run(name, source, cfg, output=None):
        t = time.perf_counter()
        result = predict_volume(source, loaded, cfg, output=output, overwrite=True)
        seconds = time.perf_counter() - t
        rows[name] = {"mvoxel_per_s": voxels / seconds / 1e6, "seconds": round(seconds, 3),
                      "backend": result.backend, "batch": result.batch_size, "tile": result.tile,
                      "slab_slices": result.slab_slices, "device": result.device,
                      "precision": (resolve_precision(cfg.precision, torch.device(result.device.split(",")[0]))
                                    if result.backend == "torch" else "fp32"),
                      "compile": cfg.compile, "statistics": result.statistics}

    predict_volume(volume[:max(2, args.slices // 8)], loaded, base)  # warm-up: kernels, allocator
    run("engine in memory, default", volume, base)
    if args.compile:
        compiled = PredictConfig(device=str(device), backend="torch", compile="on")
        run("engine in memory, compile on (first: compiles)", volume, compiled)
        run("engine in memory, compile on (warm)", volume, compiled)
    t = _monai(volume, loaded, device)
    rows["MONAI sliding_window_inference, in memory"] = {"mvoxel_per_s": voxels / t / 1e6, "seconds": round(t, 3)}
    info = VolumeInfo(shape, np.uint16, voxel_size=(0.02, 0.02, 0.02), name="scan")
    for fmt, suffix in (("TIFF", ".tif"), ("HDF5", ".h5"), ("Zarr", ".zarr")):
        src = tmp / f"scan{suffix}"
        with create_writer(src, info, overwrite=True) as writer:
            writer.write_slab(0, volume)
        with open_volume(src) as source:
            run(f"engine file to file, {fmt} -> {fmt}", source, base, output=tmp / f"labels{suffix}")
        if fmt == "TIFF":  # what the sampled statistics (default for large scans) save on the GPU
            with open_volume(src) as source:
                run("engine file to file, TIFF -> TIFF, statistics exact", source,
                    PredictConfig(device=str(device), statistics="exact"), output=tmp / f"labels{suffix}")
    return rows


def cli_row(args, tmp: Path) -> dict:
    """`bone-avizo predict` on a large uint16 TIFF: wall time from process start, peak RSS (the process's
    own VmHWM, and polled)."""
    shape = (args.cli_slices, args.cli_size, args.cli_size)
    src = tmp / "big.tif"
    info = VolumeInfo(shape, np.uint16, voxel_size=(0.02, 0.02, 0.02), name="big")
    slab = synthetic_scan((min(16, shape[0]), *shape[1:]))
    with create_writer(src, info, overwrite=True) as writer:
        for z0 in range(0, shape[0], len(slab)):
            writer.write_slab(z0, slab[:shape[0] - z0])
    rows = {}
    runs = [("default", [])]
    if args.compile:
        compiled = ["--backend", "torch", "--compile", "on"]
        runs += [("compile on (cold cache)", compiled), ("compile on (warm cache)", compiled)]
    for name, extra in runs:
        args_ = ["-q", "predict", "--model", str(SHIPPED), "--input", str(src), "--output", str(tmp / "big_labels.tif"),
                 "--overwrite", "--device", args.device, *extra]
        env = dict(os.environ)
        if "compile" in name:  # a fresh cache: the first run fills it, the second finds it warm
            env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        run = run_cli_child(args_, env=env)
        rows[name] = {"wall_s": round(run["seconds"], 2), "peak_rss_gb": round(run["peak_rss_gb_vmhwm"], 3),
                      "peak_rss_gb_polled": round(run["peak_rss_gb_polled"], 3), "exit": run["returncode"],
                      "mvoxel_per_s": int(np.prod(shape)) / run["seconds"] / 1e6,
                      "stderr_tail": run["stderr"][-300:] if run["returncode"] else ""}
    return {"device": args.device, "precision": "auto (fp16 on CUDA, fp32 on CPU)", "shape": shape, "input_gb": round(src.stat().st_size / 1e9, 2), "runs": rows}


def agreement(args, device: torch.device) -> dict:
    """Labels of the default precision, fp16 and bf16 vs fp32 with the shipped model on a phantom."""
    from bone_avizo.models import load_model
    from bone_avizo.phantom import PhantomConfig, make_phantom
    loaded = load_model(SHIPPED)
    image, _ = make_phantom(PhantomConfig(shape=(args.phantom_slices, args.phantom_size, args.phantom_size),
                                          seed=900, dtype="uint16"))
    ref = predict_volume(image, loaded, PredictConfig(device=str(device), backend="torch", precision="fp32"))
    rows = {}
    for precision in ("auto", "fp16", "bf16"):
        labels = predict_volume(image, loaded, PredictConfig(device=str(device), backend="torch",
                                                             precision=precision)).labels.array
        rows[precision] = float((labels == ref.labels.array).mean())
    return {"shape": image.shape, "identical_to_fp32": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--slices", type=int, default=512)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cli-slices", type=int, default=1024)
    parser.add_argument("--cli-size", type=int, default=2048)
    parser.add_argument("--phantom-slices", type=int, default=32)
    parser.add_argument("--phantom-size", type=int, default=512)
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip every torch.compile row (they take minutes on a CPU)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("bound", "engine", "cli", "agreement"))
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result = {"benchmark": "predict-gpu", "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "device": str(device), "volume": (args.slices, args.size, args.size)}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        steps = {"bound": lambda: network_bound(args, device), "engine": lambda: engine_rows(args, device, Path(tmp)),
                 "agreement": lambda: agreement(args, device), "cli": lambda: cli_row(args, Path(tmp))}
        for name, step in steps.items():
            if name in args.skip:
                continue
            t = time.perf_counter()
            try:
                result[name] = step()
            except Exception as exc:  # noqa: BLE001 - one failing row must not lose the others
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            result[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
            print(json.dumps({name: result[name]}, default=str), flush=True)
    bound = max((r["mvoxel_per_s"] for r in result.get("bound", {}).values() if isinstance(r, dict)), default=None)
    engine = result.get("engine", {})
    if bound and "engine in memory, default" in engine:
        monai = engine["MONAI sliding_window_inference, in memory"]["mvoxel_per_s"]
        result["ratios"] = {k: {"of_network_bound": v["mvoxel_per_s"] / bound, "vs_monai": v["mvoxel_per_s"] / monai}
                            for k, v in engine.items() if "mvoxel_per_s" in v}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
