"""The architecture benchmark: a grid of architecture x encoder x patch size, every cell trained with
the same budget and scored on the same test scans (the benchmarking experiments of BONe's paper).

A grid is a JSON/YAML file or mapping::

    {"arch": ["unet", "fpn", "segformer"], "encoder": ["resnet18", "mit_b0"], "patch_size": [64, 128],
     "fit": {"epochs": 2, "steps_per_epoch": 20, "batch_size": 4},       # common FitConfig options
     "predict": {"backend": "torch"},                                   # optional PredictConfig options
     "selection": "heldout", "keep_predictions": false}                 # optional study options

Names are checked for the whole grid before any training (an unknown architecture or encoder is an
error); a combination that cannot be built or run (an encoder an architecture does not accept, a
patch larger than some slice) becomes a *skipped* cell with its reason. Each cell reports the
pooled and per-class IoU over the test scans, parameters, GFLOPs per patch, training time,
prediction voxels per second and peak RAM/VRAM of training and prediction; outputs are
``bench.json``, ``bench.csv`` (one row per cell), ``bench_scans.csv`` (one row per cell and test
scan) and ``bench_tradeoff.png`` (mean IoU against prediction cost). Every cell trains with the
grid's seed, so cells differ only by their architecture, encoder and patch size. Resumable cell by
cell and spread over torchrun ranks as every study (:mod:`bone_avizo.studies.tasks`).
"""
from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from bone_avizo.config import FIT_SPEC, FitConfig, Param, PredictConfig, load_config_file
from bone_avizo.data.scans import ScanSpec
from bone_avizo.errors import ConfigError
from bone_avizo.progress import ProgressCallback
from bone_avizo.runtime import Ranks
from bone_avizo.studies import report
from bone_avizo.studies.params import StudyConfig
from bone_avizo.studies.records import absolute_specs
from bone_avizo.studies.run import task_progress, train_task
from bone_avizo.studies.scoring import score_task
from bone_avizo.studies.selection import check_inner_split, selection_inputs
from bone_avizo.studies.study import StudyResult, checked_specs, execute, machine, placed, predict_options
from bone_avizo.studies.tasks import Task, load_results, read_plan, result_path, shaping_options, write_json

log = logging.getLogger(__name__)

KIND = "bench"
OUTPUTS = ("bench.json", "bench.csv", "bench_scans.csv", "bench_tradeoff.png")
GRID_AXES = ("arch", "encoder", "patch_size")


@dataclass(frozen=True)
class BenchConfig(StudyConfig):
    """Options of an architecture benchmark."""


BENCH_SPEC: tuple[Param, ...] = BenchConfig.SPEC
GRID_KEYS = GRID_AXES + ("fit", "predict") + tuple(p.name for p in BENCH_SPEC)


@dataclass(frozen=True)
class Cell:
    """One architecture x encoder x patch size of the grid."""

    arch: str
    encoder: str
    patch_size: int

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.arch}_{self.encoder}_p{self.patch_size}")

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "encoder": self.encoder, "patch_size": self.patch_size}


@dataclass(frozen=True)
class BenchGrid:
    """A checked grid: its cells (arch-major order), the common fit options, the prediction options
    (device and threads default to the fit's) and the study options."""

    cells: tuple[Cell, ...]
    fit: FitConfig
    predict: PredictConfig
    options: BenchConfig

    def axes(self) -> dict[str, list]:
        return {axis: list(dict.fromkeys(getattr(c, axis) for c in self.cells)) for axis in GRID_AXES}


def _axis(grid: Mapping[str, Any], axis: str) -> list:
    values = grid.get(axis)
    if values is None:
        raise ConfigError(f"grid: {axis!r} is missing; give a list, e.g. \"{axis}\": [...]")
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if not values:
        raise ConfigError(f"grid: {axis!r} is an empty list; give at least one value")
    return values


def _canonical(axis: str, values: list) -> list:
    from bone_avizo.models.registry import canonical_arch, canonical_encoder

    convert = {"arch": canonical_arch, "encoder": canonical_encoder,
               "patch_size": next(p for p in FIT_SPEC if p.name == "patch_size").convert}[axis]
    try:
        out = [convert(v) for v in values]
    except ConfigError as exc:
        raise ConfigError(f"grid: {exc}") from None
    repeated = sorted({str(v) for v in out if out.count(v) > 1})
    if repeated:
        raise ConfigError(f"grid: {axis} lists {', '.join(repeated)} more than once; give each value once")
    return out


