"""Write benchmarks/results_study.md from the study's results in benchmarks/study/results/.

    python benchmarks/study/make_report.py

Tables come from cv/cv_summary.json and bench/bench.json (written by the ``cv`` and ``bench``
commands), wall times from results/timings.json, and the observations from observations.md
(written by hand after reading the tables).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = HERE.parent / "results_study.md"


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _table(rows, columns, digits=3):
    from bone_avizo.studies.report import text_table

    return text_table(rows, columns, digits=digits, markdown=True)


def _scans_section() -> str:
    record = _load(Path("/tmp/bone_avizo_study/data/scans.json")) or {}
    lines = ["| scan | source | shape (z, y, x) | labels | bone fraction |", "|---|---|---|---|---|"]
    for name, info in (record.get("phantoms") or {}).items():
        lines.append(f"| {name} | bone_avizo.phantom, seed {name[-1]} | 32 x 128 x 128 | exact (phantom), bone "
                     f"vs rest | {info['bone_fraction']:.3f} |")
    for name, info in (record.get("real") or {}).items():
        crop = " ".join(f"{a}:{b}" for a, b in info["crop"])
        lines.append(f"| {name} | ../shared/data/{info['file']}, crop [{crop}] | 32 x 128 x 128 | **weak**: "
                     f"Gaussian 1 + Otsu ({info['otsu_threshold']:.1f}) + cleanup | {info['bone_fraction_crop']:.3f} |")
    return "\n".join(lines) + "\n"


def _cv_section(cv: dict) -> str:
    from bone_avizo.studies.cv import summary_table

    options, fit = cv["options"], cv["fit"]
    folds = [dict(f, test=" ".join(f["test_scans"])) for f in cv["folds"]]
    out = [f"{options['folds']}-fold cross-validation over the 6 scans, {options['replicates']} replicates "
           f"(same folds, training seed 0 and 1), {fit['arch']}/{fit['encoder']}, patch {fit['patch_size']}, "
           f"selection `{options['selection']}` (BONe: the held-out fold also chooses the epoch).\n",
           "Mean and sample standard deviation over the 6 folds (3 folds x 2 replicates) and over the "
           "12 held-out scan scores:\n", summary_table(cv, markdown=True),
           "Per fold (mean IoU over both classes of the fold's pooled test scans):\n",
           _table(folds, ["replicate", "fold", "test", "mean_iou", "iou_bone", "best_epoch", "train_seconds",
                          "predict_voxels_per_s"]),
           "Per held-out scan:\n", _table(cv["scans"], ["replicate", "fold", "scan", "mean_iou", "iou_background",
                                                         "iou_bone"]),
           "![cv box plot](study/results/cv/cv_boxplot.png)\n"]
    return "\n".join(out)


def _bench_section(bench: dict) -> str:
    fit = bench["fit"]
    cells = bench["cells"]
    done = sorted((c for c in cells if c["status"] == "done"), key=lambda c: -(c["mean_iou"] or 0))
    skipped = [c for c in cells if c["status"] != "done"]
    by_scan = {}
    for row in bench["scans"]:
        by_scan.setdefault(row["cell"], {})[row["scan"]] = row["iou_bone"]
    per_scan = [dict(c, **{f"bone IoU {s}": by_scan.get(c["cell"], {}).get(s) for s in bench["test_scans"]})
                for c in done]
    grid = bench["grid"]
    out = [f"Grid: arch {grid['arch']} x encoder {grid['encoder']} x patch {grid['patch_size']} = {len(cells)} "
           f"cells; each trains on {', '.join(bench['train_scans'])} for {fit['epochs']} epochs x "
           f"{fit['steps_per_epoch']} steps of {fit['batch_size']} slices x {fit['patches_per_slice']} patches "
           f"(seed {fit['seed']}, random initial weights, selection `{bench['options']['selection']}`: the last "
           f"epoch is kept, the test scans are never seen) and is scored on {', '.join(bench['test_scans'])}.\n",
           "Sorted by mean IoU (both classes, test scans pooled):\n",
           _table(done, ["cell", "mean_iou", "iou_bone", "params", "gflops_patch", "train_seconds",
                         "predict_voxels_per_s", "train_peak_ram_gb", "predict_peak_ram_gb"]),
           "Bone IoU per test scan:\n",
           _table(per_scan, ["cell"] + [f"bone IoU {s}" for s in bench["test_scans"]]),
           "Skipped cells (recorded with their reason, not run):\n",
           _table(skipped, ["cell", "reason"]),
           "![IoU against prediction cost](study/results/bench/bench_tradeoff.png)\n"]
    return "\n".join(out)


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE.parents[1]))
    cv, bench = _load(RESULTS / "cv" / "cv_summary.json"), _load(RESULTS / "bench" / "bench.json")
    timings = _load(RESULTS / "timings.json") or {}
    machine = (bench or cv or {}).get("machine", {})
    observations = (HERE / "observations.md").read_text() if (HERE / "observations.md").is_file() else ""
    parts = [
        "# Small study: cross-validation and architecture benchmark on a shared 2-core CPU\n",
        "Reproduce with `python benchmarks/study/run_study.py` (data, `cv`, `bench`, this report; see "
        "docs/studies.md). Configurations: `benchmarks/study/cv.json`, `benchmarks/study/grid.json`. "
        "Merged tables, JSON summaries, figures and each task's small result files are in "
        "`benchmarks/study/results/`; models and checkpoints stay in the work folder.\n",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, torch {machine.get('torch', '?')} "
        f"with 2 threads, shared with other developers' test runs while the study ran (load average "
        f"{timings.get('load_average_at_start', '?')} at the start, {timings.get('load_average_at_end', '?')} at "
        f"the end, for 2 cores). Wall time: cv {timings.get('cv', '?')} s, bench {timings.get('bench', '?')} s, "
        f"{timings.get('total_this_run', '?')} s in all"
        + (f" ({timings['cpu_seconds_this_run']} CPU seconds)" if "cpu_seconds_this_run" in timings else "")
        + ".\n",
        "## Scans\n", _scans_section(),
        "The two classes are background (0) and bone (1): the phantoms' pores are merged into background "
        "so that phantoms and real crops share one label scheme. The real crops' references are a "
        "classical threshold pipeline (`benchmarks/reference_labels.py`), a **weak label**: IoU against "
        "them measures agreement with Otsu, not correctness.\n",
    ]
    if cv:
        parts += ["## Cross-validation (`cv`)\n", _cv_section(cv)]
    if bench:
        parts += ["## Benchmark (`bench`)\n", _bench_section(bench)]
    if observations:
        parts += [observations]
    TARGET.write_text("\n".join(parts))
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
