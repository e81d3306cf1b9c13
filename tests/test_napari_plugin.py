"""The napari plugin's manifest, reader and writer, and the spec-built option widgets."""
from __future__ import annotations


import numpy as np
import pytest

import napari_helpers  # the offscreen platform; skips this module without napari
from bone_avizo.config import FitConfig, IoUConfig, PredictConfig, spec_of
from bone_avizo.io import load_volume, save_volume
from bone_avizo.io.registry import FORMAT_MODULES, all_extensions, get_format
from bone_avizo.napari import layers
from bone_avizo.napari.files import get_reader, write_labels
from bone_avizo.napari.options import OptionsPanel, param_tooltip
from bone_avizo.volume import Volume

ROOT = napari_helpers.ROOT
MANIFEST = ROOT / "bone_avizo" / "napari" / "napari.yaml"
SHAPE, VOXEL, ORIGIN = (5, 12, 17), (0.5, 0.25, 0.125), (3.0, -2.0, 1.5)
CLASSES = ("background", "bone", "pores")


def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def labels_volume() -> Volume:
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return Volume(((z + 2 * y + 3 * x) % 3).astype(np.uint8), voxel_size=VOXEL, origin=ORIGIN, name="seg",
                  class_names=CLASSES)


def test_manifest_is_valid_and_names_the_three_widgets_the_reader_and_the_writer():
    m = manifest()
    assert m.name == "bone-avizo"
    assert [w.display_name for w in m.contributions.widgets] == ["Predict", "Fit", "IoU"]
    commands = {c.id: c.python_name for c in m.contributions.commands}
    assert commands["bone-avizo.predict"] == "bone_avizo.napari.predict:PredictWidget"
    assert m.contributions.readers[0].accepts_directories
    assert m.contributions.writers[0].layer_types == ["labels"]


def test_manifest_commands_exist():
    import importlib

    for command in manifest().contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), name)), command.python_name


def test_reader_patterns_are_every_extension_the_core_reads():
    patterns = set(manifest().contributions.readers[0].filename_patterns)
    assert patterns == {"*" + ext for ext in all_extensions()}


def test_writer_extensions_are_every_format_the_core_writes():
    from bone_avizo.io.base import VolumeWriter

    writable = set()
    for name in FORMAT_MODULES:
        fmt = get_format(name)
        if fmt.writer.__name__ != "ReadOnlyWriter":
            assert issubclass(fmt.writer, VolumeWriter)
            writable.update(fmt.extensions)
    # second names of a format (offered under the first), raw without its geometry, and image slices
    writable -= {".ome.tif", ".ome.tiff", ".hdf", ".nhdr", ".ome.zarr", ".raw", ".png", ".bmp", ".jpg", ".jpeg"}
    assert set(manifest().contributions.writers[0].filename_extensions) == writable


# the formats that record class names
@pytest.mark.parametrize("suffix", [".am", ".tif", ".h5", ".nii.gz", ".nrrd", ".seg.nrrd", ".zarr"])
def test_label_layers_round_trip_through_writer_and_reader(tmp_path, suffix):
    volume = labels_volume()
    meta = {"name": "seg", **layers.layer_kwargs(volume.info, labels=True)}
    written, = write_labels(str(tmp_path / f"seg{suffix}"), volume.array, meta)
    (data, kwargs, kind), = get_reader(written)(written)
    assert kind == "labels"
    np.testing.assert_array_equal(np.asarray(data), volume.array)
    np.testing.assert_allclose(kwargs["scale"], VOXEL)
    np.testing.assert_allclose(kwargs["translate"], ORIGIN)
    assert tuple(kwargs["metadata"]["bone_avizo"]["class_names"])[1:] == CLASSES[1:]  # Amira names 0 Exterior


def test_reader_opens_a_scan_as_an_image_with_its_voxel_size(tmp_path):
    scan = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    path = save_volume(Volume(scan, voxel_size=VOXEL, origin=ORIGIN, name="scan"), tmp_path / "scan.tif")
    (data, kwargs, kind), = get_reader(str(path))(str(path))
    assert kind == "image" and isinstance(data, np.ndarray)
    np.testing.assert_array_equal(data, scan)
    assert kwargs["scale"] == VOXEL and kwargs["name"] == "scan"


def test_reader_reads_large_volumes_lazily(tmp_path, monkeypatch):
    volume = labels_volume()
    path = save_volume(volume, tmp_path / "seg.h5")
    monkeypatch.setattr(layers, "IN_MEMORY_LIMIT_BYTES", 100)
    (data, _, kind), = get_reader(str(path))(str(path))
    assert kind == "labels" and not isinstance(data, np.ndarray)
    np.testing.assert_array_equal(np.asarray(data[2]), volume.array[2])
    np.testing.assert_array_equal(np.asarray(data[:, 3, 1:9]), volume.array[:, 3, 1:9])
    np.testing.assert_array_equal(np.asarray(data), volume.array)


def test_reader_declines_what_the_core_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not a volume")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder without slices
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path)]) is None


def test_reader_opens_a_folder_of_tiff_slices(tmp_path):
    volume = labels_volume()
    folder = save_volume(Volume(volume.array, voxel_size=VOXEL, origin=ORIGIN, name="slices"), tmp_path / "slices",
                         format="tiff-folder")
    (data, kwargs, kind), = get_reader(str(folder))(str(folder))
    np.testing.assert_array_equal(np.asarray(data), volume.array)


def test_writer_refuses_labels_beyond_uint8_and_leaves_nothing(tmp_path):
    from bone_avizo.errors import LabelError

    data = np.zeros(SHAPE, np.int32)
    data[3, 2, 1] = 300
    with pytest.raises(LabelError, match="0..300"):
        write_labels(str(tmp_path / "bad.tif"), data, {"name": "bad", "scale": VOXEL})
    assert list(tmp_path.iterdir()) == []


