"""BONeDLPred and BONeIoU, the real .pyscro files, run in the Avizo mock: ports, results, re-runs,
cancel and bad input. The helpers at the top (scan, tiny model, fields) serve the consistency tests too."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fake_hx
from bone_avizo.avizo import field_to_volume, ports_to_config
from bone_avizo.config import IOU_SPEC, PREDICT_SPEC, IoUConfig, PredictConfig
from bone_avizo.metrics import compute_iou
from bone_avizo.models import ModelMetadata, build_model, load_model, save_model
from bone_avizo.predict import predict_volume
from bone_avizo.volume import Volume

HXSCRIPTS = Path(__file__).resolve().parents[1] / "hxscripts"
SHAPE = (7, 40, 52)  # (z, y, x): non-cubic
VOXEL = (0.5, 0.25, 0.125)  # (z, y, x): anisotropic
ORIGIN = (3.0, -2.0, 1.5)
CLASSES = ("background", "bone", "pores")
ARCH_OPTIONS = dict(encoder_depth=3, decoder_channels=(16, 8, 4))
FAST = dict(backend="torch", device="cpu", threads=1)


def make_scan(seed: int = 7) -> np.ndarray:
    """A (z, y, x) uint16 scan whose values differ along every axis."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    noise = np.random.default_rng(seed).normal(0.0, 50.0, SHAPE)
    return (1000 + 20 * x + 15 * y * np.sin(x / 5.0) + 300 * z + noise).clip(0, 65535).astype(np.uint16)


def make_reference(scan: np.ndarray) -> np.ndarray:
    """A (z, y, x) uint8 label volume 0..2 loosely following the scan."""
    x = np.arange(SHAPE[2])[None, None, :]
    return ((scan > scan.mean()).astype(np.uint8) + (x % 7 == 0)).astype(np.uint8)


def avizo_box(shape=SHAPE, voxel=VOXEL, origin=ORIGIN) -> tuple:
    """Avizo's bounding box ((x, y, z) first voxel centre, (x, y, z) last voxel centre)."""
    low = tuple(origin[::-1])
    return low, tuple(o + (n - 1) * v for o, n, v in zip(low, shape[::-1], voxel[::-1]))


def add_field(world, zyx: np.ndarray, *, name: str, label: bool = False, materials=None):
    """A field as Avizo holds one: (x, y, z) with x fastest in memory, and its bounding box."""
    field = world.create_field(np.asfortranarray(zyx.T), label=label, bounding_box=avizo_box(), name=name)
    if materials is not None:
        field.parameters["Materials"] = {m: {} for m in materials}
    return field


def _balance_classes(module: torch.nn.Module, scan: np.ndarray) -> None:
    """Shift the head's bias so that each class wins about a third of the scan's xy voxels: a randomly
    initialised network predicts nearly one class everywhere, and a comparison of labels needs variety."""
    head = module.segmentation_head[0]
    with torch.no_grad():
        images = torch.from_numpy(scan.astype(np.float32))
        images = (images - images.mean()) / images.std()
        logits = module(images[:, None, :, :48])  # width cut to a multiple of the network's stride
        bias = torch.zeros(logits.shape[1])
        for _ in range(300):
            wins = torch.bincount((logits + bias[None, :, None, None]).argmax(1).ravel(), minlength=len(bias))
            bias -= 0.02 * (wins.float() / wins.sum() - 1.0 / len(bias))
        head.bias += bias


def write_tiny_model(path: Path, scan: np.ndarray) -> Path:
    """A small U-Net (resnet18, 3 stages) with 3 classes saved as a bone_avizo model file."""
    torch.manual_seed(0)
    module = build_model("unet", "resnet18", in_channels=1, num_classes=3, **ARCH_OPTIONS).eval()
    _balance_classes(module, scan)
    save_model(path, module, ModelMetadata("unet", "resnet18", 1, 3, 32, class_names=CLASSES,
                                           arch_options=ARCH_OPTIONS))
    return path


def load_module(world, name: str, *, connect=None):
    return fake_hx.load_pyscro(HXSCRIPTS / f"{name}.pyscro", world.hx_project, connect=connect)


