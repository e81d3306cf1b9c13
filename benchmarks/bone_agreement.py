"""Agreement with BONe's whole-slice prediction on BONe-format checkpoints (2D and 2.5D).

BONe's DLFit (g4nesh/dl_fit) saves ``{'model_state': state_dict, 'metadata': {...}}`` with its GUI
names ('U-Net', mode '2D' / '2.5D', normalization 'ZScore'). A whole-slice prediction the BONe way
is: z-score the scan with the mean and standard deviation of its voxels > 0 (``(x - mean) / (std +
1e-8)``), feed each slice (2.5D: the slice and its neighbours as channels) to the network whole, and
take the argmax. This script trains two small U-Net/resnet18 models briefly on a 100 x 100 crop of
a real scan (weakly trained, as in the case that showed the problem), saves them as BONe
checkpoints, predicts the crop with ``predict_volume`` and reports the fraction of voxels whose
label equals the whole-slice prediction; 2.5D is compared on the slices that have all their
neighbours. ``padded_to_32`` repeats our prediction with the input padded to a multiple of 32, as
bone_avizo did before it asked the network whether it takes any size.

    python benchmarks/bone_agreement.py --steps 150          # prints one JSON object
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import machine  # noqa: E402
from reference_labels import reference_labels  # noqa: E402

from bone_avizo.config import PredictConfig  # noqa: E402
from bone_avizo.io import load_volume  # noqa: E402
from bone_avizo.models import build_model, load_model  # noqa: E402
from bone_avizo.predict import predict_volume  # noqa: E402
from bone_avizo.volume import Volume  # noqa: E402

SCAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "lhdl_3155_D_4_bc_trabecular_uct.tif"
CROP = (slice(50, 82), slice(40, 140), slice(60, 160))  # (z, y, x): 32 slices of 100 x 100


def bone_zscore(scan: np.ndarray) -> np.ndarray:
    """BONe's normalisation: mean and standard deviation over the voxels > 0 of the whole scan."""
    values = scan[scan > 0].astype(np.float64)
    mean, std = values.mean(), np.sqrt((values ** 2).mean() - values.mean() ** 2)
    return ((scan.astype(np.float32) - mean) / (std + 1e-8)).astype(np.float32)


def stacks(normed: np.ndarray, slices: int) -> tuple[np.ndarray, range]:
    """(n, slices, h, w) inputs of the slices that have all their neighbours, and their indices."""
    half = slices // 2
    centres = range(half, normed.shape[0] - half)
    return np.stack([normed[z - half:z + half + 1] for z in centres]), centres


def train(normed: np.ndarray, labels: np.ndarray, slices: int, steps: int, seed: int) -> torch.nn.Module:
    """A briefly trained U-Net/resnet18 (random 64 px patches, Adam, cross-entropy)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs, centres = stacks(normed, slices)
    targets = labels[list(centres)]
    model = build_model("unet", "resnet18", in_channels=slices, num_classes=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        picks = rng.integers(0, len(inputs), 8)
        y0, x0 = rng.integers(0, normed.shape[1] - 64, 8), rng.integers(0, normed.shape[2] - 64, 8)
        x = torch.from_numpy(np.stack([inputs[i, :, a:a + 64, b:b + 64] for i, a, b in zip(picks, y0, x0)]))
        y = torch.from_numpy(np.stack([targets[i, a:a + 64, b:b + 64] for i, a, b in zip(picks, y0, x0)])).long()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def save_bone_checkpoint(path: Path, model: torch.nn.Module, slices: int) -> Path:
    metadata = {"model_arch": "U-Net", "backbone": "resnet18", "num_classes": 2, "in_channels": slices,
                "patch_size": 64, "normalization": "ZScore", "mode": "2D" if slices == 1 else "2.5D",
                "is_3d": False, "random_seed": 0, "train_dataset": [SCAN.name], "val_dataset": []}
    torch.save({"model_state": model.state_dict(), "metadata": metadata}, path)
    return path


def whole_slice_labels(model: torch.nn.Module, normed: np.ndarray, slices: int) -> tuple[np.ndarray, range]:
    inputs, centres = stacks(normed, slices)
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(inputs[i:i + 4])) for i in range(0, len(inputs), 4)])
    return logits.argmax(1).numpy().astype(np.uint8), centres


def agreement(path: Path, scan: np.ndarray, reference: np.ndarray, centres: range) -> dict:
    loaded = load_model(path)
    config = PredictConfig(device="cpu", backend="torch", threads=2)
    ours = predict_volume(Volume(scan), loaded, config).labels.array[list(centres)]
    loaded.module.requires_divisible_input_shape = True  # the previous behaviour: pad to a multiple of 32
    padded = predict_volume(Volume(scan), loaded, config).labels.array[list(centres)]
    return {"agreement": float((ours == reference).mean()), "padded_to_32": float((padded == reference).mean()),
            "voxels": int(reference.size), "bone_fraction": float(reference.mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
    args = parser.parse_args(argv)
    if not SCAN.is_file():
        print(f"{SCAN} is absent: this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    scan = np.ascontiguousarray(load_volume(SCAN).array[CROP])
    labels, _ = reference_labels(scan)
    normed = bone_zscore(scan)
    result = {"benchmark": "bone-agreement", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "scan": f"{SCAN.name}{[(s.start, s.stop) for s in CROP]}", "steps": args.steps, "cases": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, slices in (("2D", 1), ("2.5D", 3)):
            model = train(normed, labels, slices, args.steps, seed=0)
            path = save_bone_checkpoint(Path(folder) / f"bone_{slices}.pth", model, slices)
            reference, centres = whole_slice_labels(model, normed, slices)
            result["cases"][name] = agreement(path, scan, reference, centres)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
