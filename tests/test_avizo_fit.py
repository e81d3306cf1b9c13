"""BONeDLFit, the real .pyscro, in the Avizo mock: its ports, a tiny training run, Stop, bad input, and
the identity of its trained weights with the standalone ``fit`` command (deterministic, CPU, one
thread). The command line runs once, in a subprocess started before the first test so that it
overlaps the in-process runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import fake_hx
from bone_avizo.avizo import config_to_ports, ports_to_config
from bone_avizo.avizo.inputs import MissingInputError
from bone_avizo.avizo.training import FitStaging, folder_pairs
from bone_avizo.avizo import fields as avizo_fields
from bone_avizo.config import FIT_SPEC, FitConfig
from bone_avizo.errors import ConfigError, OutputExistsError
from bone_avizo.models import load_model
from bone_avizo.phantom import PhantomConfig, make_phantom
from test_avizo_consistency import cli_flags
from test_avizo_modules import errors_and_warnings, load_module, press_expecting_one_error

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (6, 64, 72)  # (z, y, x): non-cubic
CLASSES = ("background", "bone", "pores")
TINY = FitConfig(encoder_depth=3, decoder_channels=(16, 8, 4), patch_size=32, patches_per_slice=2, batch_size=2,
                 steps_per_epoch=2, epochs=1, val_slices=2, deterministic=True, seed=11, device="cpu", threads=1,
                 plot=False)
MODEL_FILES = {"bone.safetensors", "bone.safetensors.ckpt", "bone.safetensors.history.csv",
               "bone.safetensors.history.json"}


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels), both (z, y, x) uint8."""
    image, labels = make_phantom(PhantomConfig(shape=SHAPE, seed=seed))
    return image.array, labels.array


PHANTOMS = [phantom(seed) for seed in range(2)]


def add_pair(world, k: int, image: np.ndarray, labels: np.ndarray):
    """Scan k and its label field (materials = CLASSES) as Avizo holds them: (x, y, z), x fastest."""
    scan = world.create_field(np.asfortranarray(image.T), name=f"scan{k}.am")
    label_field = world.create_field(np.asfortranarray(labels.T), label=True, name=f"scan{k}.labels")
    label_field.parameters["Materials"] = {name: {} for name in CLASSES}
    return scan, label_field


def dlfit(world, output: Path, config: FitConfig = TINY, *, pairs: int = 2):
    """BONeDLFit with the first ``pairs`` phantoms connected, ``config`` in its ports and ``output`` chosen."""
    fields = [add_pair(world, k, *PHANTOMS[k]) for k in range(pairs)]
    module = load_module(world, "BONeDLFit", connect=fields[0][0] if fields else None)
    for k, (scan, labels) in enumerate(fields):
        if k:
            module.ports[f"image{k + 1}"].connect(scan)
        module.ports["labels" if k == 0 else f"labels{k + 1}"].connect(labels)
    config_to_ports(config, module)
    module.output.filenames = str(output)
    module.fire()
    return module


def write_phantoms(folder: Path) -> tuple[list[Path], list[Path]]:
    images, labels = [], []
    for k, (image, label) in enumerate(PHANTOMS):
        np.save(folder / f"scan{k}.npy", image)
        np.save(folder / f"scan{k}_labels.npy", label)
        images.append(folder / f"scan{k}.npy")
        labels.append(folder / f"scan{k}_labels.npy")
    return images, labels