def errors_and_warnings(world) -> list[tuple[str, str]]:
    return [(level, text) for level, text in world.hx_message.records if level in ("error", "warning")]


def press_expecting_one_error(world, module, message: str) -> None:
    """Apply must show exactly one one-line error containing ``message`` and change nothing in the project."""
    module.fire()
    before = world.hx_project.objects
    world.hx_message.records.clear()
    module.do_it.press()
    (level, text), = world.hx_message.records
    assert level == "error" and text.startswith(f"{type(module).__name__}: ") and message in text, text
    assert "\n" not in text and "Traceback" not in text
    assert world.hx_project.objects == before


@pytest.fixture(scope="module")
def scan() -> np.ndarray:
    return make_scan()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, scan) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", scan)


@pytest.fixture
def world():
    return fake_hx.HxWorld()


@pytest.fixture
def scan_field(world, scan):
    return add_field(world, scan, name="scan.am")


def dlpred_module(world, scan_field, model_path=None):
    """BONeDLPred on ``scan_field`` (with ``model_path`` chosen when given), computing on one CPU thread."""
    module = load_module(world, "BONeDLPred", connect=scan_field)
    if model_path is not None:
        module.ports.model.filenames = str(model_path)
    module.ports.backend.selected = PREDICT_SPEC_BY_NAME["backend"].choices.index("torch")
    module.ports.device.text = "cpu"
    module.ports.threads.texts[0].value = 1
    module.fire()
    return module


@pytest.fixture
def dlpred(world, scan_field, model_path):
    """BONeDLPred on the scan with the tiny model chosen, computing on one CPU thread."""
    return dlpred_module(world, scan_field, model_path)


PREDICT_SPEC_BY_NAME = {p.name: p for p in PREDICT_SPEC}


# --------------------------------------------------------------------------------------------
# BONeDLPred

def test_dlpred_ports_are_the_spec_without_resume(world):
    module = load_module(world, "BONeDLPred")
    names = [p.name for p in module.ports]
    assert names == ["data", "model", "model_info"] + [p.name for p in PREDICT_SPEC if p.name != "resume"] + ["apply"]
    assert ports_to_config(PredictConfig, module) == PredictConfig()
    assert module.ports.model.mode == fake_hx.HxPortFilename.EXISTING_FILE
    assert module.data.valid_types == ["HxUniformScalarField3"]
    assert module.model_info.text.startswith("choose a model file")
    assert world.hx_message.records == [] and set(world.hx_project.objects) == {"BONeDLPred"}


def test_dlpred_shows_the_model_once_chosen(world, scan_field, model_path, tmp_path):
    module = load_module(world, "BONeDLPred", connect=scan_field)
    module.ports.model.filenames = str(model_path)
    module.fire()
    lines = module.model_info.text.splitlines()
    assert lines[0].startswith("unet / resnet18 (bone_avizo, ")
    assert lines[1] == "3 classes: background, bone, pores"
    assert lines[2] == "input: 2D, patch 32 px, zscore normalisation, trained on planes xy"
    module.ports.model.filenames = str(tmp_path / "gone.safetensors")
    module.fire()
    assert module.model_info.text.startswith("cannot use this model: model file ")
    assert "does not exist" in module.model_info.text
    assert world.hx_message.records == []  # reported when Apply is pressed


def test_dlpred_apply_makes_the_label_field(world, dlpred, scan_field, scan, model_path):
    dlpred.do_it.press()
    assert errors_and_warnings(world) == []
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred", "scan.labels"}
    labels = world.hx_project.get("scan.labels")
    assert isinstance(labels, fake_hx.HxUniformLabelField3)
    assert list(labels.parameters["Materials"]) == list(CLASSES)
    assert labels.bounding_box == scan_field.bounding_box
    assert labels.get_array().shape == SHAPE[::-1] and labels.get_array().dtype == np.uint8
    assert labels.ports.master.source() is dlpred
    expected = predict_volume(Volume(scan, voxel_size=VOXEL, origin=ORIGIN), load_model(model_path), PredictConfig(**FAST))
    assert np.array_equal(field_to_volume(labels).array, expected.labels.array)
    assert len(np.unique(expected.labels.array)) == 3
    bars = world.hx_progress.bars
    assert bars and bars[-1].text.startswith("predicting") and all(bar.closed for bar in bars)


