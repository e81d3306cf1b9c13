"""CLI start-up: wall time of fresh ``python -m bone_avizo.standalone`` processes, median of a few runs.

Usage (prints one JSON object; record the figures in benchmarks/RESULTS.md, section "Start-up"):
  python benchmarks/bench_startup.py [--repeats 5] [--model models/bone-bp-unet-resnet18.safetensors]

Measured, each in a new interpreter, from just before the process is started to its exit: the
floors (``import numpy``; ``import torch``; ``import torch, segmentation_models_pytorch``, which predict
needs), ``--help``, ``iou --help``, ``predict --help``, ``info MODEL`` (the model's header), ``iou`` on two
16 x 64 x 64 uint8 TIFFs, ``avizo install`` into a throw-away Avizo root; and for ``predict`` (MODEL on a
4 x 256 x 256 uint16 TIFF) the time from process start to the first slab of the input it reads or
borrows (``first_slab_s``: its first ``read_slab`` or ``view_slab``), the time ``load_model`` took inside
that process (``model_load_s``: in a background thread that imports torch's model libraries, builds the
network and reads its weights while the statistics pass starts) and their difference, which is the start-up the issue bounds (``first_slab_minus_model_load_s``). Each row also
says whether torch was imported by the time the command ended, and the CPU time (user + system) of the
whole process (``cpu_s``), which a shared machine's load changes far less than the wall time. The load
average is recorded.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "bone-bp-unet-resnet18.safetensors"

# Runs the CLI in this process after reporting whether torch was imported (at exit) to REPORT.
_CLI = """
import atexit, json, os, sys
def _report():
    with open(os.environ["STARTUP_REPORT"], "w") as fh:
        json.dump({"torch": "torch" in sys.modules}, fh)
atexit.register(_report)
from bone_avizo.standalone.__main__ import main
sys.exit(main(sys.argv[1:]))
"""

# imports the modules named in ARGS (the floor each command stands on)
_IMPORTS = """
import importlib, json, os, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
with open(os.environ["STARTUP_REPORT"], "w") as fh:
    json.dump({"torch": "torch" in sys.modules}, fh)
"""

# ``predict`` with the first read_slab of the input and the duration of load_model recorded.
_PREDICT = """
import json, os, sys, time
times = {}
import bone_avizo.io as io
_open = io.open_volume
def first_slab(method):
    def timed(z0, z1):
        times.setdefault("first_slab", time.time())
        return method(z0, z1)
    return timed
def open_volume(*args, **kwargs):
    source = _open(*args, **kwargs)
    source.read_slab = first_slab(source.read_slab)
    source.view_slab = first_slab(source.view_slab)  # memory-mapped inputs lend views instead of reading
    return source
io.open_volume = open_volume
import bone_avizo.predict.loading as loading  # the model file's loader (no torch imported here)
_load = loading._load_model
def load_model(*args, **kwargs):
    start = time.time()
    try:
        return _load(*args, **kwargs)
    finally:
        times["model_load_s"] = time.time() - start
loading._load_model = load_model
from bone_avizo.standalone.__main__ import main
code = main(sys.argv[1:])
times["torch"] = "torch" in sys.modules
with open(os.environ["STARTUP_REPORT"], "w") as fh:
    json.dump(times, fh)
sys.exit(code)
"""


def machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_once(script: str, argv: list[str], folder: Path) -> dict:
    """Start a fresh interpreter running ``script`` with ``argv``; its report plus the wall time."""
    report = folder / "report.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "STARTUP_REPORT": str(report), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    done = subprocess.run([sys.executable, "-c", script, *argv], env=env, cwd=folder, capture_output=True,
                          text=True)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(report.read_text())
    result["wall_s"] = wall
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if "first_slab" in result:
        result["first_slab_s"] = result.pop("first_slab") - start
    return result


def median_row(script: str, argv: list[str], folder: Path, repeats: int, cleanup=None) -> dict:
    runs = []
    for _ in range(repeats):
        runs.append(run_once(script, argv, folder))
        if cleanup:
            cleanup()
    command = ("import " + ", ".join(argv)) if script is _IMPORTS else " ".join(argv)
    row = {"command": command, "torch_imported": any(r["torch"] for r in runs)}
    for key in ("wall_s", "cpu_s", "first_slab_s", "model_load_s"):
        if key in runs[0]:
            row[key] = round(statistics.median(r[key] for r in runs), 3)
    if "first_slab_s" in row and "model_load_s" in row:
        row["first_slab_minus_model_load_s"] = round(
            statistics.median(r["first_slab_s"] - r["model_load_s"] for r in runs), 3)
    return row


def make_inputs(folder: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (16, 64, 64), dtype=np.uint8)
    tifffile.imwrite(folder / "reference.tif", labels)
    tifffile.imwrite(folder / "prediction.tif", np.where(rng.random(labels.shape) < 0.1, 0, labels))
    tifffile.imwrite(folder / "scan.tif", rng.integers(0, 60000, (4, 256, 256), dtype=np.uint16),
                     photometric="minisblack")
    (folder / "avizo" / "share" / "python_script_objects").mkdir(parents=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (the median is reported)")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model file for info and predict")
    args = parser.parse_args()
    model = str(Path(args.model).resolve())
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        folder = Path(tmp)
        make_inputs(folder)

        def remove(*names):
            return lambda: [(folder / n).unlink(missing_ok=True) for n in names]

        commands = [
            (_IMPORTS, ["numpy"], None),
            (_IMPORTS, ["torch"], None),
            (_IMPORTS, ["torch", "segmentation_models_pytorch"], None),
            (_CLI, ["--help"], None),
            (_CLI, ["iou", "--help"], None),
            (_CLI, ["predict", "--help"], None),
            (_CLI, ["info", model], None),
            (_CLI, ["iou", "--prediction", "prediction.tif", "--reference", "reference.tif"], None),
            (_CLI, ["avizo", "install", "--avizo-root", "avizo"], None),
            (_PREDICT, ["predict", "--model", model, "--input", "scan.tif", "--output", "labels.tif"],
             remove("labels.tif", "labels.tif.config.json")),
        ]
        rows = [median_row(script, argv, folder, args.repeats, cleanup) for script, argv, cleanup in commands]
    print(json.dumps({"benchmark": "startup", "date": datetime.date.today().isoformat(), "machine": machine(),
                      "load_average": round(os.getloadavg()[0], 2), "repeats": args.repeats,
                      "python": sys.executable, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
