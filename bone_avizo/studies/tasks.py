"""The machinery every study shares: tasks spread over ranks, resumable results, barrier, merge.

A study is a list of tasks (a cross-validation fold, a benchmark cell), each identified by a name
and a fingerprint (a hash of everything that determines its result). Task ``i`` belongs to rank
``i % world_size`` (the study's :class:`~bone_avizo.runtime.Ranks`, read from torchrun's or SLURM's
variables where a study starts; one process and rank 0 without them). Each task runs alone in its
process: it is given one-process ranks explicitly; the environment is left as it is. A task's
result is a JSON file ``<output>/tasks/<name>/result.json``, written through a temporary name when
the task is finished: a rerun skips finished tasks, and a half-trained task resumes from its checkpoint.
Rank 0 waits until every task has its result file (a file barrier: the output folder must be
shared by all ranks), then merges them. Nothing a task computes depends on the rank.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bone_avizo import __version__
from bone_avizo.errors import BoneAvizoError, ConfigError, OutputExistsError, OutputWriteError
from bone_avizo.metrics.report import write_text_atomic
from bone_avizo.runtime import Ranks

log = logging.getLogger(__name__)

PLAN_FILE = "study.json"
TASKS_FOLDER = "tasks"
RESULT_FILE = "result.json"
# fit options that may change between a run and its rerun (they do not change the results)
UNSHAPING_OPTIONS = ("num_workers", "threads", "tensorboard", "plot", "cache_slices", "device", "max_classes")


class StudyIncompleteError(BoneAvizoError, RuntimeError):
    """Some tasks of a study have no result yet (merge too early, or a rank failed)."""


# one rank type for training, prediction and studies: rank, world size, local rank, is_main, owns(index)
RankInfo = Ranks


# ---------------------------------------------------------------------------------------------
# files
def _to_json_text(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON through a temporary name (undefined numbers must be None)."""
    return write_text_atomic(path, _to_json_text(data))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BoneAvizoError(f"{path} cannot be read ({exc}); delete it to recompute it") from None


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able ``data``."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def shaping_options(fit_options: dict[str, Any]) -> dict[str, Any]:
    """The fit options that shape results (those a rerun may not change)."""
    return {k: v for k, v in fit_options.items() if k not in UNSHAPING_OPTIONS}


@dataclass(frozen=True)
class Task:
    """One unit of a study: its name, its position in the study and what determines its result."""

    name: str
    index: int
    definition: dict

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.definition)


def task_folder(output: Path, name: str) -> Path:
    return Path(output) / TASKS_FOLDER / name


def result_path(output: Path, name: str) -> Path:
    return task_folder(output, name) / RESULT_FILE


def finished_result(output: Path, task: Task) -> dict | None:
    """The task's result when it is finished for the same definition, else None (a result of an
    other definition is stale and is removed)."""
    path = result_path(output, task.name)
    if not path.is_file():
        return None
    result = read_json(path)
    if result.get("fingerprint") != task.fingerprint:
        log.warning("task %s: result %s belongs to other options; it is recomputed", task.name, path)
        path.unlink()
        return None
    return result


def save_result(output: Path, task: Task, result: dict) -> Path:
    """Write the task's finished result (with its fingerprint) atomically."""
    folder = task_folder(output, task.name)
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / RESULT_FILE, dict(result, name=task.name, fingerprint=task.fingerprint))


# ---------------------------------------------------------------------------------------------
# the plan file
def study_paths(output: Path, outputs: Sequence[str]) -> list[Path]:
    """What a study writes or replaces in ``output``: the plan, the task folders and the merged ``outputs``."""
    output = Path(output)
    return [output / PLAN_FILE, output / TASKS_FOLDER, *(output / name for name in outputs)]