@pytest.fixture(scope="module", autouse=True)
def cli_model(tmp_path_factory):
    """The standalone face on the same scans and options: ``python -m bone_avizo.standalone fit`` in a
    subprocess on one thread, started at once; call the result to wait for its model file."""
    folder = tmp_path_factory.mktemp("cli")
    images, labels = write_phantoms(folder)
    output = folder / "cli.safetensors"
    argv = [sys.executable, "-m", "bone_avizo.standalone", "fit", "--images", *map(str, images), "--labels",
            *map(str, labels), "--output", str(output), *cli_flags(TINY)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def wait() -> Path:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        return output

    yield wait
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def avizo_model(tmp_path_factory):
    """One BONeDLFit run on two connected pairs: (world, module, output folder)."""
    world, folder = fake_hx.HxWorld(), tmp_path_factory.mktemp("avizo")
    module = dlfit(world, folder / "bone.safetensors")
    module.do_it.press()
    return world, module, folder


@pytest.fixture
def world():
    return fake_hx.HxWorld()


# --------------------------------------------------------------------------------------------
# ports

def test_ports_show_the_fit_options_at_their_defaults(world):
    module = load_module(world, "BONeDLFit")
    names = {port.name for port in module.ports}
    assert {p.name for p in FIT_SPEC} - names == {"num_workers"}
    assert ports_to_config(FitConfig, module) == FitConfig()
    assert module.output.mode == fake_hx.HxPortFilename.ANY_FILE and module.output.filenames is None
    assert module.image_files.mode == module.label_files.mode == fake_hx.HxPortFilename.MULTI_FILE
    assert module.image_folders.mode == fake_hx.HxPortFilename.LOAD_DIRECTORY
    assert not module.overwrite.toggles[0].checked
    assert [t.checked for t in module.validation.toggles] == [0] * 5
    assert world.hx_message.records == []


def test_further_pairs_appear_as_pairs_are_connected(world):
    scan, labels = add_pair(world, 0, *PHANTOMS[0])
    module = load_module(world, "BONeDLFit")
    visible = lambda: [module.ports[n].visible for n in ("data", "labels", "image2", "labels2", "image3")]  # noqa: E731
    assert visible() == [True, True, False, False, False]
    module.data.connect(scan)
    module.fire()
    assert visible() == [True, True, True, True, False]
    module.ports.image2.connect(add_pair(world, 1, *PHANTOMS[1])[0])
    module.fire()
    assert visible() == [True, True, True, True, True]


# --------------------------------------------------------------------------------------------
# training

def test_apply_writes_a_loadable_model_and_shows_the_history(avizo_model):
    world, module, folder = avizo_model
    assert errors_and_warnings(world) == []
    assert {p.name for p in folder.iterdir()} == MODEL_FILES  # no staging folder, no scans left
    loaded = load_model(folder / "bone.safetensors")
    meta = loaded.metadata
    assert meta.class_names == CLASSES and meta.patch_size == 32 and meta.arch_options["encoder_depth"] == 3
    training = meta.training
    assert sorted(training["train_scans"] + training["val_scans"]) == ["scan0", "scan1"]
    history = training["history"]
    assert [row["epoch"] for row in history] == [1]
    lines = module.history.text.splitlines()
    assert lines[0].split() == ["epoch", "loss", "val", "mean", "IoU"]
    assert lines[1].split() == ["1", f"{history[0]['train_loss']:.4f}", f"{history[0]['val_mean_iou']:.4f}"]
    assert lines[2].startswith("best epoch 1")
    sheet = world.hx_project.get("bone.history")
    table, = sheet.all_interfaces.HxSpreadSheetInterface.tables
    columns = {c.name: c.asarray() for c in table.columns}
    assert list(columns["epoch"]) == [1] and columns["val_mean_iou"][0] == history[0]["val_mean_iou"]
    assert columns["train_loss"][0] == history[0]["train_loss"] and "val_iou_pores" in columns
    assert set(world.hx_project.objects) == {"scan0.am", "scan0.labels", "scan1.am", "scan1.labels", "BONeDLFit",
                                             "bone.history"}


def test_trained_weights_equal_the_command_line_ones(avizo_model, cli_model):
    _, _, folder = avizo_model
    avizo, cli = load_file(folder / "bone.safetensors"), load_file(cli_model())
    assert avizo.keys() == cli.keys() and len(avizo) > 10
    different = [key for key in avizo if not torch.equal(avizo[key], cli[key])]
    assert different == []


def test_a_wrong_axis_order_changes_the_weights(avizo_model, monkeypatch, tmp_path):
    """The identity above is not trivial: scans read with x and y swapped train other weights."""
    monkeypatch.setattr(avizo_fields, "xyz_to_zyx", lambda a: a.transpose(2, 0, 1))
    world = fake_hx.HxWorld()
    dlfit(world, tmp_path / "bone.safetensors").do_it.press()
    assert errors_and_warnings(world) == []
    swapped, right = load_file(tmp_path / "bone.safetensors"), load_file(avizo_model[2] / "bone.safetensors")
    assert any(not torch.equal(swapped[key], right[key]) for key in right)


def test_files_on_disk_and_ticked_validation_pairs(world, tmp_path, monkeypatch):
    """Training scans from files, a connected pair ticked for validation only; in an Avizo that
    cannot make spreadsheets the history is text only."""
    monkeypatch.delitem(world.hx_object_factory._types, "HxSpreadSheet")
    images, labels = write_phantoms(tmp_path)
    module = dlfit(world, tmp_path / "bone.safetensors", pairs=1)
    module.image_files.filenames = [str(images[1])]
    module.label_files.filenames = [str(labels[1])]
    module.validation.toggles[0].checked = 1
    module.fire()
    module.do_it.press()
    assert errors_and_warnings(world) == []
    training = load_model(tmp_path / "bone.safetensors").metadata.training
    assert (training["train_scans"], training["val_scans"]) == (["scan1"], ["scan0"])
    assert "no spreadsheet" in module.history.text and "bone.safetensors.history.csv" in module.history.text
    assert module.history.text.startswith("epoch") and set(world.hx_project.objects) == {
        "scan0.am", "scan0.labels", "BONeDLFit"}


def test_stop_keeps_the_previous_model_and_a_resumable_run_in_sight(world, tmp_path):
    output = tmp_path / "bone.safetensors"
    output.write_bytes(b"previous model")
    module = dlfit(world, output, FitConfig.from_dict({**TINY.to_dict(), "epochs": 2}))
    module.overwrite.toggles[0].checked = 1
    world.hx_progress.interrupt_after = 3  # in epoch 2: the checkpoint of epoch 1 exists by then
    before = world.hx_project.objects
    module.do_it.press()
    (level, text), = errors_and_warnings(world)
    assert level == "warning" and "cancelled" in text and world.hx_progress.steps == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bone.safetensors", "bone.safetensors.fitting"]
    assert (tmp_path / "bone.safetensors.fitting" / "bone.safetensors.ckpt").is_file()
    assert "Resume continues it from " in module.history.text
    assert output.read_bytes() == b"previous model"
    assert world.hx_project.objects == before
    # a new run without Resume or Overwrite is refused; with Resume it continues and completes
    module.overwrite.toggles[0].checked = 0
    world.hx_message.records.clear()
    world.hx_progress.interrupt_after = None
    module.do_it.press()
    (level, text), = errors_and_warnings(world)
    assert "an interrupted training of bone.safetensors is kept in " in text and "tick Resume" in text
    world.hx_message.records.clear()
    module.resume.toggles[0].checked = 1
    module.do_it.press()
    assert errors_and_warnings(world) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MODEL_FILES)
    assert load_model(output).metadata.training["epochs"] == 2


