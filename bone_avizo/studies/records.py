"""The files of a study task's folder ``<output>/tasks/<name>/``.

``task.json`` (the definition and its fingerprint, written first), ``model.safetensors`` with DLFit's
checkpoint and logs beside it, ``trained.json`` (the training figures, written when training is
complete), optional ``predictions/<scan>.npy`` and finally ``result.json`` (see
:mod:`bone_avizo.studies.tasks`). A folder left by other options is emptied before the task starts again.
Scans are recorded by :meth:`bone_avizo.data.scans.ScanSpec.to_dict`.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Sequence

from bone_avizo.data.scans import ScanSpec
from bone_avizo.studies.tasks import Task, read_json, task_folder, write_json

log = logging.getLogger(__name__)

TASK_FILE = "task.json"
MODEL_FILE = "model.safetensors"
TRAINED_FILE = "trained.json"
PREDICTIONS_FOLDER = "predictions"


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
