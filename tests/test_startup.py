"""CLI start-up: the light commands never import torch or segmentation_models_pytorch.

Each case runs a fresh interpreter (the real ``python -m`` entry points) and reports, at exit, which
heavy modules it had imported. Timings are measured in benchmarks/bench_startup.py, not here.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bone_avizo.standalone.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "segmentation_models_pytorch")

# runs ``python -m MODULE ARGS`` in this interpreter, then prints the heavy modules it imported
_PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _env() -> dict[str, str]:
    """This environment with the repository first on the path (the child imports this checkout)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_fresh(module: str, *args, cwd: Path | None = None,
              heavy: tuple[str, ...] = HEAVY) -> tuple[int, str, list[str]]:
    """Exit code, stdout and which of ``heavy`` ``python -m module args`` imported, in a new process."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=heavy), module, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=_env(), timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    assert lines, f"the probe did not report (exit {done.returncode}): {done.stderr[-2000:]}"
    heavy = [m for m in lines[-1][len("HEAVY="):].split(",") if m]
    return done.returncode, done.stdout, heavy


LIGHT_MODULES = ("bone_avizo.config", "bone_avizo.errors", "bone_avizo.io", "bone_avizo.metrics", "bone_avizo.phantom",
                 "bone_avizo.models", "bone_avizo.models.metadata", "bone_avizo.models.header",
                 "bone_avizo.models.onnx_cache", "bone_avizo.predict",
                 "bone_avizo.predict.distributed", "bone_avizo.runtime", "bone_avizo.fit", "bone_avizo.studies",
                 "bone_avizo.data.scans",
                 "bone_avizo.avizo", "bone_avizo.standalone.__main__")


def test_light_modules_import_no_torch():
    code = ("import importlib, sys\n"
            f"for name in {LIGHT_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


def test_the_probe_reports_what_was_imported():
    code, _, heavy = run_fresh("bone_avizo.standalone", "--help", heavy=("argparse", "torch"))
    assert code == 0 and heavy == ["argparse"]  # the probe is not blind


def test_help_imports_no_torch():
    code, out, heavy = run_fresh("bone_avizo.standalone", "--help")
    assert code == 0 and "predict" in out and "iou" in out
    assert heavy == []


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_imports_no_torch(command):
    code, out, heavy = run_fresh("bone_avizo.standalone", command, "--help")
    assert code == 0 and f"bone-avizo {command}" in out
    assert heavy == []


def test_iou_imports_no_torch(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 3, (6, 32, 32), dtype=np.uint8)
    prediction = np.where(rng.random(reference.shape) < 0.2, 0, reference).astype(np.uint8)
    tifffile.imwrite(tmp_path / "reference.tif", reference)
    tifffile.imwrite(tmp_path / "prediction.tif", prediction)
    code, out, heavy = run_fresh("bone_avizo.standalone", "iou", "--prediction", "prediction.tif",
                                 "--reference", "reference.tif", "--report", "report.json", cwd=tmp_path)
    assert code == 0 and "IoU" in out and (tmp_path / "report.json").is_file()
    assert heavy == []


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from bone_avizo.models import ModelMetadata, build_model, save_model

    meta = ModelMetadata(arch="fpn", encoder="mobilenet_v2", in_channels=1, num_classes=3, patch_size=64,
                         arch_options={"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
                         training={"train_scans": ["a"], "param_count": 7})
    module = build_model(meta.arch, meta.encoder, in_channels=1, num_classes=3, **meta.arch_options)
    return save_model(tmp_path_factory.mktemp("startup_model") / "tiny.safetensors", module, meta), module


def test_info_of_a_model_file_reads_its_header_without_torch(model_file):
    from bone_avizo.models import count_parameters
    from bone_avizo.models.modelfile import input_multiple

    path, module = model_file
    code, out, heavy = run_fresh("bone_avizo.standalone", "info", "--json", path)
    assert code == 0 and heavy == []
    info = json.loads(out)
    assert info["arch"] == "fpn" and info["num_classes"] == 3 and info["train_scans"] == ["a"]
    # the network's own figures, recorded by save_model (not training's param_count)
    assert info["parameters"] == count_parameters(module) and info["input_multiple"] == input_multiple(module) == 32


def test_header_summary_is_what_the_loaded_model_shows(model_file):
    from bone_avizo.models import header_summary, load_model, model_summary

    assert header_summary(model_file[0]) == model_summary(load_model(model_file[0]))


def test_header_summary_of_a_file_written_before_the_counts_were_recorded(model_file, tmp_path):
    from bone_avizo.models import header_summary

    data = model_file[0].read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    del header["__metadata__"]["parameters"], header["__metadata__"]["input_multiple"]
    text = json.dumps(header).encode()
    old = tmp_path / "old.safetensors"
    old.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    summary = header_summary(old)
    assert summary["parameters"] == 7  # training's param_count
    assert summary["input_multiple"] is None and summary["arch"] == "fpn"


def test_info_of_a_damaged_model_file_is_still_one_line_without_torch(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 50) + b'{"__metadata__": {}}')
    code, _, heavy = run_fresh("bone_avizo.standalone", "info", bad)
    assert code == 2 and heavy == []


@pytest.mark.parametrize("module, prefix", [("bone_avizo.standalone", ["avizo"]), ("bone_avizo.avizo", [])])
def test_avizo_install_imports_no_torch(module, prefix, tmp_path):
    root = tmp_path / "Avizo"
    (root / "share" / "python_script_objects").mkdir(parents=True)
    code, out, heavy = run_fresh(module, *prefix, "install", "--avizo-root", root)
    assert code == 0 and heavy == []
    assert (root / "share" / "python_script_objects" / "BONeInfo.pyscro").is_file()


def test_cache_list_imports_no_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("BONE_AVIZO_CACHE", str(tmp_path / "cache"))
    code, out, heavy = run_fresh("bone_avizo.standalone", "cache", "list")
    assert code == 0 and "0 file(s)" in out and heavy == []


def test_lazy_package_exports_resolve():
    import bone_avizo.fit
    import bone_avizo.models
    import bone_avizo.predict

    for package in (bone_avizo.models, bone_avizo.predict, bone_avizo.fit):
        for name in package.__all__:
            assert getattr(package, name) is not None and name in dir(package)
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            package.nonexistent  # noqa: B018