# --------------------------------------------------------------------------------------------
# bad input: one error line, nothing in the project, nothing on disk

def _no_data(world, output):
    return dlfit(world, output, pairs=0)


def _no_labels(world, output):
    module = dlfit(world, output, pairs=1)
    module.labels.disconnect()
    return module


def _labels_of_another_shape(world, output):
    module = dlfit(world, output, pairs=1)
    other = world.create_field(np.zeros((72, 64, 5), np.uint8), label=True, name="short.labels")
    module.labels.connect(other)
    return module


def _grey_values_as_labels(world, output):
    module = dlfit(world, output, pairs=1)
    module.labels.connect(world.hx_project.get("scan0.am"))
    return module


def _labels_without_scan(world, output):
    module = dlfit(world, output, pairs=1)
    module.ports.labels2.connect(world.hx_project.get("scan0.labels"))
    return module


def _label_field_as_scan(world, output):
    module = dlfit(world, output, pairs=1)
    module.data.connect(world.hx_project.get("scan0.labels"))
    return module


def _missing_folder(world, output):
    module = dlfit(world, output, pairs=2)
    module.output.filenames = str(output.parent / "no" / "such" / "bone.safetensors")
    return module


def _no_model_file(world, output):
    module = dlfit(world, output, pairs=2)
    module.output.filenames = None
    return module


def _existing_model(world, output):
    output.write_bytes(b"previous model")
    return dlfit(world, output, pairs=2)


def _unpaired_files(world, output):
    module = dlfit(world, output, pairs=1)
    module.image_files.filenames = [str(output.parent / "precious.npy")] * 2
    module.label_files.filenames = [str(output.parent / "precious.npy")]
    return module


