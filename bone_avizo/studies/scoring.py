"""Scoring a study task: predict its test scans with the task's model, score each against its labels, pool."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bone_avizo._memory import PeakMemory
from bone_avizo.config import IoUConfig, PredictConfig
from bone_avizo.data.scans import ScanSpec
from bone_avizo.metrics.iou import IoUResult, nan_to_none
from bone_avizo.models.metadata import label_count
from bone_avizo.runtime import SINGLE
from bone_avizo.studies.records import MODEL_FILE, PREDICTIONS_FOLDER


def confusion_scores(confusion, class_names: Sequence[str]) -> dict[str, Any]:
    """Mean IoU (all classes, BONe's), mean foreground IoU and per-class IoU of a confusion matrix
    (rows = reference, columns = prediction), as the IoU module scores it (a class absent from the
    reference is not scored); undefined values are None."""
    result = IoUResult(confusion=np.asarray(confusion, np.int64), class_names=tuple(class_names))
    return {"mean_iou": result.mean_iou, "mean_iou_fg": result.mean_iou_foreground,
            "iou": {name: nan_to_none(float(v)) for name, v in zip(class_names, result.iou)}}


def pooled_confusion(entries: Sequence[dict[str, Any]]) -> np.ndarray:
    """The sum of the confusion matrices of several scans (padded to the largest class count)."""
    n = max(len(e["confusion"]) for e in entries)
    total = np.zeros((n, n), np.int64)
    for entry in entries:
        cm = np.asarray(entry["confusion"], np.int64)
        total[:cm.shape[0], :cm.shape[1]] += cm
    return total


@dataclass
class _ScanScore:
    entry: dict[str, Any]
    seconds: float
    voxels: int


def _score_scan(spec: ScanSpec, loaded, config: PredictConfig, iou_config: IoUConfig, folder: Path,
                keep: bool) -> _ScanScore:
    from bone_avizo.io import open_volume
    from bone_avizo.metrics import compute_iou
    from bone_avizo.predict import predict_volume

    path = folder / PREDICTIONS_FOLDER / f"{spec.name}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_volume(spec.image, **spec.image_options) as source:
        predicted = predict_volume(source, loaded, config, output=path, overwrite=True, ranks=SINGLE)
    try:
        with open_volume(path) as prediction, open_volume(spec.labels, **spec.label_options) as reference:
            result = compute_iou(prediction, reference, iou_config)
    finally:
        if not keep:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".json").unlink(missing_ok=True)
    voxels = int(np.prod(result.shape))
    entry = {"scan": spec.name, "confusion": result.confusion.tolist(),
             **confusion_scores(result.confusion, result.class_names),
             "predict_seconds": round(predicted.seconds, 4),
             "predict_voxels_per_s": round(voxels / max(predicted.seconds, 1e-9), 1)}
    return _ScanScore(entry, predicted.seconds, voxels)


def score_task(folder: Path, tests: Sequence[ScanSpec], config: PredictConfig, *,
               keep_predictions: bool = False) -> dict[str, Any]:
    """Predict every test scan with the task's model, score it against its labels, and pool.

    Returns {"class_names", "scans": [per-scan entries with confusion and IoU], "pooled": scores of
    the summed confusion matrices, "scan_mean_iou": mean of the scans' mean IoU, "predict": time,
    voxels/s and peak memory of the predictions}."""
    from bone_avizo.models import load_model

    loaded = load_model(folder / MODEL_FILE)
    meta = loaded.metadata
    labels = label_count(meta.num_classes)
    names = tuple(meta.class_names) if meta.class_names else tuple(f"class_{i}" for i in range(labels))
    iou_config = IoUConfig(num_classes=labels, class_names=names, per_slice=False)
    with PeakMemory(config.device) as peak:
        scores = [_score_scan(spec, loaded, config, iou_config, folder, keep_predictions) for spec in tests]
    if not keep_predictions:
        with contextlib.suppress(OSError):
            (folder / PREDICTIONS_FOLDER).rmdir()
    entries = [s.entry for s in scores]
    seconds, voxels = sum(s.seconds for s in scores), sum(s.voxels for s in scores)
    scan_means = [e["mean_iou"] for e in entries if e["mean_iou"] is not None]
    return {"class_names": list(names), "scans": entries,
            "pooled": confusion_scores(pooled_confusion(entries), names),
            "scan_mean_iou": float(np.mean(scan_means)) if scan_means else None,
            "predict": {"seconds": round(seconds, 4), "voxels": voxels,
                        "voxels_per_s": round(voxels / max(seconds, 1e-9), 1), "peak_ram_gb": peak.ram_gb,
                        "peak_vram_gb": peak.vram_gb}}
