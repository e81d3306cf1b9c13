"""The Predict dock widget: labels equal the CLI's, streaming to a file, cancel, errors as notifications."""
from __future__ import annotations

import numpy as np
import pytest

from napari_helpers import cli, press  # first: the offscreen platform; skips this module without napari
from bone_avizo.config import PredictConfig
from bone_avizo.io import load_volume, save_volume
from bone_avizo.napari import layers
from bone_avizo.napari.predict import PredictWidget
from bone_avizo.volume import Volume
from test_avizo_consistency import cli_flags
from test_avizo_modules import CLASSES, ORIGIN, VOXEL, make_scan, write_tiny_model

# fused planes, test-time augmentation, non-default tiling and probability maps: most of DLPred's paths
OPTIONS = PredictConfig(planes=("xy", "yz"), tta="flips", overlap=0.5, blend="cosine", probabilities=True,
                        backend="torch", device="cpu", threads=1)
FAST = PredictConfig(backend="torch", device="cpu", threads=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("napari_predict")
    scan = make_scan()
    return {"scan": save_volume(Volume(scan, voxel_size=VOXEL, origin=ORIGIN, name="scan"), folder / "scan.tif"),
            "model": write_tiny_model(folder / "tiny.safetensors", scan), "array": scan, "folder": folder}


def predict_widget(viewer, files, config: PredictConfig, *, scan_layer: bool = True) -> PredictWidget:
    widget = PredictWidget(viewer)
    widget.model.value = files["model"]
    if scan_layer:
        viewer.add_image(files["array"], name="scan", scale=VOXEL, translate=ORIGIN)
        widget.scan.choose("scan")
    else:
        widget.scan.choose(files["scan"])
    widget.options.show(config)
    return widget


def test_predict_dock_shows_the_model_and_builds_the_config(qtbot, viewer_model, files):
    widget = predict_widget(viewer_model, files, OPTIONS)
    assert "3 classes: background, bone, pores" in widget.model_info.value
    assert widget.options.config() == OPTIONS
    assert set(widget.scan.combo.choices) == {"scan", "(a file)"}


def test_predict_labels_and_probabilities_equal_the_clis(qtbot, viewer_model, files):
    output = files["folder"] / "cli_labels.tif"
    cli("predict", "--model", files["model"], "--input", files["scan"], "--output", output, *cli_flags(OPTIONS))
    widget = predict_widget(viewer_model, files, OPTIONS)
    press(qtbot, widget)
    assert widget.jobs.last_error is None
    labels = viewer_model.layers["scan labels"]
    np.testing.assert_array_equal(labels.data, load_volume(output).array)
    np.testing.assert_allclose(labels.scale, VOXEL)
    np.testing.assert_allclose(labels.translate, ORIGIN)
    assert list(labels.features["class"]) == list(CLASSES)
    for name in CLASSES:
        expected = load_volume(files["folder"] / f"cli_labels_prob_{name}.tif").array
        np.testing.assert_array_equal(viewer_model.layers[f"scan prob {name}"].data, expected)


def test_predict_from_a_file_into_a_streamed_output_shown_lazily(qtbot, viewer_model, files, tmp_path, monkeypatch):
    monkeypatch.setattr(layers, "IN_MEMORY_LIMIT_BYTES", 1000)
    widget = predict_widget(viewer_model, files, FAST, scan_layer=False)
    press(qtbot, widget)
    assert "GB: choose an output file to stream them to" in widget.jobs.last_error
    assert [layer.name for layer in viewer_model.layers] == []
    widget.output.value = tmp_path / "labels.h5"
    press(qtbot, widget)
    assert widget.jobs.last_error is None
    labels = viewer_model.layers["scan labels"]
    assert not isinstance(labels.data, np.ndarray)  # read from the file as napari shows it
    cli_output = tmp_path / "cli.h5"
    cli("predict", "--model", files["model"], "--input", files["scan"], "--output", cli_output, *cli_flags(FAST))
    np.testing.assert_array_equal(np.asarray(labels.data), load_volume(cli_output).array)
    assert list(labels.features["class"]) == list(CLASSES)


def test_cancel_mid_run_leaves_nothing(qtbot, viewer_model, files, tmp_path, notifications):
    widget = predict_widget(viewer_model, files, FAST.with_(probabilities=True))
    widget.output.value = tmp_path / "labels.tif"
    panel, original = widget.jobs, widget.jobs.start

    def start_then_cancel(task, on_done):
        started = original(task, on_done)
        widget.jobs.cancel_button.clicked.emit()  # Cancel pressed while the job runs
        return started

    panel.start = start_then_cancel
    press(qtbot, widget)
    assert panel.job.cancelled and panel.job.error is not None
    assert "cancelled by the user" in widget.jobs.last_error
    assert list(tmp_path.iterdir()) == []
    assert [layer.name for layer in viewer_model.layers] == ["scan"]
    assert [severity for severity, _ in notifications] == ["info"]


def test_errors_are_one_notification_line_with_the_clis_text(qtbot, viewer_model, files, notifications, capsys):
    widget = predict_widget(viewer_model, files, FAST.with_(compile="on", backend="onnxruntime"))  # found in the job
    press(qtbot, widget)
    stderr = cli("predict", "--model", files["model"], "--input", files["scan"], "--output",
                 files["folder"] / "never.tif", "--compile", "on", "--backend", "onnxruntime", capsys=capsys)
    assert notifications == [("error", stderr.strip())]
    assert "\n" not in notifications[0][1] and "Traceback" not in notifications[0][1]
    assert [layer.name for layer in viewer_model.layers] == ["scan"]


def test_a_2d_layer_is_refused_in_one_line(qtbot, viewer_model, files, notifications):
    widget = predict_widget(viewer_model, files, FAST)
    viewer_model.add_image(np.zeros((20, 30), np.uint16), name="flat")
    widget.scan.choose("flat")
    press(qtbot, widget)
    assert notifications == [("error", "bone-avizo predict: error: layer 'flat' is 2-D (shape (20, 30)); choose a "
                                       "3-D single-channel layer (z, y, x)")]


def test_the_plugin_docks_sit_in_napari_viewer(make_napari_viewer, files, qtbot):
    """napari's own fixture and plugin machinery: the manifest registered, the three docks added by name to a
    real viewer (napari hands them its viewer), and a prediction from a file shows its labels there."""
    from npe2 import PluginManager, PluginManifest

    from bone_avizo.napari.fit import FitWidget
    from bone_avizo.napari.iou import IoUWidget
    from test_napari_plugin import MANIFEST

    manager = PluginManager.instance()
    manager.register(PluginManifest.from_file(MANIFEST))
    try:
        viewer = make_napari_viewer()
        docks = {name: viewer.window.add_plugin_dock_widget("bone-avizo", name)[1]
                 for name in ("Predict", "Fit", "IoU")}
        assert [type(d) for d in docks.values()] == [PredictWidget, FitWidget, IoUWidget]
        widget = docks["Predict"]
        widget.model.value = files["model"]
        widget.scan.choose(files["scan"])
        widget.options.show(FAST)
        press(qtbot, widget)
        assert widget.jobs.last_error is None
        assert viewer.layers["scan labels"].data.shape == files["array"].shape
        assert docks["IoU"].prediction.combo.value == "scan labels"  # the first Labels layer, chosen
    finally:
        manager.unregister("bone-avizo")


def test_a_bone_checkpoint_predicts_as_in_the_cli(qtbot, viewer_model, files, tmp_path):
    import torch

    from bone_avizo.models import build_model
    from test_bone_checkpoints import save_bone

    torch.manual_seed(3)
    model = save_bone(tmp_path / "bone.pth", build_model("unet", "resnet18", in_channels=1, num_classes=3).eval())
    cli("predict", "--model", model, "--input", files["scan"], "--output", tmp_path / "cli.tif", *cli_flags(FAST))
    widget = predict_widget(viewer_model, {**files, "model": model}, FAST)
    assert "bone_pth" in widget.model_info.value
    press(qtbot, widget)
    assert widget.jobs.last_error is None
    np.testing.assert_array_equal(viewer_model.layers["scan labels"].data, load_volume(tmp_path / "cli.tif").array)


def test_an_output_onto_the_scans_file_is_refused_before_any_work(qtbot, viewer_model, files, notifications):
    widget = predict_widget(viewer_model, files, FAST, scan_layer=False)
    widget.output.value = files["scan"]
    widget.overwrite.value = True
    before = files["scan"].read_bytes()
    press(qtbot, widget)
    (severity, message), = notifications
    assert severity == "error" and "is the same file as scan" in message and widget.jobs.job is None
    assert files["scan"].read_bytes() == before


def test_predict_with_a_binary_model_shows_two_labels_and_their_probabilities(qtbot, viewer_model, files, tmp_path):
    from test_binary_models import binary_model_file

    widget = predict_widget(viewer_model, files, PredictConfig(probabilities=True, backend="torch", device="cpu",
                                                               threads=1))
    widget.model.value = binary_model_file(tmp_path / "binary.safetensors", 3.0)
    assert "binary (one sigmoid output), 2 labels: background, foreground" in widget.model_info.value
    press(qtbot, widget)
    assert widget.jobs.last_error is None
    labels = viewer_model.layers["scan labels"]
    assert (np.asarray(labels.data) == 1).all()
    assert list(labels.features["class"]) == ["background", "foreground"]
    foreground = np.asarray(viewer_model.layers["scan prob foreground"].data).astype(int)
    background = np.asarray(viewer_model.layers["scan prob background"].data).astype(int)
    assert (background + foreground == 255).all() and (foreground > 128).all()
