"""Running one study task: train (or resume) a model, then predict and score its test scans
(:mod:`bone_avizo.studies.scoring`), in the task's folder (:mod:`bone_avizo.studies.records`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from bone_avizo._memory import PeakMemory
from bone_avizo.config import FitConfig
from bone_avizo.data.scans import ScanSpec
from bone_avizo.progress import ProgressCallback
from bone_avizo.runtime import SINGLE
from bone_avizo.studies.records import MODEL_FILE, TRAINED_FILE, open_task_folder
from bone_avizo.studies.tasks import RankInfo, Task, finished_result, read_json, save_result, write_json

log = logging.getLogger(__name__)


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
                      progress=progress, ranks=SINGLE)
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
# the task loop
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
        result = work(task, folder)  # alone in this process: train_task and score_task run as one process
        save_result(output, task, result)
        done.append(task.name)
    return done
