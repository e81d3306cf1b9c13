"""IoU reports: the JSON contract, CSV, the printed table, the per-slice plot, atomic writes."""
from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest

from bone_avizo.config import IoUConfig
from bone_avizo.errors import ConfigError, OutputWriteError
from bone_avizo.io import ArraySource
from bone_avizo.metrics import compute_iou, format_table, pool_results, result_to_dict
from bone_avizo.metrics.report import to_csv, to_slice_csv, write_json
from bone_avizo.volume import VolumeInfo

SHAPE = (7, 13, 29)
NAMES = ("background", "bone", "pores", "implant")


@pytest.fixture
def result(rng):
    ref = rng.integers(0, 3, SHAPE).astype(np.uint8)
    pred = ref.copy()
    pred[rng.random(SHAPE) < 0.2] = 1
    info = VolumeInfo(SHAPE, np.uint8, voxel_size=0.02)
    return compute_iou(ArraySource(pred, info), ArraySource(ref, info), IoUConfig(class_names=NAMES))


def test_json_contract(result, tmp_path):
    path = write_json(result, tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert data["mean_iou"] == pytest.approx(result.mean_iou)
    assert data["mean_iou_foreground"] == pytest.approx(result.mean_iou_foreground)
    assert data["num_classes"] == 4 and data["shape"] == list(SHAPE)
    assert "undefined" in data["undefined_policy"] and data["confusion_matrix"] == result.confusion.tolist()
    bone = data["per_class"][1]
    for key in ("index", "name", "iou", "dice", "precision", "recall", "voxels_reference", "voxels_prediction",
                "volume_fraction", "volume_mm3"):
        assert key in bone
    assert bone["name"] == "bone" and bone["iou"] == pytest.approx(result.iou[1])
    assert bone["volume_mm3"]["reference"] == pytest.approx(bone["voxels_reference"] * 0.02 ** 3)
    implant = data["per_class"][3]
    assert implant["iou"] is None and implant["dice"] is None and implant["voxels_reference"] == 0
    assert len(data["per_slice"]) == SHAPE[0] and data["per_slice"][2]["iou"][3] is None
    assert data["per_slice"][2]["mean_iou"] == pytest.approx(result.slice_mean_iou()[2])
    assert not list(tmp_path.glob("*.partial"))


def test_pooled_json_has_scans_and_mean_of_scan_means(result):
    data = json.loads(json.dumps(result_to_dict(pool_results([result, result]))))
    assert len(data["scans"]) == 2 and data["mean_of_scan_means"]["mean_iou"] == pytest.approx(result.mean_iou)
    assert data["per_class"][1]["volume_mm3"]["reference"] == pytest.approx(
        2 * data["scans"][0]["per_class"][1]["volume_mm3"]["reference"])


def test_csv_rows_per_class_and_per_slice(result):
    rows = list(csv.DictReader(io.StringIO(to_csv(pool_results([result, result])))))
    assert [r["scan"] for r in rows].count("pooled") == 4 and len(rows) == 12
    assert rows[1]["name"] == "bone" and float(rows[1]["iou"]) == pytest.approx(result.iou[1])
    assert rows[3]["iou"] == ""  # undefined
    slices = list(csv.DictReader(io.StringIO(to_slice_csv(result))))
    assert len(slices) == SHAPE[0] and float(slices[0]["iou_bone"]) == pytest.approx(
        result.slice_scores["iou"][0, 1])


def test_printed_table_is_aligned_and_names_undefined_classes(result):
    text = format_table(result)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("class"))
    bone = next(line for line in lines if line.startswith("1 "))
    assert header.index("IoU") + 3 == bone.index(f"{result.iou[1]:.4f}") + 6
    assert "undefined (left out of the means): implant" in text
    assert f"{result.mean_iou:.4f}" in text


def test_write_into_a_missing_folder_is_a_clear_error(result, tmp_path):
    with pytest.raises(OutputWriteError, match="does not exist"):
        write_json(result, tmp_path / "missing" / "report.json")


def test_plot_writes_a_png(result, tmp_path):
    pytest.importorskip("matplotlib")
    from bone_avizo.metrics.plot import plot_slice_iou
    path = plot_slice_iou(pool_results([result, result]), tmp_path / "slices.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.partial"))


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, result, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from bone_avizo.metrics.plot import plot_slice_iou
    with pytest.raises(ConfigError, match="pip install matplotlib"):
        plot_slice_iou(result, tmp_path / "slices.png")
