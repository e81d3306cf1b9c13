"""The Fit dock widget: the split shown, weights equal to the CLI's, the live curve, cancel keeps the best
model and resume continues, errors as one line."""
from __future__ import annotations

import numpy as np
import pytest

from napari_helpers import cli, press  # first: the offscreen platform; skips this module without napari
from bone_avizo.data.split import make_split
from bone_avizo.napari.fit import FitWidget, Pair, history_rows
from test_avizo_consistency import cli_flags
from test_avizo_fit import PHANTOMS, TINY, write_phantoms


def fit_widget(viewer, output, config=TINY, *, validation=(), files=None) -> FitWidget:
    """The dock with the phantom pairs as layers (pair k named scan<k>), or as ``files`` (a folder the phantoms
    are written to), ``config`` and ``output`` chosen."""
    widget = FitWidget(viewer)
    paths = list(zip(*write_phantoms(files))) if files is not None else None
    for k, (image, labels) in enumerate(PHANTOMS):
        if paths is None:
            viewer.add_image(image, name=f"scan{k}")
            viewer.add_labels(labels, name=f"scan{k} labels")
        widget.image.choose(paths[k][0] if paths else f"scan{k}")
        widget.labels.choose(paths[k][1] if paths else f"scan{k} labels")
        widget.validation.value = k in validation
        widget.add_button.clicked.emit()
    widget.options.show(config)
    widget.output.value = output
    return widget


def test_fit_dock_trains_the_weights_of_the_cli(qtbot, viewer_model, tmp_path):
    from safetensors.torch import load_file

    images, labels = write_phantoms(tmp_path)
    cli("fit", "--images", *images, "--labels", *labels, "--output", tmp_path / "cli.safetensors", *cli_flags(TINY))
    widget = fit_widget(viewer_model, tmp_path / "napari.safetensors")
    assert [p.name for p in widget.pairs] == ["scan0", "scan1"]
    press(qtbot, widget)
    assert widget.jobs.last_error is None
    ours, theirs = load_file(tmp_path / "napari.safetensors"), load_file(tmp_path / "cli.safetensors")
    assert ours.keys() == theirs.keys() and len(ours) > 10
    assert [key for key in ours if not np.array_equal(ours[key].numpy(), theirs[key].numpy())] == []
    lines = widget.curve.axes.get_lines()
    assert [len(line.get_xdata()) for line in lines] == [TINY.epochs, TINY.epochs]  # loss and validation IoU


def test_the_split_shown_is_the_runs(qtbot, viewer_model, tmp_path):
    widget = fit_widget(viewer_model, tmp_path / "m.safetensors")
    widget.add_pair(Pair(tmp_path / "third.npy", tmp_path / "third_labels.npy"))
    names = ["scan0", "scan1", "third"]
    for seed in (0, 5):
        widget.options.widgets["seed"].value = seed
        split = make_split(3, val_fraction=0.2, seed=seed)
        assert widget.split.value == (f"train: {', '.join(names[i] for i in split.train)}\n"
                                      f"validate: {', '.join(names[i] for i in split.val)}")
    widget.pair_list.value = [widget.pairs[0].describe()]
    widget.remove_button.clicked.emit()
    widget.add_pair(Pair("scan0", "scan0 labels", validation=True))
    assert widget.split.value == "train: scan1, third\nvalidate: scan0"


def test_cancel_keeps_the_best_model_so_far_and_resume_continues(qtbot, viewer_model, tmp_path, notifications):
    output = tmp_path / "bone.safetensors"
    config = TINY.with_(epochs=3)
    widget = fit_widget(viewer_model, output, config, files=tmp_path)  # pairs of files this time
    assert [p.image for p in widget.pairs] == [tmp_path / "scan0.npy", tmp_path / "scan1.npy"]
    panel = widget.jobs
    panel.polled.append(lambda: panel.cancel() if history_rows(output) else None)  # Cancel after epoch 1
    press(qtbot, widget)
    assert "cancelled by the user" in panel.last_error
    finished = len(history_rows(output))
    assert output.is_file() and 1 <= finished < 3
    assert [severity for severity, _ in notifications] == ["info", "info"]
    assert "keeps the best of the" in notifications[1][1]
    panel.polled.pop()
    widget.resume.value = True
    press(qtbot, widget)
    assert panel.last_error is None
    assert [row["epoch"] for row in history_rows(output)] == [1, 2, 3]


def test_fit_errors_are_one_line(qtbot, viewer_model, tmp_path, notifications):
    widget = FitWidget(viewer_model)
    widget.output.value = tmp_path / "m.safetensors"
    press(qtbot, widget)
    assert notifications == [("error", "bone-avizo fit: error: no training scans: add a pair of a scan and its labels "
                                       "(layers or files)")]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["num_workers"])
def test_loader_processes_have_no_widget(qtbot, viewer_model, option):
    assert option not in FitWidget(viewer_model).options.widgets


def test_bones_folder_layout_adds_one_pair_per_scan(qtbot, viewer_model, tmp_path, notifications):
    from bone_avizo.io import save_volume
    from bone_avizo.volume import Volume

    for k, (image, labels) in enumerate(PHANTOMS):
        for root in ("images", "masks"):
            (tmp_path / root / f"femur{k}").mkdir(parents=True)
        save_volume(Volume(image), tmp_path / "images" / f"femur{k}" / "_Scan", format="tiff-folder")
        save_volume(Volume(labels), tmp_path / "masks" / f"femur{k}" / "_Scan", format="tiff-folder")
    widget = FitWidget(viewer_model)
    widget.image_folders.value, widget.mask_folders.value = tmp_path / "images", tmp_path / "masks"
    widget.add_folders_button.clicked.emit()
    assert [(p.name, p.image) for p in widget.pairs] == [("femur0", tmp_path / "images" / "femur0" / "_Scan"),
                                                         ("femur1", tmp_path / "images" / "femur1" / "_Scan")]
    assert widget.split.value.startswith("train: femur")
    widget.mask_folders.value = tmp_path / "images" / "femur0"
    widget.add_folders_button.clicked.emit()
    assert notifications[-1][0] == "error" and "has no mask folder" in notifications[-1][1]
    assert len(widget.pairs) == 2