def prepare_output(output: Path, plan: dict, info: RankInfo, *, overwrite: bool) -> None:
    """Create the output folder and check it holds this study (or nothing); rank 0 writes the plan.

    A folder holding another study is refused unless ``overwrite``; then rank 0 removes what the new
    plan does not use (task results carry fingerprints, so a stale one is never merged)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputWriteError(f"--output {output} is a file; give a folder for the study")
    output.mkdir(parents=True, exist_ok=True)
    plan_file = output / PLAN_FILE
    if plan_file.is_file():
        previous = read_json(plan_file)
        if _comparable(previous) != _comparable(plan):
            if not overwrite:
                raise OutputExistsError(f"{output} holds another study ({_first_difference(previous, plan)}); "
                                        "give another --output, rerun with the same options, or --overwrite")
            _clear(output, plan, info)
    if info.is_main:
        write_json(plan_file, dict(plan, version=__version__))


def _comparable(plan: dict) -> dict:
    out = {k: v for k, v in plan.items() if k not in ("version", "fit")}
    out["fit"] = shaping_options(plan.get("fit", {}))
    if isinstance(out.get("options"), dict):  # what is kept on disk does not change the study
        out["options"] = {k: v for k, v in out["options"].items() if k != "keep_checkpoints"}
    return out


def _first_difference(old: dict, new: dict) -> str:
    old, new = _comparable(old), _comparable(new)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                inner = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
                return f"{key} differs in {', '.join(inner[:4])}"
            return f"{key} differs"
    return "it differs"


def _clear(output: Path, plan: dict, info: RankInfo) -> None:
    """Rank 0 removes the merged outputs and the task folders the new plan does not name; a task
    folder the new plan names is checked (and reset) by the rank that runs it."""
    if not info.is_main:
        return
    keep = {t["name"] for t in plan.get("tasks", [])}
    tasks = output / TASKS_FOLDER
    if tasks.is_dir():
        for folder in tasks.iterdir():
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder)
    for name in plan.get("outputs", []):
        (output / name).unlink(missing_ok=True)
    log.info("removed the results of the earlier study in %s", output)


def read_plan(output: Path, kind: str) -> dict:
    """The plan of the study in ``output`` (for a merge on its own)."""
    path = Path(output) / PLAN_FILE
    if not path.is_file():
        raise StudyIncompleteError(f"{output} holds no study ({PLAN_FILE} is missing); run the study first")
    plan = read_json(path)
    if plan.get("kind") != kind:
        raise ConfigError(f"{output} holds a {plan.get('kind')!r} study, not a {kind!r} study")
    return plan


# ---------------------------------------------------------------------------------------------
# barrier and merge
def _missing_tasks(output: Path, tasks: Sequence[Task]) -> list[str]:
    return [t.name for t in tasks if not result_path(output, t.name).is_file()]


def wait_for_results(output: Path, tasks: Sequence[Task], *, timeout_s: float = 0.0,
                     poll_s: float = 5.0) -> None:
    """Block until every task has its result file (written by whichever rank owns it).

    timeout_s: 0 waits without limit (under torchrun a failing rank stops the job anyway);
    otherwise StudyIncompleteError names the tasks still missing."""
    start = time.monotonic()
    last_log = start
    if timeout_s:
        poll_s = min(poll_s, max(timeout_s / 10, 0.01))
    while True:
        missing = _missing_tasks(output, tasks)
        if not missing:
            return
        now = time.monotonic()
        if timeout_s and now - start >= timeout_s:
            raise StudyIncompleteError(
                f"{len(missing)} task(s) have no result after {timeout_s:g} s: {', '.join(missing[:6])}"
                f"{' ...' if len(missing) > 6 else ''}; run the ranks that own them (RANK=i runs tasks i, "
                "i+WORLD_SIZE, ...), then merge")
        if now - last_log >= 60:
            log.info("waiting for %d task(s) of other ranks: %s", len(missing), ", ".join(missing[:6]))
            last_log = now
        time.sleep(poll_s)


def load_results(output: Path, tasks: Sequence[Task]) -> list[dict]:
    """Every task's result, checked against the task's fingerprint; StudyIncompleteError otherwise."""
    missing = _missing_tasks(output, tasks)
    if missing:
        raise StudyIncompleteError(f"{len(missing)} task(s) of the study in {output} have no result yet: "
                                   f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; run (or "
                                   "rerun) the study to finish them")
    results = []
    for task in tasks:
        result = read_json(result_path(output, task.name))
        if result.get("fingerprint") != task.fingerprint:
            raise StudyIncompleteError(f"the result of task {task.name} belongs to other options; rerun the "
                                       "study to recompute it")
        results.append(result)
    return results
