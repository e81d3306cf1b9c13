"""The IoU dock widget: the same scores and reports as ``bone-avizo iou``, the class mapping, cancel, errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_helpers import cli, press  # first: the offscreen platform; skips this module without napari
from bone_avizo.config import IoUConfig
from bone_avizo.io import save_volume
from bone_avizo.napari.files import read_layers
from bone_avizo.napari.iou import IoUWidget
from bone_avizo.volume import Volume
from test_avizo_consistency import cli_flags
from test_avizo_modules import CLASSES, ORIGIN, VOXEL, make_reference, make_scan

MAPPED = IoUConfig(map_prediction=("2:1",), threads=1)  # pores counted as bone: the trust report's mapping


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("napari_iou")
    reference = make_reference(make_scan())
    prediction = np.roll(reference, 3, axis=2)
    geometry = dict(voxel_size=VOXEL, origin=ORIGIN, class_names=CLASSES)
    return {"prediction": save_volume(Volume(prediction, name="pred", **geometry), folder / "pred.tif"),
            "reference": save_volume(Volume(reference, name="truth", **geometry), folder / "truth.tif"),
            "folder": folder}


def iou_widget(viewer, files, config: IoUConfig) -> IoUWidget:
    """The dock with both label files opened as layers (through the plugin's reader)."""
    for role in ("prediction", "reference"):
        data, kwargs, kind = read_layers(str(files[role]))[0]
        getattr(viewer, f"add_{kind}")(data, **{**kwargs, "name": role})
    widget = IoUWidget(viewer)
    widget.prediction.choose("prediction")
    widget.reference.choose("reference")
    widget.options.show(config)
    return widget


def cli_report(files, config: IoUConfig, name: str) -> dict:
    folder = files["folder"]
    cli("iou", "--prediction", files["prediction"], "--reference", files["reference"], "--report",
        folder / f"{name}.json", "--csv", folder / f"{name}.csv", "--slice-csv", folder / f"{name}_slices.csv",
        *cli_flags(config))
    return json.loads((folder / f"{name}.json").read_text())


def without_inputs(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "inputs"}


def csv_rows(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return [row[1:] for row in csv.reader(fh)]  # the first column names the scan (a path or a layer)


def test_iou_dock_scores_as_the_cli_with_the_class_mapping(qtbot, viewer_model, files, tmp_path):
    expected = cli_report(files, MAPPED, "cli")
    widget = iou_widget(viewer_model, files, MAPPED)
    press(qtbot, widget)
    assert widget.jobs.last_error is None
    assert widget.table.rowCount() == len(expected["per_class"])
    assert widget.table.item(1, 2).text() == f"{expected['per_class'][1]['iou']:.4f}"
    assert "class mapping: prediction 2->1; reference none" in widget.notes.value
    assert f"mean IoU {expected['mean_iou']:.4f}" in widget.summary.value
    widget.report.value, widget.csv.value = tmp_path / "napari.json", tmp_path / "napari.csv"
    widget.slice_csv.value = tmp_path / "napari_slices.csv"
    widget.export_button.clicked.emit()
    assert without_inputs(json.loads((tmp_path / "napari.json").read_text())) == without_inputs(expected)
    assert json.loads((tmp_path / "napari.json").read_text())["inputs"]["prediction"] == "prediction"
    for name in ("", "_slices"):
        assert csv_rows(tmp_path / f"napari{name}.csv") == csv_rows(files["folder"] / f"cli{name}.csv")


def test_iou_dock_draws_the_per_slice_plot(qtbot, viewer_model, files):
    widget = iou_widget(viewer_model, files, IoUConfig(threads=1))
    press(qtbot, widget)
    lines = widget.plot.axes.get_lines()
    assert len(lines) == 4  # three classes and the mean
    assert len(lines[-1].get_xdata()) == make_scan().shape[0]


def test_cancelled_scoring_shows_and_exports_nothing(qtbot, viewer_model, files, notifications):
    widget = iou_widget(viewer_model, files, IoUConfig(threads=1, slab_slices=1))
    panel, original = widget.jobs, widget.jobs.start

    def start_then_cancel(task, on_done):
        started = original(task, on_done)
        panel.cancel()
        return started

    panel.start = start_then_cancel
    press(qtbot, widget)
    assert "cancelled by the user" in panel.last_error
    assert widget.result is None and widget.table.rowCount() == 0 and not widget.export_button.enabled
    assert [severity for severity, _ in notifications] == ["info"]


def test_iou_errors_are_the_clis_line(qtbot, viewer_model, files, notifications, capsys):
    config = IoUConfig(class_names=("background", "bone"), threads=1)  # labels reach 2
    widget = iou_widget(viewer_model, files, config)
    press(qtbot, widget)
    stderr = cli("iou", "--prediction", files["prediction"], "--reference", files["reference"],
                 "--class-names", "background", "bone", capsys=capsys)
    assert notifications == [("error", stderr.strip())]
    assert widget.result is None


def test_export_before_scoring_says_what_to_do(qtbot, viewer_model, files, notifications):
    widget = iou_widget(viewer_model, files, IoUConfig())
    widget.jobs.guard(widget.export)
    assert notifications == [("error", "bone-avizo iou: error: nothing to export yet: press Score first")]


def test_export_onto_an_input_is_refused(qtbot, viewer_model, files, notifications):
    widget = IoUWidget(viewer_model)
    widget.prediction.choose(files["prediction"])
    widget.reference.choose(files["reference"])
    press(qtbot, widget)
    widget.csv.value = files["reference"]
    widget.jobs.guard(widget.export)
    assert "is the same file as reference" in notifications[-1][1]


def test_a_region_of_interest_counts_as_in_the_cli(qtbot, viewer_model, files, tmp_path):
    mask = np.zeros(make_scan().shape, np.uint8)
    mask[:, 5:30, 10:40] = 1
    roi = save_volume(Volume(mask, voxel_size=VOXEL, origin=ORIGIN, name="roi"), tmp_path / "roi.tif")
    config = IoUConfig(threads=1)
    cli("iou", "--prediction", files["prediction"], "--reference", files["reference"], "--roi", roi, "--report",
        tmp_path / "cli.json", *cli_flags(config))
    widget = iou_widget(viewer_model, files, config)
    assert widget.roi.combo.value == "(none)"
    widget.roi.choose(roi)
    press(qtbot, widget)
    expected = json.loads((tmp_path / "cli.json").read_text())
    assert widget.result.voxels_counted == expected["voxels_counted"] == int(mask.sum())
    assert widget.result.mean_iou == expected["mean_iou"]