def test_dlpred_rerun_replaces_its_results(world, dlpred, scan_field):
    dlpred.do_it.press()
    labels = world.hx_project.get("scan.labels")
    first = labels.get_array().copy()
    dlpred.ports.tta.menus[0].selected = PREDICT_SPEC_BY_NAME["tta"].choices.index("flips")
    dlpred.ports.probabilities.toggles[0].checked = True
    dlpred.do_it.press()
    assert world.hx_project.get("scan.labels") is labels  # the same object, new voxels
    assert not np.array_equal(labels.get_array(), first)
    probabilities = [f"scan.prob_{name}" for name in CLASSES]
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred", "scan.labels", *probabilities}
    for name in probabilities:
        field = world.hx_project.get(name)
        assert type(field) is fake_hx.HxUniformScalarField3 and field.get_array().dtype == np.uint8
        assert field.bounding_box == scan_field.bounding_box and field.get_array().shape == SHAPE[::-1]
    total = sum(world.hx_project.get(n).get_array().astype(int) for n in probabilities)
    assert abs(total - 255).max() <= 2  # quantised probabilities sum to 1
    dlpred.ports.probabilities.toggles[0].checked = False
    dlpred.do_it.press()
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred", "scan.labels"}
    world.hx_project.remove(labels)  # the user deleted the result: the next run makes a new one
    dlpred.do_it.press()
    assert world.hx_project.get("scan.labels") is not labels
    assert errors_and_warnings(world) == []


def test_dlpred_cancel_keeps_nothing_of_the_run(world, dlpred):
    world.hx_progress.interrupt_after = 2
    dlpred.do_it.press()
    (level, text), = world.hx_message.records
    assert level == "warning" and text.startswith("BONeDLPred: ") and "cancelled" in text
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred"}
    world.hx_progress.interrupt_after = None
    dlpred.do_it.press()
    labels = world.hx_project.get("scan.labels")
    before = labels.get_array().copy()
    dlpred.ports.tta.menus[0].selected = PREDICT_SPEC_BY_NAME["tta"].choices.index("flips")
    world.hx_progress.interrupt_after = world.hx_progress.steps + 2
    dlpred.do_it.press()
    assert world.hx_message.records[-1][0] == "warning"
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred", "scan.labels"}
    assert np.array_equal(labels.get_array(), before)  # the previous result is untouched


class MultiChannelField(fake_hx.HxUniformScalarField3):
    """A field whose array is not 3-D (as a multi-channel or colour field would be)."""

    def __init__(self):
        super().__init__()
        self._array = np.zeros((52, 40, 7, 3), np.uint8)


def _disconnect(world, module, ctx):
    module.data.disconnect()


def _connect_labels(world, module, ctx):
    module.data.connect(add_field(world, np.zeros(SHAPE, np.uint8), name="seg", label=True))


def _connect_multichannel(world, module, ctx):
    field = MultiChannelField()
    world.hx_project.add(field)
    field.name = "rgb"
    module.data.connect(field)


def _missing_model(world, module, ctx):
    module.ports.model.filenames = str(ctx["tmp_path"] / "missing.safetensors")


def _no_model(world, module, ctx):
    module.ports.model.filenames = None


def _not_a_model(world, module, ctx):
    path = ctx["tmp_path"] / "notes.safetensors"
    path.write_bytes(b"this is not a model file at all")
    module.ports.model.filenames = str(path)


def _bad_tile_size(world, module, ctx):
    module.ports.tile_size.texts[0].value = 100


DLPRED_BAD_INPUTS = {
    "no data connected": (_disconnect, "no scan connected"),
    "a label field": (_connect_labels, "seg is a label field"),
    "a field that is not 3-D": (_connect_multichannel, "4-D array"),
    "model file missing": (_missing_model, "missing.safetensors does not exist"),
    "no model file": (_no_model, "no model file chosen"),
    "not a model file": (_not_a_model, "is not a model file"),
    "invalid option": (_bad_tile_size, "tile_size"),
}


