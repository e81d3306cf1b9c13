"""Reference bone labels for the real LHDL scans by a documented classical pipeline (a WEAK label).

The scans in ../shared/data have no manual segmentation. This script makes reference labels that
the DLFit real-data benchmark trains on and scores against:

1. Gaussian smoothing, sigma = 1 voxel (scipy.ndimage.gaussian_filter, float32);
2. Otsu's threshold of the smoothed values of the voxels whose raw value is > 0 (the zeros outside
   a reconstructed cylinder are left out, as in the normalisation policy); skimage's
   threshold_otsu when scikit-image is installed, else the same criterion on a 256-bin histogram
   (between-class variance maximised);
3. bone = smoothed > threshold;
4. cleanup with scipy.ndimage: 6-connected bone components smaller than ``min_size`` voxels are
   removed (noise specks), and enclosed background components smaller than ``min_size`` are
   filled (holes); larger marrow spaces stay background.

Labels are uint8: 0 background (marrow, air, outside), 1 bone. A threshold segmentation misses
partial-volume voxels at thin trabeculae and labels noise: say "weak label" wherever a figure
scored against these labels is quoted.

    python benchmarks/reference_labels.py --out /tmp/bone_refs   # writes <key>_labels.npy per scan
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SCANS = {"lhdl_ti_2923": "lhdl_Ti_2923_D_1_trabecular_uct.tif", "lhdl_3155": "lhdl_3155_D_4_bc_trabecular_uct.tif"}
SIGMA = 1.0
MIN_SIZE = 64

log = logging.getLogger("reference_labels")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (skimage when installed, else a histogram implementation)."""
    try:
        from skimage.filters import threshold_otsu
    except ImportError:
        threshold_otsu = None
    if threshold_otsu is not None:
        return float(threshold_otsu(values, nbins=bins))
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist).astype(np.float64)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without its 6-connected components smaller than ``min_size`` voxels."""
    labelled, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labelled.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labelled]


def mask_iou(prediction: np.ndarray, reference: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (NaN when both are empty)."""
    union = np.logical_or(prediction, reference).sum()
    return float(np.logical_and(prediction, reference).sum() / union) if union else float("nan")


def reference_labels(image: np.ndarray, *, sigma: float = SIGMA, min_size: int = MIN_SIZE) -> tuple[np.ndarray, dict]:
    """uint8 labels (z, y, x) (1 = bone) and a record of the pipeline's figures."""
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    inside = image > 0
    threshold = otsu_threshold(smooth[inside])
    bone = smooth > threshold
    bone = remove_small(bone, min_size)
    holes = remove_small(~bone, min_size)  # background components large enough to stay
    bone = bone | (~holes & ~bone)
    labels = bone.astype(np.uint8)
    record = {"sigma": sigma, "otsu_threshold": round(threshold, 3), "min_size": min_size,
              "bone_fraction": round(float(labels.mean()), 4),
              "bone_fraction_inside": round(float(labels[inside].mean()), 4)}
    return labels, record


def main(argv=None) -> int:
    import tifffile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/bone_refs", help="folder for <key>_labels.npy and the record")
    parser.add_argument("--data", default=str(DATA), help="folder of the real scans")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    for key, name in SCANS.items():
        image = tifffile.imread(Path(args.data) / name)
        labels, record = reference_labels(image)
        np.save(out / f"{key}.npy", image)
        np.save(out / f"{key}_labels.npy", labels)
        records[key] = dict(record, file=name, shape=list(image.shape))
        log.info("%s: %s", key, records[key])
    (out / "reference_labels.json").write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