def _fit_options(values: Any) -> FitConfig:
    if not isinstance(values, Mapping):
        raise ConfigError("grid: 'fit' must be a mapping of FitConfig options, e.g. {\"epochs\": 2}")
    given = sorted({str(k).replace("-", "_") for k in values} & set(GRID_AXES + ("folds", "fold")))
    if given:
        raise ConfigError(f"grid: 'fit' sets {', '.join(given)}; the grid's lists set arch, encoder and "
                          "patch_size, and a benchmark has no folds")
    fit = FitConfig.from_dict(values)
    if str(fit.weights).lower() not in ("random", "imagenet", "none", ""):
        raise ConfigError("grid: fit.weights must be random or imagenet; a model file fixes the architecture, "
                          "which a benchmark varies")
    return fit


def load_grid(source: str | Path | Mapping[str, Any], *, options=None) -> BenchGrid:
    """Read and check a grid (file path or mapping). ``options`` (a BenchConfig) replaces the grid's
    own study options. ConfigError names the first problem: unknown key, empty list, unknown
    architecture or encoder, invalid patch size, invalid fit/predict option."""
    grid = load_config_file(source) if isinstance(source, (str, Path)) else dict(source)
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"grid: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(GRID_KEYS)}")
    archs, encoders, patches = (_canonical(axis, _axis(grid, axis)) for axis in GRID_AXES)
    fit = _fit_options(grid.get("fit", {}))
    predict = grid.get("predict")
    if predict is not None and not isinstance(predict, Mapping):
        raise ConfigError("grid: 'predict' must be a mapping of PredictConfig options, e.g. {\"backend\": \"torch\"}")
    predict = PredictConfig.from_dict({"device": fit.device, "threads": fit.threads, **(predict or {})})
    if options is None:
        options = BenchConfig.from_dict({p.name: grid[p.name] for p in BENCH_SPEC if p.name in grid})
    cells = tuple(Cell(a, e, p) for a, e, p in itertools.product(archs, encoders, patches))
    return BenchGrid(cells, fit, predict, options)


# ---------------------------------------------------------------------------------------------
# which cells can run
def _scan_shapes(specs: Sequence) -> dict[str, tuple[int, int, int]]:
    from bone_avizo.io import open_volume

    shapes = {}
    for spec in specs:
        with open_volume(spec.image, **spec.image_options) as source:
            shapes[spec.name] = tuple(source.shape)
    return shapes


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:240] + "...") if len(text) > 240 else text


def probe_cell(cell: Cell, fit: FitConfig, shapes: Mapping[str, Sequence[int]]) -> str | None:
    """Why ``cell`` cannot be trained on scans of ``shapes`` (a one-line reason), or None when its
    network builds and maps a zero patch to a patch of the same size."""
    import torch

    from bone_avizo.data.scans import plane_shape
    from bone_avizo.fit.network import arch_options
    from bone_avizo.models import build_model
    from bone_avizo.predict.engine import PLANE_AXIS

    for name, shape in shapes.items():
        for plane in fit.planes:
            h, w = plane_shape(shape, PLANE_AXIS[plane])
            if cell.patch_size > min(h, w):
                return f"patch {cell.patch_size} does not fit the {h} x {w} {plane} slices of scan {name}"
    config = fit.with_(arch=cell.arch, encoder=cell.encoder, patch_size=cell.patch_size, weights="random")
    classes = max(2, config.num_classes or len(config.class_names))
    size = cell.patch_size
    try:
        module = build_model(cell.arch, cell.encoder, in_channels=config.in_channels, num_classes=classes,
                             **arch_options(config, cell.arch)).eval()
        with torch.no_grad():
            out = module(torch.zeros(1, config.in_channels, size, size))
    except Exception as exc:  # noqa: BLE001 - any failure of an incompatible combination is its reason
        return f"{type(exc).__name__}: {_one_line(exc)}"
    if tuple(out.shape[-2:]) != (size, size):
        return f"the network maps a {size} x {size} patch to {tuple(out.shape[-2:])}"
    return None