def test_writer_names_classes_of_a_layer_without_names(tmp_path):
    data = np.zeros(SHAPE, np.int32)
    data[1] = 2
    written, = write_labels(str(tmp_path / "plain.tif"), data, {"name": "plain", "scale": VOXEL, "translate": ORIGIN})
    saved = load_volume(written)
    assert saved.class_names == ("class_0", "class_1", "class_2") and saved.voxel_size == VOXEL
    np.testing.assert_array_equal(saved.array, data)


# ---------------------------------------------------------------------------------------------
# options from the spec
@pytest.mark.parametrize("config_cls", [PredictConfig, IoUConfig, FitConfig])
def test_option_widgets_are_the_spec_with_its_defaults_and_help(qtbot, config_cls):
    panel = OptionsPanel(config_cls)
    spec = spec_of(config_cls)
    assert list(panel.widgets) == [p.name for p in spec]
    assert panel.config() == config_cls()
    for param in spec:
        assert panel.widgets[param.name].tooltip == param_tooltip(param)
        assert param.flag in param_tooltip(param) and param.help in param_tooltip(param)


NON_DEFAULT = {
    PredictConfig: PredictConfig(tile_size=64, overlap=0.5, blend="cosine", planes=("xy", "yz"), tta="flips",
                                 batch_size=8, device="cpu", devices=("cpu", "cpu"), backend="torch",
                                 precision="fp32", threads=2, slab_slices=3, memory_limit_gb=0.25,
                                 probabilities=True, resume=True),
    IoUConfig: IoUConfig(num_classes=4, ignore_label=3, class_names=("bg", "bone", "pores", "x"), per_slice=False,
                         map_prediction=("2:1",), map_reference=("3:0", "1:1"), surface_max_mvoxels=0.5),
    FitConfig: FitConfig(arch="fpn", encoder_depth=4, decoder_channels=(), lr=3e-4, min_lr=1e-7, weight_decay=1e-5,
                         planes=("xy", "xz"), extra_augment=("noise", "gamma"), epochs=3, patch_size=64,
                         class_names=("bg", "bone", "pores"), seed=11, val_fraction=0.3, momentum=0.95),
}


@pytest.mark.parametrize("config_cls", [PredictConfig, IoUConfig, FitConfig])
def test_options_round_trip_to_the_config(qtbot, config_cls):
    panel = OptionsPanel(config_cls)
    config = NON_DEFAULT[config_cls]
    panel.show(config)
    assert panel.config() == config


def test_int_options_take_their_range_and_zero_sentinel(qtbot):
    panel = OptionsPanel(PredictConfig)
    tile = panel.widgets["tile_size"]
    assert (tile.min, tile.max, tile.step) == (0, 4096, 32)  # 0 = auto, else 32..4096 in steps of 32
    assert panel.widgets["planes"].widget_type == "Select"
    assert panel.widgets["overlap"].widget_type == "FloatSpinBox" and panel.widgets["overlap"].max == 0.9


def test_a_bad_option_is_the_clis_one_line_error(qtbot):
    from bone_avizo.errors import ConfigError

    panel = OptionsPanel(FitConfig)
    panel.widgets["lr"].value = "fast"
    with pytest.raises(ConfigError, match=r"^lr \(--lr\): 'fast' is not valid; expected 1e-09..10.0$"):
        panel.config()


def test_the_cli_does_not_import_the_napari_face():
    """(tests/test_layering.py checks the core.)"""
    import subprocess
    import sys

    code = ("import sys, bone_avizo.standalone.__main__\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('napari', 'magicgui', 'qtpy', 'PyQt5')"
            " or m.startswith('bone_avizo.napari')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# background jobs
def test_job_panel_shows_the_cores_progress_and_eta_while_the_gui_runs(qtbot):
    import threading

    from bone_avizo.napari.jobs import JobPanel
    from bone_avizo.progress import ProgressTracker

    panel, release, results = JobPanel("predict", "Predict"), threading.Event(), []

    def task(progress):
        tracker = ProgressTracker(6, "predicting", progress)
        for _ in range(3):  # the core's ETA leaves the first reports (start-up, warm-up) out of its rate
            tracker.advance(1)
        release.wait(30)  # the job waits; the GUI thread must keep polling meanwhile
        tracker.advance(3)
        return "labels"

    panel.start(task, results.append)
    assert not panel.run_button.enabled and panel.cancel_button.enabled
    qtbot.waitUntil(lambda: panel.bar.value == 50, timeout=10_000)
    assert panel.status.value.startswith("predicting, ETA ")
    release.set()
    qtbot.waitUntil(lambda: results == ["labels"], timeout=10_000)
    assert panel.bar.value == 100 and panel.run_button.enabled and not panel.cancel_button.enabled


def test_job_panel_cancel_reaches_the_core_and_a_bug_is_one_line(qtbot, notifications):
    from bone_avizo.napari.jobs import JobPanel
    from bone_avizo.progress import ProgressTracker

    panel, results = JobPanel("iou", "Score"), []

    def endless(progress):
        tracker = ProgressTracker(10**9, "counting", progress)
        while True:
            tracker.advance(1)

    panel.start(endless, results.append)
    panel.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not panel.running and panel.last_error is not None, timeout=10_000)
    assert panel.last_error.startswith("bone-avizo iou: counting: cancelled by the user at ")
    panel.start(lambda progress: 1 / 0, results.append)
    qtbot.waitUntil(lambda: len(notifications) == 2, timeout=10_000)
    assert notifications[1] == ("error", "bone-avizo iou: internal error: ZeroDivisionError: division by zero (the log "
                                         "has the details)")
    assert results == []
