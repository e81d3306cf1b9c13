"""The GPU benchmark script runs end to end with --device cpu at tiny sizes (the code the GPU runs)."""
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_bench_gpu_runs_on_cpu_at_tiny_sizes(tmp_path, monkeypatch):
    pytest.importorskip("monai")
    pytest.importorskip("psutil")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_gpu

    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--slices", "3", "--size", "64", "--batch", "2", "--cli-slices", "3",
                           "--cli-size", "64", "--phantom-slices", "6", "--phantom-size", "64", "--no-compile",
                           "--tmp", str(tmp_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text().splitlines()[-1])
    for step in ("bound", "engine", "agreement", "cli"):
        assert "error" not in result[step], result[step]
    assert set(result["bound"]) == {"fp32", "bf16 weights"}
    engine = result["engine"]
    assert {"engine in memory, default", "MONAI sliding_window_inference, in memory",
            "engine file to file, TIFF -> TIFF", "engine file to file, HDF5 -> HDF5",
            "engine file to file, Zarr -> Zarr", "engine file to file, TIFF -> TIFF, statistics exact"} <= set(engine)
    assert engine["engine file to file, TIFF -> TIFF, statistics exact"]["statistics"] == "exact (every slice)"
    assert all(row["mvoxel_per_s"] > 0 for row in engine.values())
    assert engine["engine in memory, default"]["device"] == "cpu"
    assert engine["engine in memory, default"]["precision"] == "fp32"
    assert result["cli"]["runs"]["default"]["exit"] == 0 and result["cli"]["runs"]["default"]["peak_rss_gb"] > 0
    assert 0.9 <= result["agreement"]["identical_to_fp32"]["auto"] <= 1.0
    assert result["ratios"]["engine in memory, default"]["vs_monai"] > 0
    assert sys.modules["bench_gpu"].SHIPPED.is_file()
