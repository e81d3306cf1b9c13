"""The scans of the documented small study: synthetic phantoms and crops of the real LHDL scans.

Written to a work folder outside the repository (the real scans' licences are not stated, so
neither they nor anything cut from them is committed):

- ``phantom<s>.npy`` / ``phantom<s>_labels.npy``: bone phantoms (bone_avizo.phantom), seeds 0-3,
  32 x 128 x 128 voxels (z, y, x), labels reduced to two classes: 1 bone (cortex and trabeculae),
  0 everything else (the phantom's pores become 0, as a threshold labels canals);
- ``lhdl_3155.npy`` and ``lhdl_ti_2923.npy`` with ``*_labels.npy``: 32 x 128 x 128 crops of the two
  human trabecular cores in ../shared/data, labelled by benchmarks/reference_labels.py (Gaussian
  sigma = 1, Otsu, removal of components and holes under 64 voxels) computed on the whole scan
  before cropping. These are WEAK labels (a classical threshold, not a manual segmentation).

    python benchmarks/study/prepare_data.py --out /tmp/bone_avizo_study/data
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np

from bone_avizo.io import save_volume
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.volume import Volume

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
CLASS_NAMES = ("background", "bone")
PHANTOM_SHAPE = (32, 128, 128)
PHANTOM_SEEDS = (0, 1, 2, 3)
# (file, crop z, y, x): 32 x 128 x 128 from the middle of each core (inside Ti_2923's cylinder)
REAL_CROPS = {
    "lhdl_3155": ("lhdl_3155_D_4_bc_trabecular_uct.tif", (slice(84, 116), slice(36, 164), slice(36, 164))),
    "lhdl_ti_2923": ("lhdl_Ti_2923_D_1_trabecular_uct.tif", (slice(232, 264), slice(64, 192), slice(64, 192))),
}

log = logging.getLogger("prepare_data")


def _reference_labels():
    """benchmarks/reference_labels.py's pipeline (loaded from its file)."""
    spec = importlib.util.spec_from_file_location("reference_labels", ROOT / "benchmarks" / "reference_labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_labels


def _save(out: Path, name: str, image: np.ndarray, labels: np.ndarray, voxel_mm: float) -> None:
    size = (voxel_mm,) * 3
    save_volume(Volume(image, voxel_size=size, name=name), out / f"{name}.npy", overwrite=True)
    save_volume(Volume(labels.astype(np.uint8), voxel_size=size, name=f"{name}_labels", class_names=CLASS_NAMES),
                out / f"{name}_labels.npy", overwrite=True)


def phantoms(out: Path) -> dict:
    record = {}
    for seed in PHANTOM_SEEDS:
        image, labels = make_phantom(PhantomConfig(shape=PHANTOM_SHAPE, seed=seed))
        bone = labels.array == 1
        _save(out, f"phantom{seed}", image.array, bone, 0.02)
        record[f"phantom{seed}"] = {"shape": list(PHANTOM_SHAPE), "bone_fraction": round(float(bone.mean()), 4)}
    return record


def real_crops(out: Path, data: Path) -> dict:
    import tifffile

    reference_labels = _reference_labels()
    record = {}
    for key, (name, crop) in REAL_CROPS.items():
        image = tifffile.imread(data / name)
        labels, pipeline = reference_labels(image)
        _save(out, key, np.ascontiguousarray(image[crop]), labels[crop], 0.0195)
        record[key] = dict(pipeline, file=name, crop=[[s.start, s.stop] for s in crop],
                           bone_fraction_crop=round(float(labels[crop].mean()), 4))
        log.info("%s: %s", key, record[key])
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/bone_avizo_study/data")
    parser.add_argument("--data", default=str(DATA), help="folder of the real scans (../shared/data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"phantoms": phantoms(out), "real": real_crops(out, Path(args.data)), "class_names": CLASS_NAMES}
    (out / "scans.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