# ---------------------------------------------------------------------------------------------
# running
def _bench_tasks(grid: BenchGrid, train: Sequence, tests: Sequence, fit: FitConfig,
                predict: PredictConfig) -> list[Task]:
    """One task per cell, in grid order; every cell has the same scans, seed and budget."""
    check_inner_split(len(train), grid.options.selection, "the benchmark")
    records = {"train": [s.to_dict() for s in train], "test": [s.to_dict() for s in tests]}
    tasks = []
    for i, cell in enumerate(grid.cells):
        config = fit.with_(arch=cell.arch, encoder=cell.encoder, patch_size=cell.patch_size)
        tasks.append(Task(cell.name, i, {"kind": KIND, "cell": cell.to_dict(), **records,
                                         "selection": str(grid.options.selection),
                                         "fit": shaping_options(config.to_dict()),
                                         "predict": predict_options(predict)}))
    return tasks


def _work(grid: BenchGrid, fit: FitConfig, predict: PredictConfig, skips: Mapping[str, str],
          progress: ProgressCallback | None):
    def work(task: Task, folder: Path) -> dict[str, Any]:
        d = task.definition
        cell = d["cell"]
        if task.name in skips:
            return {"status": "skipped", "reason": skips[task.name], "cell": cell}
        train = [ScanSpec.from_dict(s) for s in d["train"]]
        tests = [ScanSpec.from_dict(s) for s in d["test"]]
        config, validation = selection_inputs(fit.with_(**cell), grid.options.selection, tests)
        figures = train_task(folder, train, validation, config, progress=task_progress(progress, task.name),
                             keep_checkpoint=grid.options.keep_checkpoints)
        scores = score_task(folder, tests, predict, keep_predictions=grid.options.keep_predictions)
        return {"status": "done", "cell": cell, "fit": figures, **scores}
    return work


def _probe_owned(grid: BenchGrid, tasks: Sequence[Task], fit: FitConfig, specs: Sequence, output: Path,
                 info) -> dict[str, str]:
    """Reasons why this rank's unfinished cells cannot run (checked before any training)."""
    shapes = _scan_shapes(specs)
    skips = {}
    for cell, task in zip(grid.cells, tasks):
        if info.owns(task.index) and not result_path(output, task.name).is_file():
            reason = probe_cell(cell, fit, shapes)
            if reason:
                log.warning("cell %s is skipped: %s", task.name, reason)
                skips[task.name] = reason
    return skips


def run_bench(grid: BenchGrid | str | Path | Mapping, train: Sequence, tests: Sequence, *, output,
              overwrite: bool = False, merge: bool = True, wait_timeout_s: float = 0.0,
              progress: ProgressCallback | None = None, ranks: Ranks | None = None) -> StudyResult:
    """Run (or resume) the benchmark ``grid`` in the folder ``output``: every cell trains on ``train``
    and is scored on ``tests`` (ScanSpecs or (image, labels) pairs). This rank (``ranks``, default from
    the environment) runs cells i % WORLD_SIZE == RANK; rank 0 merges (see :func:`bone_avizo.studies.run_cv`)."""
    grid = grid if isinstance(grid, BenchGrid) else load_grid(grid)
    train, tests = absolute_specs(checked_specs(train)), absolute_specs(checked_specs(tests, "test scans"))
    clash = sorted({s.name for s in train} & {s.name for s in tests})
    if clash:
        raise ConfigError(f"scan name(s) {', '.join(clash)} are both training and test scans; a test scan must "
                          "not be trained on (rename the files if they are different scans)")
    info, fit, predict = placed(grid.fit, grid.predict, ranks)
    tasks = _bench_tasks(grid, train, tests, fit, predict)
    output = Path(output)
    plan = {"kind": KIND, "options": grid.options.to_dict(), "grid": grid.axes(), "fit": fit.to_dict(),
            "predict": predict_options(predict), "train": [s.to_dict() for s in train],
            "test": [s.to_dict() for s in tests], "outputs": list(OUTPUTS),
            "tasks": [{"name": t.name, "definition": t.definition} for t in tasks]}
    skips = _probe_owned(grid, tasks, fit, list(train) + list(tests), output, info)
    return execute(output, plan, tasks, _work(grid, fit, predict, skips, progress), info, overwrite=overwrite,
                   merge=merge, wait_timeout_s=wait_timeout_s, merger=lambda: merge_bench(output))