@pytest.mark.parametrize("case", sorted(DLPRED_BAD_INPUTS))
def test_dlpred_bad_input_is_one_error_and_leaves_nothing(world, dlpred, scan_field, model_path, tmp_path,
                                                         case):
    spoil, message = DLPRED_BAD_INPUTS[case]
    spoil(world, dlpred, {"tmp_path": tmp_path})
    press_expecting_one_error(world, dlpred, message)
    assert "scan.labels" not in world.hx_project.objects
    # the module stays usable: put the input right and run again
    dlpred.data.connect(scan_field)
    dlpred.ports.model.filenames = str(model_path)
    dlpred.ports.tile_size.texts[0].value = 0
    dlpred.do_it.press()
    assert world.hx_message.records[1:] == [] and "scan.labels" in world.hx_project.objects


def test_dlpred_says_which_python_lacks_bone_avizo(world, scan_field, monkeypatch):
    monkeypatch.setitem(sys.modules, "bone_avizo.predict", None)  # as in a Python without torch
    module = load_module(world, "BONeDLPred", connect=scan_field)
    assert module.model_info.text.startswith("BONe modules cannot start in Python ")
    (level, text), = world.hx_message.records
    assert level == "error" and "docs/avizo.md" in text and not module.do_it.enabled
    module.do_it.press()
    assert len(world.hx_message.records) == 1
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred"}


BROKEN_IMPORTS = {
    "torch DLL (Windows)": (OSError("[WinError 126] The specified module could not be found. Error loading "
                                    "c10.dll or one of its dependencies."), "reinstall torch"),
    "missing smp": (ModuleNotFoundError("No module named 'segmentation_models_pytorch'",
                                        name="segmentation_models_pytorch"), "install segmentation-models-pytorch"),
    "bone_avizo itself": (ImportError("bone_avizo is missing"), "install bone_avizo into that Python"),
}


@pytest.mark.parametrize("module_name", ["BONeDLPred", "BONeDLFit", "BONeIoU", "BONeInfo"])
@pytest.mark.parametrize("case", list(BROKEN_IMPORTS))
def test_any_import_failure_creates_the_module_with_apply_disabled(world, monkeypatch, module_name, case):
    error, fix = BROKEN_IMPORTS[case]
    import builtins
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.startswith("bone_avizo"):
            if case == "bone_avizo itself":
                raise error
            if name == "bone_avizo.avizo":
                raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    module = load_module(world, module_name)
    monkeypatch.setattr(builtins, "__import__", real_import)
    (level, text), = world.hx_message.records
    assert level == "error" and "\n" not in text and fix in text and type(error).__name__ in text, text
    assert str(error).split(".")[0] in text
    assert not module.do_it.enabled
    module.do_it.press()
    assert len(world.hx_message.records) == 1 and set(world.hx_project.objects) == {module_name}


# --------------------------------------------------------------------------------------------
# BONeIoU

