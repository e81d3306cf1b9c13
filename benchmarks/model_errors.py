"""Where a model's errors lie on a held-out phantom: per class, IoU, false negatives and positives,
the share of wrong voxels within 1.5 voxels (in-plane) of the true class boundary, and the true
connected components that the prediction misses entirely.

    python benchmarks/model_errors.py models/bone-bp-unet-resnet18.safetensors [--seed 900] [--tta none]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

from bone_avizo.config import PredictConfig
from bone_avizo.models import load_model
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.predict import predict_volume

NEAR = 1.5  # voxels


def class_errors(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Error figures of one class from boolean (z, y, x) masks."""
    wrong = truth ^ pred
    edge = np.stack([t ^ ndimage.binary_erosion(t) for t in truth])
    distance = np.stack([ndimage.distance_transform_edt(~e) if e.any() else np.full(e.shape, np.inf)
                         for e in edge])
    components, count = ndimage.label(truth)
    found = ndimage.maximum(pred, components, range(1, count + 1)) if count else []
    return {"iou": round(float((truth & pred).sum() / max((truth | pred).sum(), 1)), 4),
            "false_negatives": int((truth & ~pred).sum()), "false_positives": int((pred & ~truth).sum()),
            "near_boundary_share": round(float((wrong & (distance <= NEAR)).sum() / max(wrong.sum(), 1)), 4),
            "components": int(count), "components_missed": int(np.sum(np.asarray(found) == 0))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--seed", type=int, default=900, help="phantom seed (900-904 are held out)")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 256, 256])
    parser.add_argument("--tta", default="none")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    image, labels = make_phantom(PhantomConfig(shape=tuple(args.shape), seed=args.seed))
    pred = predict_volume(image, load_model(args.model), PredictConfig(device=args.device, tta=args.tta)).labels.array
    truth = labels.array
    result = {"model": args.model, "seed": args.seed, "shape": args.shape, "tta": args.tta,
              "classes": {name: class_errors(truth == c, pred == c) for c, name in ((1, "bone"), (2, "pores"))}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
