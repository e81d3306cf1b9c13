"""The benchmark scripts the GPU script runs (benchmarks/bench_io.py, bench_fit.py pipeline) also run on the
CPU at tiny sizes and report what they measured."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_fit  # noqa: E402
import bench_io  # noqa: E402


def test_bench_io_runs_tiny_and_reports_every_format(tmp_path, capsys):
    out = tmp_path / "io.json"
    assert bench_io.main(["--slices", "4", "--size", "48", "--slab", "3", "--repeat", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["shape"] == [4, 48, 48] and figures["io_threads"] >= 1 and figures["machine"]
    rows = {(row["format"], row["what"].split(",")[0]) for row in figures["rows"]}
    assert {("HDF5", "write scan"), ("HDF5", "read labels"), ("TIFF", "read scan"), ("TIFF", "write labels"),
            ("Zarr", "read scan"), ("Zarr", "write labels")} <= rows
    assert all(row["before_mvox_s"] > 0 and row["after_mvox_s"] > 0 for row in figures["rows"])
    assert "threads" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_fit_pipeline_runs_on_the_cpu_at_tiny_sizes(tmp_path, capsys):
    out = tmp_path / "fit.json"
    argv = ["pipeline", "--device", "cpu", "--patch", "32", "--batch", "1", "--steps", "2", "--scan-slices", "6",
            "--json", str(out)]
    assert bench_fit.main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["patch"] == 32 and figures["default_num_workers"] == 0
    (round_,) = figures["rounds"]
    assert round_["amp"] is False and round_["num_workers"] == 0 and round_["steps_timed"] == 2
    assert round_["training_steps_per_s"] > 0 and round_["premade_steps_per_s"] > 0 and round_["ratio"] > 0


def test_bench_predict_overhead_runs_tiny_and_reports_the_engine_beyond_its_network(tmp_path):
    import bench_predict
    out = tmp_path / "overhead.json"
    argv = ["overhead", "--slices", "6", "--size", "48", "--classes", "2", "--repeat", "1", "--tmp", str(tmp_path),
            "--json", str(out)]
    assert bench_predict.main(argv) == 0
    figures = json.loads(out.read_text().splitlines()[-1])
    assert figures["shape"] == [6, 48, 48] and figures["network"] == "pointwise scaled (ScaledNet), 2 classes"
    seconds = figures["seconds"]
    assert {"TIFF -> TIFF: numpy floor", "HDF5 -> HDF5: numpy floor",
            "in memory: the network's forward passes alone, onnxruntime (cpu)"} <= set(seconds)
    assert all(value > 0 for value in seconds.values())
    assert set(figures["floor_over_engine_beyond_network"]) == {"TIFF -> TIFF", "HDF5 -> HDF5"}


def test_bench_predict_threads_runs_tiny_and_reports_a_speedup_for_every_kind_of_work(tmp_path):
    import bench_predict
    out = tmp_path / "threads.json"
    assert bench_predict.main(["threads", "--mb", "1", "--size", "32", "--repeat", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text().splitlines()[-1])
    assert len(figures["results"]) == 4 and "machine" in figures
    for result in figures["results"].values():
        assert result["one_thread_s"] > 0 and result["two_threads_s"] > 0
        assert result["speedup"] == pytest.approx(2 * result["one_thread_s"] / result["two_threads_s"])


def test_bench_startup_times_predict_to_its_first_slab_of_a_memory_mapped_input(tmp_path):
    """The start-up benchmark's predict row reports the time to the first slab even when the input is an
    uncompressed TIFF, whose slabs the engine borrows (view_slab) instead of reading."""
    import bench_startup
    bench_startup.make_inputs(tmp_path)
    argv = ["predict", "--model", str(bench_startup.SHIPPED_MODEL), "--input", "scan.tif", "--output", "labels.tif"]
    row = bench_startup.median_row(bench_startup._PREDICT, argv, tmp_path, 1)
    assert row["torch_imported"] and row["model_load_s"] > 0 and 0 < row["first_slab_s"] < row["wall_s"]
    assert "first_slab_minus_model_load_s" in row  # the model loads beside the statistics pass: may be < 0


def test_bench_statistics_io_runs_tiny_and_compares_exact_and_sampled_warm_and_cold(tmp_path):
    import bench_statistics
    out = tmp_path / "statistics.json"
    argv = ["io", "--slices", "40", "--size", "32", "--repeat", "1", "--tmp", str(tmp_path), "--json", str(out)]
    assert bench_statistics.main(argv) == 0
    figures = json.loads(out.read_text().splitlines()[-1])
    expected = {f"{kind}, {cache}: statistics pass {mode}" for kind in ("TIFF", "HDF5") for cache in ("warm", "cold")
                for mode in ("exact", "sampled")}
    assert expected <= set(figures["seconds"]) and all(v > 0 for v in figures["seconds"].values())
    assert figures["how"]["TIFF"].startswith(("exact", "sampled"))
    assert figures["engine_ran_with"] and all(" on cpu, fp32" in ran for ran in figures["engine_ran_with"])
    assert all(error <= 0.1 for error in figures["sampled_error_percent"].values())


@pytest.mark.slow
def test_bench_statistics_agreement_runs_tiny_with_a_bone_checkpoint(tmp_path):
    import bench_statistics
    out = tmp_path / "agreement.json"
    argv = ["agreement", "--slices", "8", "--size", "64", "--steps", "1", "--tmp", str(tmp_path), "--json", str(out)]
    assert bench_statistics.main(argv) == 0
    figures = json.loads(out.read_text().splitlines()[-1])
    assert figures["model"].startswith("BONe .pth") and 0.0 <= figures["label_agreement"] <= 1.0
    assert figures["how"].startswith(("exact", "sampled"))


def test_bench_predict_kernels_runs_tiny_and_compares_both_routes(tmp_path, monkeypatch):
    import bench_predict
    pytest.importorskip("numba")
    monkeypatch.setenv("BONE_AVIZO_NUMBA", "1")  # the benchmark sets and clears it itself
    out = tmp_path / "kernels.json"
    argv = ["kernels", "--slices", "3", "--size", "40", "--classes", "3", "--repeat", "1", "--json", str(out)]
    assert bench_predict.main(argv) == 0
    figures = json.loads(out.read_text().splitlines()[-1])
    assert figures["shape"] == [3, 40, 40] and len(figures["seconds"]) == 6
    assert set(figures["numba_speedup"]) == {name.rsplit(": ", 1)[0] for name in figures["seconds"]}
    assert all(value > 0 for value in figures["numba_speedup"].values())


def test_ab_overhead_compares_two_checkouts_in_turns_at_tiny_sizes(capsys):
    """The side-by-side comparison of two source trees: here the same tree twice, so both report the
    same settings; every figure is a measured time."""
    import ab_overhead
    root = Path(__file__).resolve().parents[1]
    assert ab_overhead.main([str(root), str(root), "--runs", "2", "--slices", "5", "--size", "48"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["shape"] == [5, 48, 48] and result["runs"] == 2
    engines = list(result["engine_s"].values())
    assert len(engines) == 2 and engines[0]["ran"] == engines[1]["ran"]
    assert engines[0]["ran"].startswith(("onnxruntime on cpu", "torch on cpu"))
    assert all(0 < e["best"] <= e["median"] and e["ratio_to_best_floor"] > 0 for e in engines)
    assert 0 < result["floor_s"]["best"] <= result["floor_s"]["median"]
