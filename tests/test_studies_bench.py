"""Architecture benchmark: grid checks, skipped cells, a tiny run, ranks, bad input."""
from __future__ import annotations

import pytest

from bone_avizo.config import FitConfig
from bone_avizo.errors import ConfigError
from bone_avizo.studies import Cell, load_grid, merge_bench, probe_cell, run_bench
from bone_avizo.studies.tasks import read_json
from test_studies_tasks import no_rank_env, write_phantoms  # noqa: F401 - fixture

FIT = {"encoder_depth": 3, "batch_size": 2, "steps_per_epoch": 2, "patches_per_slice": 2, "val_slices": 2,
       "epochs": 1, "plot": False, "device": "cpu"}


def _grid(**changes):
    grid = {"arch": ["unet"], "encoder": ["resnet18"], "patch_size": [32], "fit": dict(FIT),
            "predict": {"backend": "torch"}}
    grid.update(changes)
    return grid


@pytest.fixture(autouse=True)
def one_process(no_rank_env):
    return no_rank_env


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three 6 x 64 x 48 phantom scans: two to train on, one to test on."""
    return write_phantoms(tmp_path_factory.mktemp("bench_scans"), (6, 64, 48), range(20, 23), "b")


def test_grid_cells_and_options():
    grid = load_grid(_grid(arch=["Unet", "unet++"], encoder="resnet18", patch_size=[32, 64], selection="last"))
    assert [c.name for c in grid.cells] == ["unet_resnet18_p32", "unet_resnet18_p64", "unetplusplus_resnet18_p32",
                                            "unetplusplus_resnet18_p64"]
    assert grid.fit.encoder_depth == 3 and grid.options.selection == "last"
    assert (grid.predict.backend, grid.predict.device) == ("torch", "cpu")
    assert grid.axes() == {"arch": ["unet", "unetplusplus"], "encoder": ["resnet18"], "patch_size": [32, 64]}
    assert Cell("unet", "tu-convnext_tiny.fb_in1k", 64).name == "unet_tu-convnext_tiny.fb_in1k_p64"


@pytest.mark.parametrize("changes, message", [
    ({"arch": []}, "'arch' is an empty list"),
    ({"encoder": None}, "'encoder' is missing"),
    ({"arch": ["unet", "nonet"]}, "unknown architecture 'nonet'; valid architectures: unet"),
    ({"encoder": ["resnet81"]}, "unknown encoder 'resnet81'; did you mean resnet18"),
    ({"patch_size": [48]}, "patch_size .*a multiple of 32"),
    ({"arch": ["unet", "Unet"]}, "lists unet more than once"),
    ({"fit": {"arch": "fpn"}}, "'fit' sets arch"),
    ({"fit": {"epochs": 0}}, "epochs"),
    ({"fit": {"weights": "/some/model.safetensors"}}, "fit.weights must be random or imagenet"),
    ({"predict": {"tta": "sideways"}}, "tta"),
    ({"cells": []}, "unknown key\\(s\\) cells; valid keys: arch, encoder"),
])
def test_bad_grids_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_grid(_grid(**changes))


def test_grid_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("arch: [unet, fpn]\nencoder: resnet18\npatch_size: 64\nfit: {epochs: 2}\nselection: inner\n")
    grid = load_grid(path)
    assert len(grid.cells) == 2 and grid.fit.epochs == 2 and grid.options.selection == "inner"
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "missing.json")


def test_probe_names_why_a_cell_cannot_run():
    fit = FitConfig(**FIT)
    assert probe_cell(Cell("unet", "resnet18", 32), fit, {"s": (6, 64, 48)}) is None
    assert "UnetPlusPlus is not support" in probe_cell(Cell("unetplusplus", "mit_b0", 32), fit.with_(encoder_depth=5), {})
    assert "maps a 32 x 32 patch to (128, 128)" in probe_cell(Cell("fpn", "resnet18", 32), fit, {})
    reason = probe_cell(Cell("unet", "resnet18", 64), fit, {"s": (6, 64, 48)})
    assert reason == "patch 64 does not fit the 64 x 48 xy slices of scan s"


def test_a_tiny_grid_trains_scores_and_skips(scans, tmp_path):
    grid = _grid(arch=["unet", "unetplusplus"], encoder=["mit_b0"], fit=dict(FIT, encoder_depth=5),
                 selection="last")
    result = run_bench(grid, scans[:2], scans[2:], output=tmp_path / "bench")
    rows = {r["cell"]: r for r in result.summary["cells"]}
    assert result.tasks_run == ["unet_mit_b0_p32", "unetplusplus_mit_b0_p32"]
    done, skipped = rows["unet_mit_b0_p32"], rows["unetplusplus_mit_b0_p32"]
    assert skipped["status"] == "skipped" and "not support" in skipped["reason"] and skipped["mean_iou"] is None
    assert done["status"] == "done" and 0 <= done["mean_iou"] <= 1
    assert done["params"] > 1e6 and done["gflops_patch"] > 0 and done["train_seconds"] > 0
    assert done["gflops_per_mvoxel"] == pytest.approx(done["gflops_patch"] / 32 ** 2 * 1e6)
    assert done["predict_voxels_per_s"] > 0 and done["train_peak_ram_gb"] > 0 and done["predict_peak_ram_gb"] > 0
    trained = read_json(tmp_path / "bench" / "tasks" / "unet_mit_b0_p32" / "trained.json")
    assert trained["val_scans"] == [] and trained["best_epoch"] == 1  # selection 'last': no validation
    header = result.paths["csv"].read_text().splitlines()[0].split(",")
    for column in ("cell", "arch", "encoder", "patch_size", "status", "reason", "mean_iou", "iou_class_2", "params",
                   "gflops_patch", "train_seconds", "predict_voxels_per_s", "train_peak_vram_gb"):
        assert column in header
    assert result.paths["scans_csv"].read_text().splitlines()[1].startswith("unet_mit_b0_p32,unet,mit_b0,32,b22,")
    assert result.paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert run_bench(grid, scans[:2], scans[2:], output=tmp_path / "bench").tasks_run == []


@pytest.mark.slow
def test_ranks_share_the_cells_and_merge_to_the_single_run(scans, tmp_path, one_process):
    grid = _grid(patch_size=[32, 64], arch=["unet", "linknet"])
    single = run_bench(grid, scans[:2], scans[2:], output=tmp_path / "single")
    one_process.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        one_process.setenv("RANK", rank)
        run_bench(grid, scans[:2], scans[2:], output=tmp_path / "ranks", merge=False)
    merged = merge_bench(tmp_path / "ranks")
    drop = ("train_seconds", "predict_voxels_per_s", "predict_s_per_mvoxel", "train_peak_ram_gb",
            "predict_peak_ram_gb")
    assert ([{k: v for k, v in r.items() if k not in drop} for r in merged.summary["cells"]]
            == [{k: v for k, v in r.items() if k not in drop} for r in single.summary["cells"]])
    assert merged.summary["scans"] == single.summary["scans"]


def test_bad_scans_are_refused_before_any_work(scans, tmp_path):
    with pytest.raises(ConfigError, match="both training and test scans"):
        run_bench(_grid(), scans[:2], scans[1:], output=tmp_path / "b")
    with pytest.raises(ConfigError, match="'inner' needs at least 2 training scans"):
        run_bench(_grid(selection="inner"), scans[:1], scans[2:], output=tmp_path / "b")
    with pytest.raises(ConfigError, match="no test scans"):
        run_bench(_grid(), scans[:2], [], output=tmp_path / "b")
    assert not (tmp_path / "b").exists()
