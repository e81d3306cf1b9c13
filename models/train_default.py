"""Reproduce the shipped default model from nothing: phantoms -> DLFit -> fp16 model file.

    python models/train_default.py --out models/bone-bp-unet-resnet18.safetensors [--device cuda --workers 8]
    python models/train_default.py ... --workdir DIR --resume     # continue an interrupted run
    python models/train_default.py --evaluate models/bone-bp-unet-resnet18.safetensors [--data ../shared/data]

Training data: seeded synthetic phantoms (bone_avizo.phantom) in BONe's Bone-Pores classes
(0 background, 1 bone, 2 pores) with varied geometry and CT effects (every third one with the
default CT settings and densities, as ``bone-avizo phantom`` and ``demo`` make them); the defaults
of this script are the shipped model's recipe (2.5D: 3 neighbouring slices). Validation on separate
phantoms (scan-level split); evaluation on held-out phantoms with seeds never used in training, and
on the real scans of ../shared/data against a classical (Gaussian + Otsu) reference, a weak label.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bone_avizo.config import FitConfig, IoUConfig, PredictConfig
from bone_avizo.fit import fit_model
from bone_avizo.io import save_volume
from bone_avizo.metrics import compute_iou
from bone_avizo.models import load_model, save_model
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.predict import predict_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_labels import DATA, mask_iou, reference_labels  # noqa: E402

TRAIN_SEEDS = range(100, 148)
VAL_SEEDS = range(200, 203)
TEST_SEEDS = range(900, 905)
REAL_SCANS = ("lhdl_3155_D_4_bc_trabecular_uct.tif", "lhdl_Ti_2923_D_1_trabecular_uct.tif",
              "simplect_mouse_femur_uct.tif")


def phantom_config(seed: int, shape=(48, 256, 256)) -> PhantomConfig:
    """Phantom settings varied per seed: noise, blur, CT artefacts, densities, cortex thickness."""
    rng = np.random.default_rng(seed)
    thin = float(rng.uniform(0.08, 0.2))
    return PhantomConfig(shape=shape, seed=seed, noise=float(rng.uniform(0.06, 0.15)),
                         blur_sigma=float(rng.uniform(0.7, 1.2)), cupping=float(rng.uniform(0.0, 0.3)),
                         ring_strength=float(rng.uniform(0.0, 0.1)),
                         trabecular_density=float(rng.uniform(0.15, 0.35)),
                         pore_density=float(rng.uniform(0.02, 0.07)),
                         cortical_thickness=(thin, thin + float(rng.uniform(0.1, 0.25))),
                         dtype=str(rng.choice(["uint8", "uint16"])))


def write_phantoms(folder: Path, seeds, shape, default_every: int = 0) -> list[tuple[Path, Path]]:
    """Phantom files of ``seeds``; every ``default_every``-th one (0: none) with the default settings
    (the geometry still comes from its seed), the others with :func:`phantom_config`'s varied ones."""
    pairs = []
    for i, seed in enumerate(seeds):
        default = default_every > 0 and i % default_every == default_every - 1
        config = PhantomConfig(shape=shape, seed=seed) if default else phantom_config(seed, shape)
        image, labels = make_phantom(config)
        pairs.append((save_volume(image, folder / f"phantom_{seed}.npy", overwrite=True),
                      save_volume(labels, folder / f"phantom_{seed}_labels.npy", overwrite=True)))
    return pairs


def train(args) -> None:
    out = Path(args.out)
    if args.scans > len(TRAIN_SEEDS):
        raise SystemExit(f"--scans: at most {len(TRAIN_SEEDS)} training phantoms, got {args.scans}")
    with contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        shape = tuple(args.shape)
        train_pairs = write_phantoms(work, TRAIN_SEEDS[:args.scans], shape, args.default_every)
        val_pairs = write_phantoms(work, VAL_SEEDS, shape)
        config = FitConfig(arch=args.arch, encoder=args.encoder, patch_size=args.patch, epochs=args.epochs,
                           steps_per_epoch=args.steps, batch_size=args.batch, patches_per_slice=args.patches,
                           class_names=("background", "bone", "pores"), loss="jaccard+ce", lr=args.lr,
                           device=args.device, num_workers=args.workers, seed=args.seed, foreground_crops=0.25,
                           extra_augment=("gamma", "noise", "blur"), plot=False, in_channels=args.in_channels,
                           weights=args.init, val_slices=args.val_slices)
        full = work / "model_fp32.safetensors"
        result = fit_model(train_pairs, config, output=full, validation=val_pairs, resume=args.resume)
        write_shipped(full, out)
        print(json.dumps({"best_epoch": result.best_epoch, "best_val_mean_iou": result.best_score,
                          "seconds": result.seconds, "output": str(out)}))