@pytest.fixture
def prediction(world, scan):
    """A predicted label field (materials named after the model's classes) and its (z, y, x) labels."""
    labels = (scan // 7 % 3).astype(np.uint8)
    return add_field(world, labels, name="scan.labels", label=True, materials=CLASSES), labels


@pytest.fixture
def reference(world, scan):
    labels = make_reference(scan)
    return add_field(world, labels, name="truth.am", label=True, materials=CLASSES), labels


@pytest.fixture
def iou(world, prediction, reference):
    module = load_module(world, "BONeIoU", connect=prediction[0])
    module.reference.connect(reference[0])
    module.fire()
    return module


def read_spreadsheet(sheet) -> dict[str, dict[str, np.ndarray]]:
    """{table: {column: values}} through the interface public code reads spreadsheets with."""
    tables = sheet.all_interfaces.HxSpreadSheetInterface.tables
    return {table.name: {column.name: column.asarray() for column in table.columns} for table in tables}


def test_iou_ports_are_the_spec(world):
    module = load_module(world, "BONeIoU")
    names = [p.name for p in module.ports]
    assert names == ["data", "reference", "reference_file"] + [p.name for p in IOU_SPEC] + [
        "report", "apply", "summary", "table"]
    assert ports_to_config(IoUConfig, module) == IoUConfig()
    assert module.ports.reference_file.mode == fake_hx.HxPortFilename.EXISTING_FILE
    assert module.reference.valid_types == ["HxUniformLabelField3", "HxUniformScalarField3"]
    assert world.hx_message.records == []


def test_iou_apply_shows_text_and_a_spreadsheet(world, iou, prediction, reference):
    iou.do_it.press()
    assert errors_and_warnings(world) == []
    expected = compute_iou(prediction[1], reference[1], IoUConfig())
    assert iou.summary.text == (f"mean IoU {expected.mean_iou:.4f} (all classes), foreground "
                                f"{expected.mean_iou_foreground:.4f}; mean Dice {expected.mean_dice:.4f} / "
                                f"{expected.mean_dice_foreground:.4f}")
    assert iou.table.text.startswith("prediction: scan.labels   reference: truth.am\n")
    assert "0      background" in iou.table.text and "mean IoU (all classes" in iou.table.text
    assert set(world.hx_project.objects) == {"scan.labels", "truth.am", "BONeIoU", "scan.labels.iou"}
    sheet = world.hx_project.get("scan.labels.iou")
    assert sheet.ports.master.source() is iou
    tables = read_spreadsheet(sheet)
    assert list(tables) == ["per class", "per slice"]
    per_class, per_slice = tables["per class"], tables["per slice"]
    assert list(per_class["name"]) == list(CLASSES) and list(per_class["index"]) == [0, 1, 2]
    assert np.allclose(per_class["iou"], expected.iou) and np.allclose(per_class["dice"], expected.dice)
    assert list(per_class["voxels_reference"]) == list(expected.scores["voxels_reference"])
    assert np.allclose(per_class["volume_mm3_reference"], expected.scores["voxels_reference"] * np.prod(VOXEL))
    assert list(per_slice["z"]) == list(range(SHAPE[0]))
    assert list(per_slice)[3:] == [f"iou_{name}" for name in CLASSES]
    assert np.allclose(per_slice["mean_iou"], expected.slice_mean_iou(), equal_nan=True)
    assert np.allclose(per_slice["iou_bone"], expected.slice_scores["iou"][:, 1], equal_nan=True)


def test_iou_label_map_ports_relabel_as_the_command_line_does(world, iou, prediction, reference):
    iou.ports.map_prediction.text = "2:1"
    iou.do_it.press()
    assert errors_and_warnings(world) == []
    expected = compute_iou(prediction[1], reference[1], IoUConfig(map_prediction=("2:1",)))
    per_class = read_spreadsheet(world.hx_project.get("scan.labels.iou"))["per class"]
    assert np.allclose(per_class["iou"], expected.iou, equal_nan=True)
    assert list(per_class["voxels_prediction"]) == list(expected.scores["voxels_prediction"])
    assert expected.scores["voxels_prediction"][2] == 0  # the pores now count as bone


def test_iou_reference_from_a_file_gives_the_same_numbers(world, iou, reference, tmp_path):
    from bone_avizo.io import save_volume

    path = save_volume(Volume(reference[1], voxel_size=VOXEL, origin=ORIGIN, name="truth"), tmp_path / "truth.tif")
    iou.do_it.press()
    by_field = read_spreadsheet(world.hx_project.get("scan.labels.iou"))
    iou.reference.disconnect()
    iou.fire()
    assert iou.reference_file.visible
    iou.reference_file.filenames = str(path)
    iou.do_it.press()
    assert errors_and_warnings(world) == []
    assert f"reference: {path}" in iou.table.text
    by_file = read_spreadsheet(world.hx_project.get("scan.labels.iou"))
    assert by_file.keys() == by_field.keys()
    for table in by_file:
        for column in by_file[table]:
            assert np.array_equal(by_file[table][column], by_field[table][column], equal_nan=column != "name")


def test_iou_rerun_replaces_the_spreadsheet_and_per_slice_is_optional(world, iou):
    iou.do_it.press()
    first = world.hx_project.get("scan.labels.iou")
    iou.ports.per_slice.toggles[0].checked = False
    iou.do_it.press()
    sheets = [o for o in world.hx_project.objects.values() if isinstance(o, fake_hx.HxSpreadSheet)]
    assert len(sheets) == 1 and sheets[0] is not first and sheets[0].name == "scan.labels.iou"
    assert list(read_spreadsheet(sheets[0])) == ["per class"]


def test_iou_report_file_holds_the_full_report(world, iou, tmp_path):
    path = tmp_path / "scores.json"
    iou.report.filenames = str(path)
    iou.do_it.press()
    report = json.loads(path.read_text())
    assert report["inputs"] == {"prediction": "scan.labels", "reference": "truth.am"}
    assert report["class_names"] == list(CLASSES) and len(report["per_slice"]) == SHAPE[0]
    assert report["voxel_size"] == list(VOXEL) and report["options"] == IoUConfig().to_dict()
    assert f"{report['mean_iou']:.4f}" in iou.summary.text


@pytest.mark.parametrize("missing", ["the spreadsheet type", "the interface's add_table"])
def test_iou_without_spreadsheets_keeps_the_text(world, iou, monkeypatch, missing):
    iou.do_it.press()
    if missing == "the spreadsheet type":  # an Avizo that cannot create one
        monkeypatch.delitem(world.hx_object_factory._types, "HxSpreadSheet")
    else:  # an Avizo whose spreadsheet interface differs
        monkeypatch.delattr(fake_hx.HxSpreadSheetInterface, "add_table")
    iou.do_it.press()
    assert errors_and_warnings(world) == []
    assert "no spreadsheet" in iou.table.text and iou.summary.text.startswith("mean IoU ")
    assert not any(isinstance(o, fake_hx.HxSpreadSheet) for o in world.hx_project.objects.values())


def test_iou_cancel_keeps_nothing_of_the_run(world, iou):
    world.hx_progress.interrupt_after = 0
    iou.do_it.press()
    (level, text), = world.hx_message.records
    assert level == "warning" and "cancelled" in text
    assert set(world.hx_project.objects) == {"scan.labels", "truth.am", "BONeIoU"}
    assert iou.summary.text == "press Apply"


def _no_prediction(world, module, ctx):
    module.data.disconnect()


def _no_reference(world, module, ctx):
    module.reference.disconnect()


def _missing_reference_file(world, module, ctx):
    module.reference.disconnect()
    module.reference_file.filenames = str(ctx["tmp_path"] / "nowhere.tif")


def _other_shape(world, module, ctx):
    module.reference.connect(add_field_shaped(world, (7, 40, 51)))


def _float_prediction(world, module, ctx):
    module.data.connect(add_field(world, np.full(SHAPE, 0.5, np.float32), name="soft"))


def _too_few_classes(world, module, ctx):
    module.ports.num_classes.texts[0].value = 2


def _report_folder_missing(world, module, ctx):
    module.report.filenames = str(ctx["tmp_path"] / "no" / "such" / "folder" / "r.json")


def add_field_shaped(world, shape):
    array = np.zeros(shape, np.uint8)
    return world.create_field(np.asfortranarray(array.T), label=True, name="small")


IOU_BAD_INPUTS = {
    "no prediction connected": (_no_prediction, "no prediction connected"),
    "no reference": (_no_reference, "no reference: connect a field to the Reference port or choose a file"),
    "reference file missing": (_missing_reference_file, "nowhere.tif does not exist"),
    "shapes differ": (_other_shape, "shape"),
    "prediction not labels": (_float_prediction, "non-integer values"),
    "more classes than num_classes": (_too_few_classes, "num_classes is 2"),
    "report folder missing": (_report_folder_missing, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(IOU_BAD_INPUTS))
def test_iou_bad_input_is_one_error_and_leaves_nothing(world, iou, prediction, reference, tmp_path, case):
    spoil, message = IOU_BAD_INPUTS[case]
    spoil(world, iou, {"tmp_path": tmp_path})
    press_expecting_one_error(world, iou, message)
    assert "scan.labels.iou" not in world.hx_project.objects
    assert not list(tmp_path.rglob("*.json"))
    iou.data.connect(prediction[0])
    iou.reference.connect(reference[0])
    iou.ports.num_classes.texts[0].value = 0
    iou.report.filenames = None
    iou.do_it.press()
    assert world.hx_message.records[1:] == [] and "scan.labels.iou" in world.hx_project.objects
