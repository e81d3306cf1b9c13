"""Scan-level k-fold cross-validation with replicates (the validation of BONe's paper).

    from bone_avizo.studies import run_cv, CVConfig
    result = run_cv(scans, FitConfig(epochs=25), CVConfig(folds=5, replicates=3), output="cv_study")
    result.summary["summary"]["over_folds"]["mean_iou"]      # mean, std, min, max, n

The scans are shuffled (seeded) and cut into ``folds`` near-equal parts
(:func:`bone_avizo.data.split.kfold_splits`); the task of replicate r and fold k trains on the
other parts with seed ``seed + r`` and is scored on part k: each held-out scan is predicted
(DLPred) and scored against its labels (IoU). Replicates keep the same folds (only the training
seed changes) unless ``reshuffle`` draws new folds per replicate (repeated k-fold). Which epoch is
kept is ``selection`` (see :data:`bone_avizo.studies.selection.SELECTION_HELP`); BONe validates on the
held-out fold itself, the default here too.

Outputs in the study folder: ``cv_summary.json`` (everything), ``cv_scans.csv`` (IoU of every
held-out scan), ``cv_folds.csv`` (one row per fold and replicate), ``cv_replicates.csv``,
``cv_summary.csv`` (mean, standard deviation, min, max over folds, over scans and over
replicates for the mean IoU, the foreground mean IoU and each class) and ``cv_boxplot.png``.
The study resumes fold by fold and spreads folds over torchrun ranks (see
:mod:`bone_avizo.studies.tasks`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bone_avizo.config import FitConfig, Param, PredictConfig, param
from bone_avizo.data.scans import ScanSpec
from bone_avizo.data.split import kfold_splits
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
from bone_avizo.studies.tasks import Task, load_results, read_plan, shaping_options

log = logging.getLogger(__name__)

KIND = "cv"
OUTPUTS = ("cv_summary.json", "cv_scans.csv", "cv_folds.csv", "cv_replicates.csv", "cv_summary.csv",
           "cv_boxplot.png")

@dataclass(frozen=True)
class CVConfig(StudyConfig):
    """Options of a cross-validation study."""

    folds: int = param(5, "k-fold cross-validation over scans: number of folds (2 .. number of scans)", min=2,
                       max=1000, group="study")
    replicates: int = param(1, "repetitions of the whole cross-validation; replicate r trains with seed + r",
                            min=1, max=1000, group="study")
    reshuffle: bool = param(False, "draw new folds for every replicate (repeated k-fold, split seed + r) instead "
                            "of keeping the folds of replicate 0", group="study")


CV_SPEC: tuple[Param, ...] = CVConfig.SPEC


def cv_tasks(scans: Sequence, fit: FitConfig, options: CVConfig, predict: PredictConfig) -> list[Task]:
    """The tasks of the study, replicate-major: r0_f0, r0_f1, ..., r1_f0, ... (checked up front)."""
    n = len(scans)
    if options.folds > n:
        raise ConfigError(f"--folds {options.folds} is larger than the number of scans ({n}); give at most "
                          f"{n} folds or more scans")
    records = [s.to_dict() for s in scans]
    tasks: list[Task] = []
    for r in range(options.replicates):
        splits = kfold_splits(n, folds=options.folds, seed=fit.seed + (r if options.reshuffle else 0))
        for k, split in enumerate(splits):
            check_inner_split(len(split.train), options.selection, f"fold {k}")
            definition = {"kind": KIND, "replicate": r, "fold": k, "seed": fit.seed + r,
                          "train": [records[i] for i in split.train], "test": [records[i] for i in split.val],
                          "selection": str(options.selection),
                          "fit": shaping_options(fit.with_(seed=fit.seed + r).to_dict()),
                          "predict": predict_options(predict)}
            tasks.append(Task(f"r{r}_f{k}", len(tasks), definition))
    return tasks


def _work(fit: FitConfig, options: CVConfig, predict: PredictConfig, progress: ProgressCallback | None):
    def work(task: Task, folder: Path) -> dict[str, Any]:
        d = task.definition
        train = [ScanSpec.from_dict(s) for s in d["train"]]
        tests = [ScanSpec.from_dict(s) for s in d["test"]]
        config, validation = selection_inputs(fit.with_(seed=d["seed"]), options.selection, tests)
        figures = train_task(folder, train, validation, config, progress=task_progress(progress, task.name),
                             keep_checkpoint=options.keep_checkpoints)
        scores = score_task(folder, tests, predict, keep_predictions=options.keep_predictions)
        return {"status": "done", "replicate": d["replicate"], "fold": d["fold"], "seed": d["seed"],
                "train_scans": [s.name for s in train], "test_scans": [s.name for s in tests],
                "fit": figures, **scores}
    return work


def run_cv(scans: Sequence, fit: FitConfig | None = None, options: CVConfig | None = None, *, output,
           predict: PredictConfig | None = None, overwrite: bool = False, merge: bool = True,
           wait_timeout_s: float = 0.0, progress: ProgressCallback | None = None,
           ranks: Ranks | None = None) -> StudyResult:
    """Run (or resume) a cross-validation study of ``scans`` in the folder ``output``.

    scans: ScanSpecs or (image, labels) pairs. fit: the training options of every fold (its
    ``folds``/``fold`` must be unset). predict: options of the test-scan predictions (default: the
    fit's device and threads). ranks: this process's place in the study (default: from the
    environment, torchrun's RANK/WORLD_SIZE or SLURM's): this rank runs tasks i % WORLD_SIZE == RANK,
    each as one process; with ``merge`` rank 0 then waits for all results (``wait_timeout_s``,
    0 = no limit) and writes the summary. Returns a StudyResult (``summary`` None where not merged).
    """
    from bone_avizo.fit.network import check_architecture

    fit, options = fit or FitConfig(), options or CVConfig()
    if fit.folds:
        raise ConfigError("give the number of folds as the study's option (CVConfig.folds / --folds), not as a "
                          "fit option")
    check_architecture(fit)
    specs = absolute_specs(checked_specs(scans))
    info, fit, predict = placed(fit, predict, ranks)
    tasks = cv_tasks(specs, fit, options, predict)
    plan = {"kind": KIND, "options": options.to_dict(), "fit": fit.to_dict(), "predict": predict_options(predict),
            "scans": [s.to_dict() for s in specs], "outputs": list(OUTPUTS),
            "tasks": [{"name": t.name, "definition": t.definition} for t in tasks]}
    return execute(Path(output), plan, tasks, _work(fit, options, predict, progress), info, overwrite=overwrite,
                   merge=merge, wait_timeout_s=wait_timeout_s, merger=lambda: merge_cv(output))


def merge_cv(output) -> StudyResult:
    """Summarise the finished tasks of the cross-validation study in ``output`` and write its outputs."""
    output = Path(output)
    plan = read_plan(output, KIND)
    tasks = [Task(t["name"], i, t["definition"]) for i, t in enumerate(plan["tasks"])]
    results = load_results(output, tasks)
    summary = summarise_cv(results, plan)
    paths = _write_cv_outputs(output, summary)
    return StudyResult(output, summary, paths)


# ---------------------------------------------------------------------------------------------
# summary
def _scan_rows(results: Sequence[dict]) -> list[dict[str, Any]]:
    return [{"replicate": r["replicate"], "fold": r["fold"], "scan": s["scan"], **report.flat_scores(s)}
            for r in results for s in r["scans"]]


def _fold_rows(results: Sequence[dict]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        fit = r["fit"]
        rows.append({"replicate": r["replicate"], "fold": r["fold"], "test_scans": r["test_scans"],
                     **report.flat_scores(r["pooled"]), "scan_mean_iou": r["scan_mean_iou"],
                     "best_epoch": fit["best_epoch"], "best_val_score": fit["best_val_score"],
                     "epochs_run": fit["epochs_run"], "train_seconds": fit["train_seconds"],
                     "predict_voxels_per_s": r["predict"]["voxels_per_s"]})
    return rows


def _replicate_rows(results: Sequence[dict], class_names: Sequence[str]) -> list[dict[str, Any]]:
    from bone_avizo.studies.scoring import confusion_scores, pooled_confusion

    rows = []
    for rep in sorted({r["replicate"] for r in results}):
        mine = [r for r in results if r["replicate"] == rep]
        pooled = confusion_scores(pooled_confusion([s for r in mine for s in r["scans"]]), class_names)
        fold_means = report.describe(r["pooled"]["mean_iou"] for r in mine)
        rows.append({"replicate": rep, **report.flat_scores(pooled), "fold_mean_iou": fold_means["mean"],
                     "fold_std_iou": fold_means["std"]})
    return rows


def _stats_rows(level: str, rows: Sequence[dict], metrics: Sequence[str]) -> list[dict[str, Any]]:
    return [{"level": level, "metric": m, **report.describe(r.get(m) for r in rows)} for m in metrics]


def summarise_cv(results: Sequence[dict], plan: dict) -> dict[str, Any]:
    """Per scan, per fold, per replicate, and mean/std over folds, scans and replicates."""
    class_names = results[0]["class_names"]
    metrics = ["mean_iou", "mean_iou_fg"] + [f"iou_{c}" for c in class_names]
    scans, folds = _scan_rows(results), _fold_rows(results)
    replicates = _replicate_rows(results, class_names)
    stats = (_stats_rows("folds", folds, metrics) + _stats_rows("scans", scans, metrics)
             + _stats_rows("replicates", replicates, metrics))
    return {"kind": KIND, "options": plan["options"], "fit": plan["fit"], "predict": plan["predict"],
            "class_names": class_names, "scans": scans, "folds": folds, "replicates": replicates,
            "summary": stats, "machine": machine(), "score": "IoU of the held-out scans; 'pooled' sums the confusion matrices of a "
            "fold's (or replicate's) test scans; std is the sample standard deviation (ddof=1)",
            "tasks": [{k: r[k] for k in ("name", "replicate", "fold", "seed", "train_scans", "test_scans")}
                      | {"fit": r["fit"], "predict": r["predict"]} for r in results]}


def _write_cv_outputs(output: Path, summary: dict[str, Any]) -> dict[str, Path]:
    """Write the JSON, CSV files and the box plot of a summary; returns their paths by kind."""
    from bone_avizo.studies.tasks import write_json

    paths = {"json": write_json(output / "cv_summary.json", summary),
             "scans_csv": report.write_csv(output / "cv_scans.csv", summary["scans"]),
             "folds_csv": report.write_csv(output / "cv_folds.csv", summary["folds"]),
             "replicates_csv": report.write_csv(output / "cv_replicates.csv", summary["replicates"]),
             "summary_csv": report.write_csv(output / "cv_summary.csv", summary["summary"])}
    metrics = ["mean_iou", "mean_iou_fg"] + [f"iou_{c}" for c in summary["class_names"]]
    labels = {m: m.replace("iou_", "") if m.startswith("iou_") else m.replace("mean_iou", "mean") for m in metrics}
    groups = {labels[m]: [f.get(m) for f in summary["folds"]] for m in metrics}
    points = {labels[m]: [s.get(m) for s in summary["scans"]] for m in metrics}
    options = summary["options"]
    paths["png"] = report.boxplot_png(
        output / "cv_boxplot.png", groups, points,
        title=f"{options['folds']}-fold cross-validation x {options['replicates']} replicate(s): boxes over "
              f"folds, points = held-out scans\n({summary['fit']['arch']}/{summary['fit']['encoder']}, "
              f"patch {summary['fit']['patch_size']}, selection {options['selection']})")
    return paths


def summary_table(summary: dict[str, Any], *, markdown: bool = False) -> str:
    """The mean and standard deviation over folds and over scans, one row per metric."""
    by = {(r["level"], r["metric"]): r for r in summary["summary"]}
    metrics = list(dict.fromkeys(r["metric"] for r in summary["summary"]))
    rows = [{"metric": m, "folds mean": by[("folds", m)]["mean"], "folds std": by[("folds", m)]["std"],
             "folds min": by[("folds", m)]["min"], "folds max": by[("folds", m)]["max"],
             "scans mean": by[("scans", m)]["mean"], "scans std": by[("scans", m)]["std"]} for m in metrics]
    return report.text_table(rows, list(rows[0]), markdown=markdown)