def merge_bench(output) -> StudyResult:
    """Summarise the finished cells of the benchmark in ``output`` and write its outputs."""
    output = Path(output)
    plan = read_plan(output, KIND)
    tasks = [Task(t["name"], i, t["definition"]) for i, t in enumerate(plan["tasks"])]
    summary = summarise_bench(load_results(output, tasks), plan)
    return StudyResult(output, summary, _write_bench_outputs(output, summary))


# ---------------------------------------------------------------------------------------------
# summary
def _cell_row(result: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    cell = result["cell"]
    row = {"cell": result["name"], **cell, "status": result["status"], "reason": result.get("reason")}
    if result["status"] != "done":
        return row | report.flat_scores({"iou": {c: None for c in class_names}})
    fit, predict = result["fit"], result["predict"]
    gflops = fit.get("gflops_patch")
    vps = predict.get("voxels_per_s")
    return row | report.flat_scores(result["pooled"]) | {
        "scan_mean_iou": result["scan_mean_iou"], "params": fit.get("params"), "gflops_patch": gflops,
        "gflops_per_mvoxel": gflops / cell["patch_size"] ** 2 * 1e6 if gflops else None,
        "train_seconds": fit.get("train_seconds"), "epochs_run": fit.get("epochs_run"),
        "best_epoch": fit.get("best_epoch"), "best_val_score": fit.get("best_val_score"),
        "predict_voxels_per_s": vps, "predict_s_per_mvoxel": 1e6 / vps if vps else None,
        "train_peak_ram_gb": fit.get("train_peak_ram_gb"), "train_peak_vram_gb": fit.get("train_peak_vram_gb"),
        "predict_peak_ram_gb": predict.get("peak_ram_gb"), "predict_peak_vram_gb": predict.get("peak_vram_gb")}


def summarise_bench(results: Sequence[dict[str, Any]], plan: dict[str, Any]) -> dict[str, Any]:
    """One row per cell (skipped cells with their reason) and one per cell and test scan."""
    done = [r for r in results if r["status"] == "done"]
    class_names = done[0]["class_names"] if done else []
    cells = [_cell_row(r, class_names) for r in results]
    scans = [{"cell": r["name"], **r["cell"], "scan": s["scan"], **report.flat_scores(s)}
             for r in done for s in r["scans"]]
    return {"kind": KIND, "options": plan["options"], "grid": plan["grid"], "fit": plan["fit"],
            "predict": plan["predict"], "train_scans": [s["name"] for s in plan["train"]],
            "test_scans": [s["name"] for s in plan["test"]], "class_names": class_names, "cells": cells,
            "scans": scans, "machine": machine(),
            "score": "IoU over the test scans with their confusion matrices summed (pooled); scan_mean_iou is "
                     "the mean of the scans' mean IoU; GFLOPs per patch count one forward pass (1 MAC = 2 FLOPs)"}


TABLE_COLUMNS = ("cell", "status", "mean_iou", "mean_iou_fg", "params", "gflops_patch", "train_seconds",
                 "predict_voxels_per_s", "train_peak_ram_gb")


def _write_bench_outputs(output: Path, summary: dict[str, Any]) -> dict[str, Path]:
    paths = {"json": write_json(output / "bench.json", summary),
             "csv": report.write_csv(output / "bench.csv", summary["cells"]),
             "scans_csv": report.write_csv(output / "bench_scans.csv", summary["scans"])}
    fit = summary["fit"]
    paths["png"] = report.tradeoff_png(
        output / "bench_tradeoff.png", summary["cells"],
        title=f"benchmark: {len(summary['test_scans'])} test scan(s), {fit['epochs']} epoch(s) x "
              f"{fit['steps_per_epoch'] or 'all'} steps, batch {fit['batch_size']} x {fit['patches_per_slice']} "
              f"patches, selection {summary['options']['selection']}")
    return paths


def summary_table(summary: dict[str, Any], *, markdown: bool = False) -> str:
    """One row per cell: status, IoU, parameters, GFLOPs per patch, training time, voxels/s, RAM."""
    return report.text_table(summary["cells"], TABLE_COLUMNS, markdown=markdown)
