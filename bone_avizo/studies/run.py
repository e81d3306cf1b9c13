"""Running one study task: train (or resume) a model, then predict and score its test scans.

Layout of a task folder ``<output>/tasks/<name>/``: ``task.json`` (the definition and its
fingerprint, written first), ``model.safetensors`` with DLFit's checkpoint and logs beside it,
``trained.json`` (the training figures, written when training is complete), optional
``predictions/<scan>.npy`` and finally ``result.json`` (see :mod:`bone_avizo.studies.tasks`).
A folder left by other options is emptied before the task starts again.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bone_avizo._compat import StrEnum
from bone_avizo._memory import peak_rss_bytes, reset_peak_rss
from bone_avizo.config import ConfigBase, FitConfig, IoUConfig, PredictConfig, param
from bone_avizo.data.scans import ScanSpec
from bone_avizo.errors import ConfigError
from bone_avizo.metrics.iou import IoUResult, nan_to_none
from bone_avizo.progress import ProgressCallback
from bone_avizo.studies.tasks import (RankInfo, Task, finished_result, read_json, save_result, single_process_env,
                                      task_folder, write_json)

log = logging.getLogger(__name__)

TASK_FILE = "task.json"
MODEL_FILE = "model.safetensors"
TRAINED_FILE = "trained.json"
PREDICTIONS_FOLDER = "predictions"
GIB = 1024 ** 3


# ---------------------------------------------------------------------------------------------
# peak memory of a phase
class PeakMemory:
    """Peak resident memory of this process and peak CUDA memory allocated by torch during a block.

    On Linux the kernel's high-water mark is reset at the start (so earlier phases do not count);
    elsewhere the resident size is sampled every 50 ms. Data-loading worker processes are not
    included. ``ram_gb`` / ``vram_gb`` are set on exit (GiB)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.ram_gb: float | None = None
        self.vram_gb: float = 0.0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    def _cuda(self):
        import torch

        if self.device == "cpu" or not torch.cuda.is_available():
            return None
        return torch.device("cuda") if self.device in ("auto", "cuda") else torch.device(self.device)

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        while not self._stop.wait(0.05):
            self._sampled = max(self._sampled, process.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        cuda = self._cuda()
        if cuda is not None:
            import torch

            torch.cuda.reset_peak_memory_stats(cuda)
        if not reset_peak_rss():
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = self._sampled
        else:
            peak = peak_rss_bytes()
        self.ram_gb = round(peak / GIB, 4) if peak else None
        cuda = self._cuda()
        if cuda is not None:
            import torch

            self.vram_gb = round(torch.cuda.max_memory_allocated(cuda) / GIB, 4)


# ---------------------------------------------------------------------------------------------
# scans and the task folder
def spec_record(spec: ScanSpec) -> dict[str, Any]:
    """A JSON-able description of a scan (absolute paths, reader options)."""
    return {"name": spec.name, "image": str(spec.image), "labels": str(spec.labels),
            "image_options": dict(spec.image_options), "label_options": dict(spec.label_options)}


def spec_from_record(record: dict[str, Any]) -> ScanSpec:
    return ScanSpec(record["image"], record["labels"], record["name"], dict(record.get("image_options", {})),
                    dict(record.get("label_options", {})))


def absolute_specs(specs: Sequence[ScanSpec]) -> list[ScanSpec]:
    """The specs with absolute paths (the fingerprint of a task must not depend on the working folder)."""
    return [ScanSpec(Path(s.image).absolute(), Path(s.labels).absolute(), s.name, dict(s.image_options),
                     dict(s.label_options)) for s in specs]


def open_task_folder(output: Path, task: Task) -> Path:
    """The task's folder, emptied first when it was left by a task of other options."""
    folder = task_folder(output, task.name)
    marker = folder / TASK_FILE
    if folder.is_dir() and (not marker.is_file() or read_json(marker).get("fingerprint") != task.fingerprint):
        log.warning("task %s: %s holds work of other options; starting the task again", task.name, folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json(marker, {"name": task.name, "fingerprint": task.fingerprint, "definition": task.definition})
    return folder


# ---------------------------------------------------------------------------------------------
# training
def _checkpoint_complete(path: Path, config: FitConfig) -> bool:
    """True when the checkpoint already covers the run (all epochs, or stopped early)."""
    from bone_avizo.fit import load_checkpoint

    saved = load_checkpoint(path)
    if int(saved["epoch"]) >= config.epochs:
        return True
    history = saved.get("history") or []
    return bool(config.early_stopping and history and history[-1].get("val_mean_iou") is not None
                and history[-1]["epoch"] - int(saved["best_epoch"]) >= config.early_stopping)


def train_task(folder: Path, train: Sequence[ScanSpec], validation: Sequence[ScanSpec], config: FitConfig, *,
               progress: ProgressCallback | None = None, keep_checkpoint: bool = False) -> dict[str, Any]:
    """Train the task's model into ``folder`` (resuming an interrupted run); returns its figures.

    The figures come from the model file's metadata (cumulated over resumptions) and, for peak
    memory, from this process while it trained (None when the model was already trained). The
    training checkpoint (weights and optimiser state, several times the model's size) is deleted
    once the training is complete, unless ``keep_checkpoint``."""
    from bone_avizo.fit import checkpoint_path, fit_model
    from bone_avizo.models import read_metadata

    trained = folder / TRAINED_FILE
    if trained.is_file():
        return read_json(trained)
    model = folder / MODEL_FILE
    ckpt = checkpoint_path(model)
    complete = ckpt.is_file() and model.is_file() and _checkpoint_complete(ckpt, config)
    with PeakMemory(config.device) as peak:
        if not complete:
            resume = ckpt.is_file()
            if resume:
                log.info("resuming the interrupted training in %s", folder)
            fit_model(train, config, output=model, validation=validation, resume=resume, overwrite=not resume,
                      progress=progress)
    meta = read_metadata(model).training
    figures = {"best_epoch": meta.get("best_epoch"), "best_val_score": meta.get("best_val_score"),
               "epochs_run": meta.get("epochs_run"), "train_seconds": meta.get("wall_time_sec"),
               "params": meta.get("param_count"), "gflops_patch": meta.get("flops_G"),
               "train_peak_ram_gb": None if complete else peak.ram_gb,
               "train_peak_vram_gb": None if complete else peak.vram_gb,
               "train_scans": meta.get("train_scans"), "val_scans": meta.get("val_scans")}
    write_json(trained, figures)
    if not keep_checkpoint and ckpt.is_file():
        size = ckpt.stat().st_size
        ckpt.unlink()
        log.info("deleted the training checkpoint %s (%.0f MB; keep it with --keep-checkpoints)", ckpt, size / 1e6)
    return figures


# ---------------------------------------------------------------------------------------------
# scoring
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
        predicted = predict_volume(source, loaded, config, output=path, overwrite=True)
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
    names = tuple(meta.class_names) if meta.class_names else tuple(f"class_{i}" for i in range(meta.num_classes))
    iou_config = IoUConfig(num_classes=meta.num_classes, class_names=names, per_slice=False)
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


# ---------------------------------------------------------------------------------------------
# model selection and the task loop
class Selection(StrEnum):
    """Which epoch's weights a task keeps (and so which scans choose them)."""

    HELDOUT = "heldout"
    INNER = "inner"
    LAST = "last"


SELECTION_HELP = ("which epoch a task keeps: heldout = the best validation score on the task's own test "
                  "scans (BONe's cross-validation; the test scans choose the epoch, so the score is "
                  "optimistic), inner = the best score on a scan-level split of the training scans "
                  "(val_fraction; the test scans stay unseen), last = the last epoch (unseen, no "
                  "validation cost)")


@dataclass(frozen=True, kw_only=True)
class StudyConfig(ConfigBase):
    """The options every study has: how the epoch is selected, whether predictions are kept. A study's
    config derives from it; these keyword-only fields come after the study's own in its spec."""

    selection: str = param("heldout", SELECTION_HELP, choices=tuple(Selection), group="study")
    keep_predictions: bool = param(False, "keep the predicted label volumes of the test scans "
                                   "(tasks/<task>/predictions/<scan>.npy)", group="study")
    keep_checkpoints: bool = param(False, "keep each task's training checkpoint (tasks/<task>/model.safetensors.ckpt: "
                                   "weights and optimiser state, about 4x the model) after its training is complete; "
                                   "an interrupted task resumes from it either way", group="study")


def selection_inputs(config: FitConfig, selection: str, tests: Sequence[ScanSpec]
                     ) -> tuple[FitConfig, list[ScanSpec]]:
    """The fit options and validation scans of a task under ``selection``."""
    selection = Selection(selection)
    if selection is Selection.HELDOUT:
        return config.with_(folds=0, fold=0), list(tests)
    if selection is Selection.INNER:
        if config.val_fraction <= 0:
            raise ConfigError("selection 'inner' splits the training scans by val_fraction, which is 0; give "
                              "--val-fraction > 0 or another --selection")
        return config.with_(folds=0, fold=0), []
    return config.with_(folds=0, fold=0, val_fraction=0.0, early_stopping=0), []


def check_inner_split(n_train: int, selection: str, where: str) -> None:
    """ConfigError when selection 'inner' leaves a task fewer than 2 training scans to split."""
    if Selection(selection) is Selection.INNER and n_train < 2:
        raise ConfigError(f"selection 'inner' needs at least 2 training scans per task to hold one out, but "
                          f"{where} has {n_train}; add scans, use fewer folds, or --selection heldout/last")


def task_progress(progress: ProgressCallback | None, name: str) -> ProgressCallback | None:
    """``progress`` with the task's name in front of each message."""
    if progress is None:
        return None
    return lambda done, total, message: progress(done, total, f"{name}: {message}")


def run_tasks(output: Path, tasks: Sequence[Task], work: Callable[[Task, Path], dict[str, Any]],
              info: RankInfo) -> list[str]:
    """Run this rank's unfinished tasks in order (``work(task, folder) -> result``) and save each
    result; returns the names of the tasks run now."""
    done = []
    for task in tasks:
        if not info.owns(task.index):
            continue
        if finished_result(output, task) is not None:
            log.info("task %s: finished earlier, skipped", task.name)
            continue
        log.info("task %s (%d of %d) on rank %d", task.name, task.index + 1, len(tasks), info.rank)
        folder = open_task_folder(output, task)
        with single_process_env():  # the task trains and predicts alone in this process
            result = work(task, folder)
        save_result(output, task, result)
        done.append(task.name)
    return done
