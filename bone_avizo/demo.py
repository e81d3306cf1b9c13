"""The end-to-end demo: a phantom scan -> the shipped model -> labels, IoU report, preview.

Everything the product does, on data it makes itself: write a seeded Bone-Pores phantom (image and
exact labels), predict it with the default model, score the prediction, and write the labels, the
IoU report (JSON/CSV), and a PNG preview (slices with the label overlay and per-slice IoU).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bone_avizo.config import IoUConfig, PredictConfig
from bone_avizo.errors import InvalidVolumeError, ModelError
from bone_avizo.io import open_volume
from bone_avizo.metrics import IoUResult, compute_iou, write_csv, write_json
from bone_avizo.metrics.plot import save_png
from bone_avizo.models import load_model
from bone_avizo.phantom import PhantomConfig, write_phantom
from bone_avizo.predict import predict_volume
from bone_avizo.progress import ProgressCallback

__all__ = ["DemoResult", "run_demo", "default_model_path"]

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "bone-bp-unet-resnet18.safetensors"
DEMO_SHAPE = (48, 256, 256)
DEMO_SEED = 2024


def default_model_path() -> Path:
    """The shipped default model: the source tree's models/ folder or the installed copy."""
    tree = Path(__file__).resolve().parents[1] / "models" / DEFAULT_MODEL_NAME
    if tree.is_file():
        return tree
    try:
        from importlib.resources import files
        installed = Path(str(files("bone_avizo.model_zoo") / DEFAULT_MODEL_NAME))
    except ModuleNotFoundError:
        installed = tree
    if not installed.is_file():
        raise ModelError(f"the default model {DEFAULT_MODEL_NAME} is not installed; reinstall bone-avizo or "
                         "pass --model FILE")
    return installed


@dataclass
class DemoResult:
    """Paths the demo wrote and its IoU result."""

    folder: Path
    files: dict[str, Path]
    iou: IoUResult
    seconds: dict[str, float] = field(default_factory=dict)


def demo_files(folder: Path) -> dict[str, Path]:
    """The files the demo writes into ``folder``, by role."""
    return {"scan": folder / "phantom_scan.tif", "reference": folder / "phantom_reference_labels.tif",
            "labels": folder / "phantom_predicted_labels.tif", "report": folder / "iou_report.json",
            "csv": folder / "iou_report.csv", "preview": folder / "preview.png"}


def run_demo(folder: str | os.PathLike, *, model: str | os.PathLike | None = None,
             shape: tuple[int, int, int] = DEMO_SHAPE, seed: int = DEMO_SEED, overwrite: bool = False,
             predict_config: PredictConfig | None = None,
             progress: ProgressCallback | None = None) -> DemoResult:
    """Run the demo into ``folder`` (created if needed); returns what was written and the scores."""
    import time

    loaded = load_model(model or default_model_path())
    stack = loaded.metadata.context_slices
    if shape[0] < stack:
        raise InvalidVolumeError(f"the demo phantom has {shape[0]} slices but the model reads stacks of {stack} "
                                 f"neighbouring slices; give --shape with Z >= {stack}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = demo_files(folder)
    seconds = {}
    t = time.perf_counter()
    write_phantom(PhantomConfig(shape=shape, seed=seed), files["scan"], files["reference"], overwrite=overwrite)
    seconds["phantom"] = time.perf_counter() - t
    t = time.perf_counter()
    with open_volume(files["scan"]) as scan:
        predict_volume(scan, loaded, predict_config or PredictConfig(),
                       output=files["labels"], overwrite=overwrite, progress=progress)
    seconds["predict"] = time.perf_counter() - t
    with open_volume(files["labels"]) as pred, open_volume(files["reference"]) as ref:
        result = compute_iou(pred, ref, IoUConfig(num_classes=3))
    write_json(result, files["report"])
    write_csv(result, files["csv"])
    if not _write_preview(files, result):
        files.pop("preview")
    return DemoResult(folder, files, result, seconds)


def _write_preview(files: dict[str, Path], result: IoUResult) -> bool:
    """A PNG: mid xy and xz slices of the scan with predicted labels overlaid, and per-slice IoU.

    Returns False (and logs why) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no preview PNG (pip install \"bone-avizo[plot]\")")
        return False
    fig = preview_figure(plt, files, result)
    try:
        save_png(fig, files["preview"], dpi=100)
    finally:
        plt.close(fig)
    return True


def plane_aspect(voxel_size, axis: int) -> float:
    """imshow's aspect (pixel height / width) of a plane read across ``axis`` of a volume with
    ``voxel_size`` (z, y, x): xy planes vy / vx, xz planes vz / vx, yz planes vz / vy."""
    rows, cols = [a for a in range(3) if a != axis]
    return float(voxel_size[rows]) / float(voxel_size[cols])


def preview_figure(plt, files: dict[str, Path], result: IoUResult):
    """The figure of :func:`_write_preview`; the slices are drawn to scale (the voxel size's aspect)."""
    with open_volume(files["scan"]) as scan, open_volume(files["labels"]) as labels:
        z = scan.shape[0] // 2
        y = scan.shape[1] // 2
        voxel = scan.info.voxel_size
        views = [(scan.read_plane(0, z), labels.read_plane(0, z), f"xy slice z={z}", plane_aspect(voxel, 0)),
                 (scan.read_plane(1, y), labels.read_plane(1, y), f"xz slice y={y}", plane_aspect(voxel, 1))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    colours = np.array([[0, 0, 0, 0], [1.0, 0.85, 0.1, 0.45], [0.9, 0.1, 0.9, 0.8]])
    for ax, (image, label, title, aspect) in zip(axes, views):
        ax.imshow(image, cmap="gray", aspect=aspect)
        ax.imshow(colours[np.clip(label, 0, 2)], aspect=aspect, interpolation="nearest")
        ax.set_title(f"{title}: bone yellow, pores magenta")
        ax.axis("off")
    per_slice = result.slice_scores["iou"] if result.slice_scores is not None else None
    if per_slice is not None:
        for k, name in enumerate(result.class_names):
            axes[2].plot(per_slice[:, k], label=name)
        axes[2].set_ylim(0, 1.02)
        axes[2].set_xlabel("slice (z)")
        axes[2].set_ylabel("IoU")
        axes[2].legend(loc="lower right")
    axes[2].set_title(f"per-slice IoU (mean IoU {result.mean_iou:.3f})")
    fig.tight_layout()
    return fig