def write_shipped(full: Path, out: Path) -> None:
    """The float32 model file of a run as the shipped file: fp16 weights, card and licence in the metadata.
    Also works on the model file of an interrupted run (it holds the best epoch so far)."""
    loaded = load_model(full)
    meta = loaded.metadata.with_(extra={**loaded.metadata.extra, "model_card": "models/README.md",
                                        "licence": "MIT"})
    save_model(out, loaded.module, meta, dtype="fp16", overwrite=True)


def evaluate(args) -> None:
    """Score held-out phantoms: the default phantom settings (as the demo uses) and varied ones."""
    loaded = load_model(args.evaluate)
    summary = {"model": str(args.evaluate), "test_seeds": list(TEST_SEEDS), "shape": args.shape, "tta": args.tta}
    for kind in ("default", "varied"):
        rows = _evaluate(loaded, kind, tuple(args.shape), PredictConfig(device=args.device, tta=args.tta))
        summary[kind] = {"mean_iou": float(np.mean([r["mean_iou"] for r in rows])),
                         "per_class_iou": np.mean([r["per_class_iou"] for r in rows], axis=0).tolist(),
                         "scans": rows}
    if Path(args.data).is_dir():
        summary["real_scans_vs_weak_reference"] = evaluate_real(loaded, Path(args.data), args.device)
    print(json.dumps(summary, default=float))


def evaluate_real(loaded, data: Path, device: str) -> list[dict]:
    """Bone IoU on the real scans against the classical reference (Gaussian, Otsu, cleanup: a WEAK
    label, benchmarks/reference_labels.py). The reference has bone and background only and fills
    enclosed holes under 64 voxels, so the model's bone is scored alone and with its pores."""
    import tifffile

    rows = []
    for name in REAL_SCANS:
        if not (data / name).is_file():
            continue
        image = tifffile.imread(data / name)
        reference, record = reference_labels(image)
        t = time.perf_counter()
        pred = predict_volume(image, loaded, PredictConfig(device=device)).labels.array
        seconds = time.perf_counter() - t
        ref = reference == 1
        rows.append({"scan": name, "shape": list(image.shape), "predict_seconds": round(seconds, 1),
                     "bone_iou": round(mask_iou(pred == 1, ref), 4),
                     "bone_or_pores_iou": round(mask_iou(pred >= 1, ref), 4),
                     "bone_fraction_model": round(float((pred == 1).mean()), 4),
                     "pores_fraction_model": round(float((pred == 2).mean()), 4),
                     "bone_fraction_reference": record["bone_fraction"]})
    return rows


def _evaluate(loaded, kind: str, shape, predict: PredictConfig) -> list[dict]:
    rows = []
    for seed in TEST_SEEDS:
        config = PhantomConfig(shape=shape, seed=seed) if kind == "default" else phantom_config(seed, shape)
        image, labels = make_phantom(config)
        t = time.perf_counter()
        pred = predict_volume(image, loaded, predict).labels
        seconds = time.perf_counter() - t
        score = compute_iou(pred, labels, IoUConfig(num_classes=3, per_slice=False))
        rows.append({"seed": seed, "mean_iou": score.mean_iou,
                     "per_class_iou": [float(c) for c in score.iou], "predict_seconds": seconds})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/bone-bp-unet-resnet18.safetensors")
    parser.add_argument("--evaluate", default=None, metavar="MODEL")
    parser.add_argument("--tta", default="none", help="test-time augmentation of --evaluate (none, flips, d4)")
    parser.add_argument("--data", default=str(DATA), help="folder of the real scans scored by --evaluate")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 256, 256])
    parser.add_argument("--scans", type=int, default=36, help="training phantoms (seeds 100, 101, ...)")
    parser.add_argument("--default-every", type=int, default=3,
                        help="every N-th training phantom has the default settings (0: all varied)")
    parser.add_argument("--workdir", default=None, help="keep the phantoms and the float32 run files here")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --workdir")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--patches", type=int, default=4, help="patches per sampled slice")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-channels", type=int, default=3, help="1: 2D; 3, 5, ...: 2.5D (neighbouring slices)")
    parser.add_argument("--init", default="random", metavar="MODEL",
                        help="start from a model file (a 2D one is widened for --in-channels > 1)")
    parser.add_argument("--val-slices", type=int, default=12, help="validation slices per scan (0: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    evaluate(args) if args.evaluate else train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