def _model_is_its_weights(world, output):
    output.write_bytes(b"previous model")
    module = dlfit(world, output, pairs=2)
    module.ports.weights.text = str(output)
    module.overwrite.toggles[0].checked = 1
    return module


def _model_is_a_label_file(world, output):
    module = dlfit(world, output, pairs=1)
    module.image_files.filenames = [str(output.parent / "precious.npy")]
    module.label_files.filenames = [str(output)]
    output.write_bytes(b"labels")
    module.overwrite.toggles[0].checked = 1
    return module


def _bad_option(world, output):
    module = dlfit(world, output, pairs=2)
    module.ports.decoder_channels.text = "16, 8"
    return module


BAD_INPUT = {
    "no data": (_no_data, "no training scans: connect a scan to the Data port"),
    "labels missing": (_no_labels, "no label field for scan0.am: connect its label field to the Labels port"),
    "shapes differ": (_labels_of_another_shape, "scan0.am has 72 x 64 x 6 voxels (x, y, z) but its label field "
                                                "short.labels has 72 x 64 x 5"),
    "grey values as labels": (_grey_values_as_labels, "scan0.am in the Labels port is not a label field"),
    "labels without scan": (_labels_without_scan, "has no scan: connect the scan it labels to the Image 2 port"),
    "label field as scan": (_label_field_as_scan, "scan0.labels is a label field; connect the grayscale scan"),
    "output folder missing": (_missing_folder, "does not exist; create it or choose another file in the Model file"),
    "no model file": (_no_model_file, "no model file chosen"),
    "model exists": (_existing_model, "already exists; tick Overwrite"),
    "files unpaired": (_unpaired_files, "2 image volume(s) but 1 label volume(s)"),
    "bad option": (_bad_option, "decoder_channels"),
    "model file is its weights": (_model_is_its_weights, "bone.safetensors is the same file as input"),
    "model file is a label file": (_model_is_a_label_file, "bone.safetensors is the same file as input"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_error_and_leaves_nothing(world, tmp_path, case):
    make, message = BAD_INPUT[case]
    (tmp_path / "precious.npy").write_bytes(b"not touched")
    module = make(world, tmp_path / "bone.safetensors")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    press_expecting_one_error(world, module, message)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bone_folder_layout_and_its_two_ports(tmp_path):
    import tifffile

    for root, scan in (("images", "femur/_Scan"), ("images", "tibia"), ("masks", "femur/_Scan"), ("masks", "tibia")):
        (tmp_path / root / scan).mkdir(parents=True)
        tifffile.imwrite(tmp_path / root / scan / "slice0000.tif", np.zeros((40, 40), np.uint8))
    images = fake_hx.HxPortFilename(fake_hx.PyScriptObject(), "image_folders", "Image folders")
    masks = fake_hx.HxPortFilename(fake_hx.PyScriptObject(), "mask_folders", "Mask folders")
    assert folder_pairs(images, masks) == []
    images.filenames = str(tmp_path / "images")
    with pytest.raises(ConfigError, match="Image folders and Mask folders go together"):
        folder_pairs(images, masks)
    masks.filenames = str(tmp_path / "masks")
    specs = folder_pairs(images, masks)
    assert [(s.name, s.labels) for s in specs] == [("femur", tmp_path / "masks" / "femur" / "_Scan"),
                                                   ("tibia", tmp_path / "masks" / "tibia")]


def test_staging_refuses_an_existing_checkpoint_without_overwrite(tmp_path):
    (tmp_path / "bone.safetensors.ckpt").write_bytes(b"checkpoint of another run")
    with pytest.raises(OutputExistsError, match="bone.safetensors.ckpt already exists; tick Overwrite"):
        FitStaging(tmp_path / "bone.safetensors", overwrite=False)
    with FitStaging(tmp_path / "bone.safetensors", overwrite=True) as staging:
        assert staging.output.parent == tmp_path / "bone.safetensors.fitting"
    assert [p.name for p in tmp_path.iterdir()] == ["bone.safetensors.ckpt"]  # no checkpoint made: folder gone
    with pytest.raises(MissingInputError, match="nothing to resume"):
        FitStaging(tmp_path / "bone.safetensors", overwrite=False, resume=True)
