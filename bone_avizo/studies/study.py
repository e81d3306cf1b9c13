"""The course every study takes: check the scans, plan the tasks, run this rank's share, merge."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bone_avizo import __version__
from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.data.scans import ScanSpec, as_specs, unique_names
from bone_avizo.errors import ConfigError, InputFileError
from bone_avizo.runtime import ranks_from_env, resolve_device
from bone_avizo.studies.run import run_tasks
from bone_avizo.studies.tasks import RankInfo, Task, prepare_output, wait_for_results

log = logging.getLogger(__name__)

# prediction options that do not change the labels predicted
PREDICT_RUNTIME_OPTIONS = ("device", "threads", "batch_size", "slab_slices", "memory_limit_gb", "resume",
                           "probabilities")


@dataclass
class StudyResult:
    """What a study call produced: the folder, the merged summary (None on ranks other than 0 or
    without merging), the files written by the merge, and the tasks this call ran."""

    output: Path
    summary: dict[str, Any] | None
    paths: dict[str, Path] = field(default_factory=dict)
    tasks_run: list[str] = field(default_factory=list)


def _disk_use(folder: str | os.PathLike) -> dict[str, int]:
    """Bytes under a study folder: {"total", "models" (*.safetensors), "checkpoints" (*.ckpt),
    "predictions" (files in predictions/ folders), "other"}."""
    use = dict.fromkeys(("total", "models", "checkpoints", "predictions", "other"), 0)
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                size = (Path(root) / name).stat().st_size
            except OSError:  # removed meanwhile
                continue
            kind = ("checkpoints" if name.endswith(".ckpt") else "models" if name.endswith(".safetensors")
                    else "predictions" if Path(root).name == "predictions" else "other")
            use[kind] += size
            use["total"] += size
    return use


def describe_disk_use(folder: str | os.PathLike) -> str:
    """``disk use of F: 120.3 MB (models 114.0 MB, checkpoints 0.0 MB, predictions 0.0 MB, other 6.3 MB)``."""
    use = _disk_use(folder)
    parts = ", ".join(f"{k} {use[k] / 1e6:.1f} MB" for k in ("models", "checkpoints", "predictions", "other"))
    return f"disk use of {folder}: {use['total'] / 1e6:.1f} MB ({parts})"


def checked_specs(scans: Sequence, what: str = "scans") -> list[ScanSpec]:
    """ScanSpecs from ScanSpecs, (image, labels) pairs or records (see :func:`as_specs`); names made unique;
    every path must exist (checked before any work)."""
    specs = as_specs(scans)
    if not specs:
        raise ConfigError(f"no {what} given; give --images and --labels")
    for spec in specs:
        for path, flag in ((spec.image, "image"), (spec.labels, "label volume")):
            if not Path(path).exists():
                raise InputFileError(f"{flag} {path} of scan {spec.name} does not exist; check the path")
    return unique_names(specs)


def machine() -> dict[str, Any]:
    """Where a study ran: CPU, cores, GPU, versions (for the record of its figures)."""
    import platform

    import torch

    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "bone_avizo": __version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def predict_options(predict: PredictConfig) -> dict[str, Any]:
    """The prediction options that shape the predicted labels (part of a task's fingerprint)."""
    return {k: v for k, v in predict.to_dict().items() if k not in PREDICT_RUNTIME_OPTIONS}


def placed(fit: FitConfig, predict: PredictConfig | None,
           ranks: RankInfo | None = None) -> tuple[RankInfo, FitConfig, PredictConfig]:
    """This rank (``ranks``, default from the environment), and the fit and prediction options on its
    device (see :func:`task_device`)."""
    info = ranks_from_env() if ranks is None else ranks
    fit = fit.with_(device=task_device(fit.device, info))
    predict = predict or PredictConfig(device=fit.device, threads=fit.threads)
    return info, fit, predict.with_(device=task_device(predict.device, info))


def task_device(device: str, ranks: RankInfo) -> str:
    """The device option of a rank's tasks, which run as one process: with several ranks, the device
    rule's choice for this rank (``auto``/``cuda`` -> the GPU of its LOCAL_RANK); else ``device`` as given."""
    return str(resolve_device(device, ranks)) if ranks.distributed else device


def execute(output: Path, plan: dict[str, Any], tasks: Sequence[Task], work: Callable[[Task, Path], dict],
            info: RankInfo, *, overwrite: bool, merge: bool, wait_timeout_s: float,
            merger: Callable[[], StudyResult]) -> StudyResult:
    """Prepare ``output`` for ``plan``, run this rank's unfinished tasks, and (rank 0, ``merge``) wait
    for every task's result and merge."""
    output = Path(output)
    prepare_output(output, plan, info, overwrite=overwrite)
    log.info("%s study in %s: %d task(s), rank %d of %d", plan["kind"], output, len(tasks), info.rank,
             info.world_size)
    ran = run_tasks(output, tasks, work, info)
    if not (merge and info.is_main):
        return StudyResult(output, None, {}, ran)
    wait_for_results(output, tasks, timeout_s=wait_timeout_s)
    result = merger()
    result.tasks_run = ran
    return result
