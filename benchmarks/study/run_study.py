"""The documented small study: 3-fold cross-validation (2 replicates) and a 16-cell benchmark grid on
phantoms plus crops of the real LHDL scans, on a CPU with a tiny budget.

    python benchmarks/study/run_study.py                  # data, cv, bench, copy results, report
    python benchmarks/study/run_study.py --skip cv        # rerun: finished folds and cells are skipped

Heavy outputs (models, checkpoints, data) stay in the work folder (default /tmp/bone_avizo_study);
the tables, JSON summaries and figures are copied to benchmarks/study/results/{cv,bench}/ and
benchmarks/results_study.md is written from them (benchmarks/study/make_report.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCANS = ("phantom0", "phantom1", "phantom2", "phantom3", "lhdl_3155", "lhdl_ti_2923")
BENCH_TRAIN = ("phantom0", "phantom1", "phantom2", "lhdl_3155")
BENCH_TEST = ("phantom3", "lhdl_ti_2923")
COPIED = (".csv", ".json", ".png")

log = logging.getLogger("run_study")


def _pairs(data: Path, names) -> tuple[list[str], list[str]]:
    return [str(data / f"{n}.npy") for n in names], [str(data / f"{n}_labels.npy") for n in names]


def _cli(argv: list[str]) -> float:
    from bone_avizo.standalone.__main__ import main

    log.info("bone-avizo %s", " ".join(argv))
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"bone-avizo {argv[0]} failed with exit code {code}")
    return seconds


def run_cv(data: Path, work: Path) -> float:
    images, labels = _pairs(data, SCANS)
    return _cli(["cv", "--config", str(HERE / "cv.json"), "--images", *images, "--labels", *labels,
                 "--output", str(work / "cv")])


def run_bench(data: Path, work: Path) -> float:
    images, labels = _pairs(data, BENCH_TRAIN)
    test_images, test_labels = _pairs(data, BENCH_TEST)
    return _cli(["bench", "--config", str(HERE / "grid.json"), "--images", *images, "--labels", *labels,
                 "--test-images", *test_images, "--test-labels", *test_labels, "--output", str(work / "bench")])


def copy_results(work: Path, name: str) -> None:
    """The merged tables and figures (and each task's small JSON files) into results/<name>/."""
    source, target = work / name, HERE / "results" / name
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix in COPIED:
            shutil.copy2(path, target / path.name)
    for task in sorted((source / "tasks").iterdir()):
        for file in ("result.json", "trained.json", "model.safetensors.history.csv", "model.safetensors.curves.png"):
            if (task / file).is_file():
                (target / "tasks" / task.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(task / file, target / "tasks" / task.name / file)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/bone_avizo_study", help="folder for data, models and checkpoints")
    parser.add_argument("--skip", nargs="*", default=[], choices=("data", "cv", "bench"), help="parts to leave out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    work = Path(args.work)
    data = work / "data"
    timings_path = HERE / "results" / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    start = time.perf_counter()
    timings["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    if "data" not in args.skip:
        from prepare_data import main as prepare

        prepare(["--out", str(data)])
    for name, step in (("cv", run_cv), ("bench", run_bench)):
        if name in args.skip:
            continue
        timings[name] = round(step(data, work), 1)
        copy_results(work, name)
        timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    timings["total_this_run"] = round(time.perf_counter() - start, 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timings["cpu_seconds_this_run"] = round(usage.ru_utime + usage.ru_stime, 1)
    timings["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    from make_report import main as make_report

    return make_report([])


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
