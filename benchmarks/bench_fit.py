"""DLFit benchmarks: input-pipeline overhead, peak memory on large scans, real-data fit/predict.

    python benchmarks/bench_fit.py pipeline   # training steps/s vs the same steps on a pre-made batch,
                                              # on the fit's device (--device auto/cuda/cpu) at the fit defaults
    python benchmarks/bench_fit.py memory     # peak RSS training on 4 x 1 GB scans (.npy and HDF5)
    python benchmarks/bench_fit.py real       # fit on lhdl_Ti_2923, predict lhdl_3155, bone IoU (weak label)

Each part prints one JSON line of figures (and writes it to --json when given). Results are
recorded in benchmarks/results_fit.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("bench_fit")


# ---------------------------------------------------------------------------------------------
# 1. input pipeline overhead
def _phantom_scans(folder: Path, count: int, shape) -> list[tuple[Path, Path]]:
    from bone_avizo.phantom import PhantomConfig, make_phantom

    pairs = []
    for seed in range(count):
        image, labels = make_phantom(PhantomConfig(shape=shape, seed=seed))
        np.save(folder / f"p{seed}.npy", image.array)
        np.save(folder / f"p{seed}_labels.npy", labels.array)
        pairs.append((folder / f"p{seed}.npy", folder / f"p{seed}_labels.npy"))
    return pairs


class _PairedTimer:
    """Progress callback of the real training loop: after each training step it runs one step of the
    same model, loss, optimiser and precision (AMP's autocast and gradient scaler on CUDA) on one batch
    made once beforehand and kept on the device (real crops, so the compute is the same); both are
    timed under the same machine load, the device synchronised at each boundary."""

    def __init__(self, run, batch):
        self.run = run
        self.images, self.labels = (t.to(run.ctx.device) for t in batch)  # one real batch, made once
        self.train, self.premade = [], []
        self.last = time.perf_counter()

    def _sync(self) -> None:
        if self.run.ctx.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.run.ctx.device)

    def premade_step(self) -> None:
        run = self.run
        run.optimizer.zero_grad(set_to_none=True)
        with run._autocast():
            loss = run.loss_fn(run.model(self.images), self.labels)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()

    def __call__(self, done, total, message):
        self._sync()
        t0 = time.perf_counter()
        self.train.append(t0 - self.last)
        self.premade_step()
        self._sync()
        self.last = time.perf_counter()
        self.premade.append(self.last - t0)


def _paired_round(pairs, config, folder: Path, ctx) -> dict:
    """Two epochs of the real loop (``_Run.train_epoch``) on ``ctx``'s device; the second is timed step by step."""
    from bone_avizo.fit.plan import make_plan
    from bone_avizo.data.scans import as_specs
    from bone_avizo.fit.trainer import _Run
    from bone_avizo.progress import ProgressTracker

    plan = make_plan(as_specs(pairs), [], config)
    run = _Run(plan, config, ctx, folder / "unused.safetensors", {})
    try:
        run.sampler.set_epoch(1000)
        timer = _PairedTimer(run, next(iter(run.loader)))
        for epoch in range(2):
            timer.train, timer.premade = [], []
            timer._sync()
            timer.last = time.perf_counter()
            run.train_epoch(epoch, ProgressTracker(run.batches, "bench", timer))
        run.sampler.set_epoch(2)
        t0 = time.perf_counter()
        batches = sum(1 for _ in run.loader)  # the input pipeline alone, one epoch
        data = (time.perf_counter() - t0) / batches
        amp = run.use_amp
    finally:
        run.close()
    train, premade = statistics.mean(timer.train), statistics.mean(timer.premade)
    ratios = [p / t for p, t in zip(timer.premade, timer.train)]
    return {"num_workers": config.num_workers, "amp": amp, "premade_steps_per_s": round(1 / premade, 4),
            "training_steps_per_s": round(1 / train, 4), "ratio": round(premade / train, 3),
            "median_step_ratio": round(statistics.median(ratios), 3), "steps_timed": len(timer.train),
            "input_pipeline_ms_per_batch": round(data * 1000, 1)}


def bench_pipeline(args) -> dict:
    """Training steps/s vs the same steps on a pre-made batch, on the device a fit would use, at the fit
    defaults (patch, batch, precision, loader workers) unless the flags say otherwise."""
    from bone_avizo.config import FitConfig
    from bone_avizo.fit.distributed import init_distributed, shutdown
    from bone_avizo.runtime import ranks_from_env

    defaults = FitConfig()
    patch = args.patch or defaults.patch_size
    batch = args.batch or defaults.batch_size
    workers = args.workers if args.workers is not None else [defaults.num_workers]
    folder = Path(tempfile.mkdtemp(prefix="bench_fit_pipe_"))
    ctx = init_distributed(args.device, ranks_from_env())
    try:
        side = args.scan_size or 2 * patch
        pairs = _phantom_scans(folder, 2, (args.scan_slices, side, side))
        figures = {"device": str(ctx.device), "device_name": _device_name(ctx.device), "model": "unet/resnet18",
                   "patch": patch, "batch": f"{batch} slices x {defaults.patches_per_slice} patches",
                   "in_channels": defaults.in_channels, "augment": "BONe defaults", "amp_requested": defaults.amp,
                   "default_num_workers": defaults.num_workers, "scans": f"2 phantoms {args.scan_slices} x {side} x {side}",
                   "rounds": []}
        for count in workers:
            config = FitConfig(patch_size=patch, batch_size=batch, steps_per_epoch=args.steps, epochs=2,
                               val_fraction=0.0, num_workers=count, plot=False, device=args.device)
            round_ = _paired_round(pairs, config, folder, ctx)
            log.info("device %s, AMP %s, workers %d, batch %s: training %.3f steps/s, pre-made %.3f, ratio %.3f",
                     figures["device"], "on" if round_["amp"] else "off", count, figures["batch"],
                     round_["training_steps_per_s"], round_["premade_steps_per_s"], round_["ratio"])
            figures["rounds"].append(round_)
        return figures
    finally:
        shutdown(ctx)
        shutil.rmtree(folder, ignore_errors=True)


def _device_name(device) -> str:
    if device.type == "cuda":
        import torch
        return torch.cuda.get_device_name(device)
    return f"CPU, {os.cpu_count()} cores"


# ---------------------------------------------------------------------------------------------
# 2. memory on large scans
def _write_large(path: Path, shape, seed: int, *, labels: bool) -> None:
    """A (z, y, x) uint8 volume written slab by slab: smooth-ish noise, or labels 0/1/2 of it."""
    from bone_avizo.io import create_writer
    from bone_avizo.volume import VolumeInfo

    info = VolumeInfo(shape, np.uint8, name=path.stem)
    rng = np.random.default_rng(seed)
    base = rng.integers(1, 255, shape[1:], dtype=np.uint8)
    with create_writer(path, info, overwrite=True) as writer:
        for z0 in range(0, shape[0], 64):
            n = min(64, shape[0] - z0)
            slab = np.roll(base, z0, axis=1)[None].repeat(n, 0)
            slab = (slab // 86).astype(np.uint8) if labels else slab
            writer.write_slab(z0, slab)


def bench_memory(args) -> dict:
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench_fit_mem_"))
    folder.mkdir(parents=True, exist_ok=True)
    shape = (args.slices, 1024, 1024)
    try:
        pairs = []
        for k, ext in enumerate((".npy", ".npy", ".h5", ".h5")):
            image, labels = folder / f"scan{k}{ext}", folder / f"scan{k}_labels{ext}"
            _write_large(image, shape, k, labels=False)
            _write_large(labels, shape, k, labels=True)
            pairs.append((str(image), str(labels)))
        gb = sum(os.path.getsize(p) for pair in pairs for p in pair) / 1e9
        figures = {"scans": 4, "scan_shape": list(shape), "formats": ".npy (memory-mapped) x2, HDF5 x2",
                   "data_on_disk_GB": round(gb, 2), "runs": []}
        for batch in (2, 4):
            child = [sys.executable, __file__, "memory-child", "--pairs", json.dumps(pairs), "--batch", str(batch),
                     "--out", str(folder / "m.safetensors")]
            t0 = time.perf_counter()
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            run = json.loads(done.stdout.strip().splitlines()[-1])
            run.update(seconds=round(time.perf_counter() - t0, 1))
            figures["runs"].append(run)
        return figures
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def memory_child(args) -> None:
    import torch  # noqa: F401  (imported first: the baseline includes the libraries)

    from bone_avizo._memory import peak_rss_bytes
    from bone_avizo.config import FitConfig
    from bone_avizo.fit import fit_model

    after_imports = peak_rss_bytes() / 1024 ** 3
    pairs = json.loads(args.pairs)
    config = FitConfig(encoder_depth=3, decoder_channels=(16, 16, 16), patch_size=256, batch_size=args.batch,
                       steps_per_epoch=20, epochs=1, val_fraction=0.25, val_slices=4, in_channels=3, plot=False)
    result = fit_model(pairs, config, output=args.out, overwrite=True)
    print(json.dumps({"batch": f"{args.batch} slices x 4 patches of 256 px, 3 channels (2.5D)",
                      "model": "unet/resnet18 encoder_depth 3, decoder (16,16,16)",
                      "train_scans": result.metadata.training["train_scans"],
                      "val_scans": result.metadata.training["val_scans"],
                      "peak_rss_after_imports_GiB": round(after_imports, 3),
                      "peak_rss_GiB": round(peak_rss_bytes() / 1024 ** 3, 3)}))


# ---------------------------------------------------------------------------------------------
# 3. real data
def bench_real(args) -> dict:
    import torch

    from bone_avizo.config import FitConfig, PredictConfig
    from bone_avizo.fit import fit_model
    from bone_avizo.models import load_model
    from bone_avizo.predict import predict_volume

    sys.path.insert(0, str(ROOT))
    import reference_labels

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench_fit_real_"))
    reference_labels.main(["--out", str(folder)])
    refs = json.loads((folder / "reference_labels.json").read_text())
    config = FitConfig(patch_size=args.patch, batch_size=args.batch, steps_per_epoch=args.steps, epochs=args.epochs,
                       val_fraction=0.0, class_names=("background", "bone"), plot=True)
    torch.set_num_threads(os.cpu_count() or 1)
    model_path = folder / "lhdl_ti_2923.safetensors"
    t0 = time.perf_counter()
    fit = fit_model([(folder / "lhdl_ti_2923.npy", folder / "lhdl_ti_2923_labels.npy")], config,
                    output=model_path, overwrite=True)
    fit_s = time.perf_counter() - t0
    image = np.load(folder / "lhdl_3155.npy")
    ref = np.load(folder / "lhdl_3155_labels.npy")
    pred = predict_volume(image, load_model(model_path), PredictConfig(backend="torch"))
    labels = pred.labels.array
    # the classical pipeline applied to the prediction's input, for scale: Otsu vs itself is 1.0;
    # a plain global threshold at the training scan's Otsu value shows how different the scans are
    smooth = reference_labels.ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    cross = smooth > refs["lhdl_ti_2923"]["otsu_threshold"]
    bone_iou = reference_labels.mask_iou(labels == 1, ref == 1)
    cross_iou = reference_labels.mask_iou(cross, ref == 1)
    return {"train": "lhdl_Ti_2923_D_1 (495x257x257)", "test": "lhdl_3155_D_4_bc (200x200x200)",
            "model": f"unet/resnet18, patch {args.patch}, batch {args.batch}x4, {args.epochs} epochs x "
                     f"{args.steps} steps", "fit_seconds": round(fit_s, 1),
            "final_train_loss": round(fit.history[-1]["train_loss"], 4),
            "predict_seconds": round(pred.seconds, 1), "bone_iou_vs_weak_reference": round(bone_iou, 4),
            "bone_fraction_pred": round(float((labels == 1).mean()), 4),
            "bone_fraction_ref": round(float((ref == 1).mean()), 4),
            "threshold_from_training_scan_iou": round(cross_iou, 4), "workdir": str(folder)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("pipeline", "memory", "real", "memory-child"))
    parser.add_argument("--patch", type=int, default=None, help="patch edge (default: the fit default, 256; "
                        "real part: 128)")
    parser.add_argument("--batch", type=int, default=None, help="slices per batch, x 4 patches (default: the fit "
                        "default, 32; real part: 4)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="auto", help="pipeline part: auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="pipeline part: loader processes to time (default: the fit default)")
    parser.add_argument("--scan-slices", type=int, default=48, help="pipeline part: slices of each phantom scan")
    parser.add_argument("--scan-size", type=int, default=None, help="pipeline part: phantom slice edge (default 2 x patch)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=1000, help="memory part: slices of 1024 x 1024 per scan")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="memory part: keep the generated files")
    parser.add_argument("--pairs", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.part != "memory-child" else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.part == "real":
        args.patch, args.batch = args.patch or 128, args.batch or 4
    if args.part == "memory-child":
        memory_child(args)
        return 0
    figures = {"pipeline": bench_pipeline, "memory": bench_memory, "real": bench_real}[args.part](args)
    text = json.dumps(figures)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
