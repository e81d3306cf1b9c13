"""The Avizo adapter against the mock: axis order, geometry, dtypes, labels, ports, progress, errors."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fake_hx
from bone_avizo.avizo import fields as avizo_fields
from bone_avizo.avizo import (avizo_progress, AvizoProgress, config_to_ports, field_to_volume, hx_global,
                              ports_to_config, run_safely, spec_to_ports, volume_to_field)
from bone_avizo.avizo.ports import port_kind
from bone_avizo.avizo.hx import AvizoNameError
from bone_avizo.config import IOU_SPEC, PREDICT_SPEC, IoUConfig, PredictConfig
from bone_avizo.errors import (Cancelled, ConfigError, InputFileError, InvalidVolumeError, LabelError,
                               ShapeMismatchError, UnsupportedDtypeError)
from bone_avizo.progress import ProgressTracker
from bone_avizo.volume import Volume

HXSCRIPTS = Path(__file__).resolve().parents[1] / "hxscripts"
NX, NY, NZ = 29, 13, 7
VOXEL_ZYX = (0.5, 0.25, 0.125)
ORIGIN_ZYX = (3.0, -2.0, 1.5)


@pytest.fixture
def world():
    return fake_hx.HxWorld()


def pattern_xyz() -> np.ndarray:
    """value = x + 100 y + 10000 z: different along every axis, unique per voxel, fits uint16."""
    x, y, z = np.meshgrid(np.arange(NX), np.arange(NY), np.arange(NZ), indexing="ij")
    return (x + 100 * y + 10000 * z).astype(np.uint16)


def avizo_box() -> tuple:
    low = ORIGIN_ZYX[::-1]
    high = tuple(o + (n - 1) * v for o, n, v in zip(low, (NX, NY, NZ), VOXEL_ZYX[::-1]))
    return low, high


def check_adapter_against_truth(world) -> None:
    """field -> Volume must put voxel (x, y, z) at array[z, y, x], with (z, y, x) geometry; and back."""
    xyz = pattern_xyz()
    field = world.create_field(np.asfortranarray(xyz), bounding_box=avizo_box(), name="scan")
    volume = field_to_volume(field)
    assert volume.shape == (NZ, NY, NX)
    z, y, x = np.meshgrid(np.arange(NZ), np.arange(NY), np.arange(NX), indexing="ij")
    assert np.array_equal(volume.array, x + 100 * y + 10000 * z)
    assert volume.voxel_size == pytest.approx(VOXEL_ZYX, rel=1e-12)
    assert volume.origin == pytest.approx(ORIGIN_ZYX)
    back = volume_to_field(volume, world.hx_project, name="back")
    assert back.get_array().shape == (NX, NY, NZ)
    assert np.array_equal(back.get_array(), xyz)
    assert np.allclose(back.bounding_box, field.bounding_box, rtol=1e-12)


def test_round_trip_non_cubic_anisotropic(world):
    check_adapter_against_truth(world)


BROKEN_AXIS_ORDERS = {
    # each pair is its own inverse, so a bare field -> Volume -> field round trip cannot see it
    "reshape instead of transpose": (lambda a: a.reshape(a.shape[::-1]), lambda a: a.reshape(a.shape[::-1])),
    "no transpose": (lambda a: a, lambda a: a),
    "x and y swapped": (lambda a: a.transpose(2, 0, 1), lambda a: a.transpose(1, 2, 0)),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_AXIS_ORDERS))
def test_a_wrong_axis_order_is_caught(world, monkeypatch, broken):
    to_zyx, to_xyz = BROKEN_AXIS_ORDERS[broken]
    monkeypatch.setattr(avizo_fields, "xyz_to_zyx", to_zyx)
    monkeypatch.setattr(avizo_fields, "zyx_to_xyz", to_xyz)
    with pytest.raises(AssertionError):
        check_adapter_against_truth(world)


def test_a_bare_round_trip_would_miss_the_reshape_bug(world, monkeypatch):
    """Why the check above compares against the known pattern, not only field -> Volume -> field."""
    monkeypatch.setattr(avizo_fields, "xyz_to_zyx", BROKEN_AXIS_ORDERS["reshape instead of transpose"][0])
    monkeypatch.setattr(avizo_fields, "zyx_to_xyz", BROKEN_AXIS_ORDERS["reshape instead of transpose"][1])
    field = world.create_field(pattern_xyz(), bounding_box=avizo_box())
    back = volume_to_field(field_to_volume(field), world.hx_project)
    assert np.array_equal(back.get_array(), field.get_array())


def test_no_copy_when_the_field_has_avizo_layout(world):
    zyx = np.ascontiguousarray(pattern_xyz().transpose(2, 1, 0))
    field = world.create_field(zyx.T, bounding_box=avizo_box())  # Fortran-ordered (x, y, z) view
    volume = field_to_volume(field)
    assert np.shares_memory(volume.array, field.get_array())
    assert volume.array.flags.c_contiguous and not volume.array.flags.writeable
    with pytest.raises(ValueError):
        volume.array[0, 0, 0] = 1  # the core cannot write into Avizo's data


def test_c_ordered_field_is_copied_once_unless_asked_not_to(world):
    field = world.create_field(np.ascontiguousarray(pattern_xyz()), bounding_box=avizo_box())
    copied = field_to_volume(field)
    assert copied.array.flags.c_contiguous and not np.shares_memory(copied.array, field.get_array())
    view = field_to_volume(field, contiguous=False)
    assert np.shares_memory(view.array, field.get_array()) and not view.array.flags.c_contiguous
    assert np.array_equal(view.array, copied.array)


def test_volume_to_field_passes_avizo_layout_without_copying(world):
    volume = Volume(np.ascontiguousarray(pattern_xyz().T), voxel_size=VOXEL_ZYX, origin=ORIGIN_ZYX, name="v")
    field = volume_to_field(volume, world.hx_project)
    assert np.shares_memory(field.get_array(), volume.array) and field.get_array().flags.f_contiguous


def test_geometry_single_voxel_axis_and_degenerate_box(world):
    field = world.create_field(np.zeros((4, 3, 1), np.float32), bounding_box=((0, 0, 5), (0.6, 0.4, 5)))
    volume = field_to_volume(field)
    assert volume.voxel_size == pytest.approx((1.0, 0.2, 0.2)) and volume.origin == (5.0, 0.0, 0.0)
    field.bounding_box = ((0, 0, 0), (0.6, 0.0, 0.0))
    with pytest.raises(InvalidVolumeError, match="voxel size"):
        field_to_volume(field)


def stub_field(array_xyz, name="stub"):
    """Any object with the Avizo field API will do (here holding dtypes the mock refuses)."""
    box = ((0.0, 0.0, 0.0), tuple(float(n - 1) for n in array_xyz.shape))
    return SimpleNamespace(get_array=lambda: array_xyz, bounding_box=box, name=name, parameters={})


@pytest.mark.parametrize("dtype, expected", [(np.uint32, np.uint16), (np.uint64, np.uint16), (np.int64, np.int32),
                                             (np.bool_, np.uint8), (np.uint16, np.uint16), (np.float64, np.float64)])
def test_dtype_rules_on_the_way_in(dtype, expected):
    array = (np.arange(24) % 2).reshape(2, 3, 4).astype(dtype)
    volume = field_to_volume(stub_field(array))
    assert volume.dtype == expected and np.array_equal(volume.array, array.T)


@pytest.mark.parametrize("dtype, value", [(np.uint32, 65536), (np.uint64, 2**40), (np.int64, 2**31),
                                          (np.int64, -2**31 - 1)])
def test_dtype_range_checks(world, dtype, value):
    array = np.zeros((2, 3, 4), dtype)
    array[1, 2, 3] = value
    with pytest.raises(UnsupportedDtypeError, match="do not fit"):
        field_to_volume(stub_field(array))
    before = world.hx_project.objects
    with pytest.raises(UnsupportedDtypeError):
        volume_to_field(Volume(array.T.copy()), world.hx_project)
    assert world.hx_project.objects == before


def test_dtype_rules_on_the_way_out(world):
    field = volume_to_field(Volume(np.full((2, 3, 4), 65535, np.uint64)), world.hx_project)
    assert field.get_array().dtype == np.uint16 and field.get_array().max() == 65535


CLASSES = ("background", "cortical", "trabecular")


def label_volume(dtype=np.int64, top=2) -> Volume:
    array = (np.arange(NZ * NY * NX) % (top + 1)).reshape(NZ, NY, NX).astype(dtype)
    names = CLASSES if top < 3 else tuple(f"c{i}" for i in range(top + 1))
    return Volume(array, voxel_size=VOXEL_ZYX, origin=ORIGIN_ZYX, name="pred", class_names=names)


def test_label_round_trip_keeps_material_names(world):
    volume = label_volume()
    field = volume_to_field(volume, world.hx_project, label=True, name="pred.labels")
    assert type(field).__name__ == "HxUniformLabelField3" and field.name == "pred.labels"
    assert field.get_array().dtype == np.uint8
    assert list(field.parameters["Materials"]) == list(CLASSES)
    back = field_to_volume(field)
    assert back.class_names == CLASSES and np.array_equal(back.array, volume.array)


def test_labels_above_255_become_uint16(world):
    field = volume_to_field(label_volume(np.int32, top=300), world.hx_project, label=True)
    assert field.get_array().dtype == np.uint16


@pytest.mark.parametrize("array, names, match", [
    (np.full((2, 2, 2), -1, np.int16), None, "outside"),
    (np.full((2, 2, 2), 0.5, np.float32), None, "integers"),
    (np.full((2, 2, 2), 3, np.uint8), ("a", "b"), "no class name"),
    (np.zeros((2, 2, 2), np.uint8), ("a", "a"), "unique"),
])
def test_bad_labels_are_refused_before_anything_is_created(world, array, names, match):
    before = world.hx_project.objects
    with pytest.raises(LabelError, match=match):
        volume_to_field(Volume(array, class_names=names), world.hx_project, label=True)
    assert world.hx_project.objects == before


def test_label_field_names_from_materials_ids_and_padding(world):
    field = world.create_field(np.array([0, 1, 2, 4], np.uint8).reshape(4, 1, 1), label=True)
    field.parameters["Materials"] = {"bone": {"Id": 2}, "air": {"Id": 1}}
    assert field_to_volume(field).class_names == ("air", "bone", "class2", "class3", "class4")


def test_failure_half_way_leaves_no_object(world, monkeypatch):
    def broken_set_array(self, array):
        raise MemoryError("out of memory")

    monkeypatch.setattr(fake_hx.HxUniformLabelField3, "set_array", broken_set_array)
    before = world.hx_project.objects
    with pytest.raises(MemoryError):
        volume_to_field(label_volume(), world.hx_project, label=True)
    assert world.hx_project.objects == before


def test_like_copies_the_geometry_exactly(world):
    source = world.create_field(pattern_xyz(), bounding_box=avizo_box(), name="scan")
    labels = Volume(np.zeros((NZ, NY, NX), np.uint8), class_names=("a",))  # default geometry
    field = volume_to_field(labels, world.hx_project, label=True, like=source)
    assert field.bounding_box == source.bounding_box
    before = world.hx_project.objects
    with pytest.raises(ShapeMismatchError):
        volume_to_field(Volume(np.zeros((NZ, NY, NX + 1), np.uint8)), world.hx_project, like=source)
    assert world.hx_project.objects == before


# --------------------------------------------------------------------------------------------
# spec -> ports -> config

OPTIONS_MODULE = '''
from bone_avizo.avizo import spec_to_ports
from bone_avizo.config import {spec}

class Options(PyScriptObject):
    def __init__(self):
        self.options = spec_to_ports(self, {spec})
        self.do_it = HxPortDoIt(self, "apply", "Apply")
'''


def options_module(world, tmp_path, spec="PREDICT_SPEC"):
    path = tmp_path / "Options.pyscro"
    path.write_text(OPTIONS_MODULE.format(spec=spec))
    return fake_hx.load_pyscro(path, world.hx_project)


def test_ports_follow_the_spec(world, tmp_path):
    module = options_module(world, tmp_path)
    ports = module.ports
    assert [p.name for p in ports][1:-1] == [p.name for p in PREDICT_SPEC]
    assert isinstance(ports.tile_size, fake_hx.HxPortIntTextN) and ports.tile_size.label == "Tile size"
    assert ports.tile_size.texts[0].clamp_range == (0, 4096)  # 0 = "the model's patch size"
    assert ports.threads.texts[0].clamp_range == (0, 1024)
    assert isinstance(ports.overlap, fake_hx.HxPortFloatTextN)
    assert isinstance(ports.blend, fake_hx.HxPortRadioBox)
    assert [r.label for r in ports.blend.radio_boxes] == ["gaussian", "cosine", "constant"]
    assert isinstance(ports.tta, fake_hx.HxPortMultiMenu) and ports.tta.menus[0].options == ["none", "flips",
                                                                                              "rot90", "d4"]
    assert [t.label for t in ports.planes.toggles] == ["xy", "xz", "yz"]
    assert isinstance(ports.device, fake_hx.HxPortText) and ports.device.text == "auto"
    assert isinstance(ports.probabilities, fake_hx.HxPortToggleList)
    assert ports.memory_limit_gb.label == "Memory limit GB"


@pytest.mark.parametrize("spec, config_cls", [("PREDICT_SPEC", PredictConfig), ("IOU_SPEC", IoUConfig)])
def test_port_defaults_equal_config_defaults(world, tmp_path, spec, config_cls):
    module = options_module(world, tmp_path, spec)
    assert ports_to_config(config_cls, module) == config_cls()
    assert ports_to_config(config_cls, module.options) == config_cls()
    assert ports_to_config(config_cls, module.ports) == config_cls()


def test_changed_ports_reach_the_config(world, tmp_path):
    module = options_module(world, tmp_path)
    p = module.ports
    p.tile_size.texts[0].value = 256
    p.overlap.texts[0].value = 0.1  # stored in single precision, read back as 0.1
    p.blend.selected = 1
    p.planes.toggles[2].checked = fake_hx.HxPortToggleList.Toggle.CHECKED
    p.tta.menus[0].selected = 3
    p.device.text = "cuda:1"
    p.probabilities.toggles[0].checked = True
    p.memory_limit_gb.texts[0].value = 1e9  # clamped to the spec's maximum
    config = ports_to_config(PredictConfig, module)
    assert (config.tile_size, config.overlap, config.blend, config.planes, config.tta, config.device,
            config.probabilities, config.memory_limit_gb) == (256, 0.1, "cosine", ("xy", "yz"), "d4", "cuda:1",
                                                               True, 4096.0)


def test_invalid_port_values_become_one_line_config_errors(world, tmp_path):
    module = options_module(world, tmp_path)
    module.ports.tile_size.texts[0].value = 100
    with pytest.raises(ConfigError, match="tile_size"):
        ports_to_config(PredictConfig, module)


def test_iou_free_text_lists(world, tmp_path):
    module = options_module(world, tmp_path, "IOU_SPEC")
    module.ports.class_names.text = " background, bone ,, marrow"
    module.ports.ignore_label.texts[0].value = -5  # clamped to -1
    config = ports_to_config(IoUConfig, module)
    assert config.class_names == ("background", "bone", "marrow") and config.ignore_label == -1


def test_config_to_ports_round_trip(world, tmp_path):
    module = options_module(world, tmp_path)
    wanted = PredictConfig(tile_size=512, overlap=0.3, blend="constant", planes=("xz", "yz"), tta="rot90",
                           batch_size=3, backend="onnxruntime", precision="bf16", memory_limit_gb=2.5,
                           resume=True)
    config_to_ports(wanted, module)
    assert ports_to_config(PredictConfig, module) == wanted


def test_port_kinds_for_every_spec_parameter():
    kinds = {p.name: str(port_kind(p)) for p in PREDICT_SPEC + IOU_SPEC}
    assert kinds["planes"] == "toggles" and kinds["precision"] == "menu" and kinds["backend"] == "radio"
    assert kinds["class_names"] == "text" and kinds["per_slice"] == "toggle"


def test_names_are_found_explicitly_or_not_at_all(world):
    module = fake_hx.PyScriptObject()
    with pytest.raises(AvizoNameError, match="hx=globals"):
        hx_global(module, "hx_project")
    assert hx_global(module, "hx_project", world.globals()) is world.hx_project
    assert hx_global(module, "hx_project", world) is world.hx_project
    ports = spec_to_ports(module, IOU_SPEC, hx=world.globals())
    assert set(ports) == {p.name for p in IOU_SPEC}


# --------------------------------------------------------------------------------------------
# progress and errors

def two_phase_core(progress, *, slabs=5, tiles=3000):
    tracker = ProgressTracker(slabs, "reading", progress)
    for _ in range(slabs):
        tracker.advance()
    tracker = ProgressTracker(tiles, "predicting", progress)
    for _ in range(tiles):
        tracker.advance()
    return "done"


def test_progress_bridge_phases_and_closing(world):
    with AvizoProgress(world.hx_progress, max_steps=100) as progress:
        assert two_phase_core(progress) == "done"
    bars = world.hx_progress.bars
    assert [(b.text, b.total, b.current_step) for b in bars] == [("reading", 5, 5), ("predicting", 100, 100)]
    assert all(b.closed for b in bars)


def test_progress_bridge_stops_the_core_on_interrupt(world):
    world.hx_progress.interrupt_after = 3
    with pytest.raises(Cancelled, match="cancelled by the user at 3/5"):
        with AvizoProgress(world.hx_progress) as progress:
            two_phase_core(progress)
    assert world.hx_progress.bars[-1].closed


def scripted_module(world, tmp_path, body: str):
    source = "class Job(PyScriptObject):\n    def __init__(self):\n        pass\n" + body
    path = tmp_path / "Job.pyscro"
    path.write_text(source)
    return fake_hx.load_pyscro(path, world.hx_project, fire=False)


def test_run_safely_reports_user_errors_and_removes_half_made_objects(world, tmp_path):
    module = scripted_module(world, tmp_path, "")
    scan = world.create_field(np.zeros((2, 2, 2), np.float32), name="scan")

    def work():
        hx_global(module, "hx_project").create("HxUniformLabelField3").name = "half made"
        raise InputFileError("model file /x.safetensors does not exist;\n  check the path")

    assert run_safely(module, work) is None
    assert world.hx_message.records == [("error", "Job: model file /x.safetensors does not exist; check the path")]
    assert set(world.hx_project.objects) == {"Job", "scan"} and world.hx_project.get("scan") is scan


def test_run_safely_reports_internal_errors_with_type_and_logs_the_traceback(world, tmp_path, caplog):
    module = scripted_module(world, tmp_path, "")
    with caplog.at_level(logging.ERROR, logger="bone_avizo.avizo.safety"):
        assert run_safely(module, lambda: {}["missing"]) is None
    (level, text), = world.hx_message.records
    assert level == "error" and text.startswith("Job: internal error: KeyError: 'missing'")
    assert caplog.records and caplog.records[0].exc_info is not None


def test_run_safely_turns_cancel_into_a_warning_and_passes_results(world, tmp_path):
    module = scripted_module(world, tmp_path, "")
    world.hx_progress.interrupt_after = 0

    def job():
        with avizo_progress(module) as progress:
            return two_phase_core(progress)

    assert run_safely(module, job) is None
    assert world.hx_message.records[0][0] == "warning" and "cancelled" in world.hx_message.records[0][1]
    world.hx_progress.interrupt_after = None
    assert run_safely(module, job) == "done"


# --------------------------------------------------------------------------------------------
# BONeInfo, the example module, runs unmodified in the mock

def test_boneinfo_shows_the_connected_field(world):
    scan = world.create_field(np.asfortranarray(pattern_xyz()), bounding_box=avizo_box(), name="scan")
    module = fake_hx.load_pyscro(HXSCRIPTS / "BONeInfo.pyscro", world.hx_project, connect=scan)
    assert module.dimensions.text == "29 x 13 x 7 voxels (x, y, z), uint16"
    assert module.voxel_size.text.startswith("0.125 x 0.25 x 0.5 (x, y, z), first voxel centre at (1.5, -2, 3)")
    assert module.content.text == "scalar field, values 0..61228"
    assert world.hx_message.records == []
    module.data.disconnect()
    module.fire()
    assert module.dimensions.text == "no field connected"


def test_boneinfo_label_field_and_environment(world):
    labels = volume_to_field(label_volume(), world.hx_project, label=True, name="pred")
    module = fake_hx.load_pyscro(HXSCRIPTS / "BONeInfo.pyscro", world.hx_project, connect=labels)
    assert module.content.text == "label field, 3 classes: background, cortical, trabecular"
    module.do_it.press()
    assert "bone_avizo 0.1.0" in module.environment.text and "torch " in module.environment.text


def test_boneinfo_reports_a_bad_field_in_one_line(world):
    flat = world.create_field(np.zeros((3, 3, 3), np.float32), bounding_box=((0, 0, 0), (1, 1, 0)))
    fake_hx.load_pyscro(HXSCRIPTS / "BONeInfo.pyscro", world.hx_project, connect=flat)
    (level, text), = world.hx_message.records
    assert level == "error" and text.startswith("BONeInfo: HxUniformScalarField3: bounding box")


def test_boneinfo_says_which_python_lacks_bone_avizo(world, monkeypatch):
    monkeypatch.setitem(sys.modules, "bone_avizo.avizo", None)  # as in a Python without bone_avizo
    scan = world.create_field(pattern_xyz(), name="scan")
    module = fake_hx.load_pyscro(HXSCRIPTS / "BONeInfo.pyscro", world.hx_project, connect=scan)
    assert module.environment.text.startswith("BONe modules cannot start in Python ")
    assert sys.prefix in module.environment.text and module.dimensions.text == "no field connected"
    (level, text), = world.hx_message.records  # shown once, when the module is created
    assert level == "error" and text == module.environment.text and "docs/avizo.md" in text
    assert not module.do_it.enabled
    module.do_it.press()
    assert len(world.hx_message.records) == 1
