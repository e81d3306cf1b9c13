"""The Avizo face under every reading of what public code leaves open (fake_hx.MODES): a project
that hands out a fresh wrapper on every access, types without Avizo's class hierarchy, get_array()
returning a copy. The modules must keep the user's objects, find their own results by name,
recognise label fields and read each field's array once per Apply."""
from __future__ import annotations

import numpy as np
import pytest

import fake_hx
from bone_avizo.avizo import is_label_field
from bone_avizo.avizo.training import training_inputs
from test_avizo_modules import (CLASSES, add_field, dlpred_module, load_module, make_reference, make_scan,
                                write_tiny_model)

MODES = list(fake_hx.MODES)


@pytest.fixture(scope="module")
def scan():
    return make_scan()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, scan):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", scan)


def project_state(world) -> dict[str, bytes | None]:
    """Name -> the bytes of its array (None for objects without one), read without counting."""
    state = {}
    for name, obj in world.hx_project._objects.items():
        array = getattr(obj, "_array", None)
        state[name] = None if array is None else array.tobytes()
    return state


def test_fresh_wrappers_really_have_new_identities(scan):
    world = fake_hx.HxWorld(mode="fresh_wrappers")
    add_field(world, scan, name="scan.am")
    first, second = world.hx_project.get("scan.am"), world.hx_project.get("scan.am")
    assert first is not second and id(first) != id(second)
    assert first.name == second.name and fake_hx.same_item(first, second)


@pytest.mark.parametrize("mode", MODES)
def test_failed_apply_deletes_nothing_of_the_users(mode, scan):
    world = fake_hx.HxWorld(mode=mode)
    scan_field = add_field(world, scan, name="scan.am")
    add_field(world, make_reference(scan), name="reference.labels", label=True, materials=CLASSES)
    module = dlpred_module(world, scan_field)  # no model file chosen
    before = project_state(world)
    module.do_it.press()
    (level, text), = world.hx_message.records
    assert level == "error" and "no model file chosen" in text
    assert project_state(world) == before


@pytest.mark.parametrize("mode", MODES)
def test_reruns_replace_results_by_name_and_a_failed_rerun_keeps_them(mode, scan, model_path, tmp_path):
    world = fake_hx.HxWorld(mode=mode)
    scan_field = add_field(world, scan, name="scan.am")
    module = dlpred_module(world, scan_field, model_path)
    module.do_it.press()
    module.do_it.press()
    assert world.hx_message.records == []
    assert set(world.hx_project.objects) == {"scan.am", "BONeDLPred", "scan.labels"}
    assert is_label_field(world.hx_project.get("scan.labels"))
    before = project_state(world)
    module.ports.model.filenames = str(tmp_path / "gone.safetensors")
    module.fire()
    module.do_it.press()
    assert [level for level, _ in world.hx_message.records] == ["error"]
    assert project_state(world) == before


@pytest.mark.parametrize("mode", MODES)
def test_label_fields_are_recognised_without_a_class_hierarchy(mode, scan):
    world = fake_hx.HxWorld(mode=mode)
    add_field(world, scan, name="scan.am")
    add_field(world, make_reference(scan), name="reference.labels", label=True, materials=CLASSES)
    scan_obj, labels_obj = world.hx_project.get("scan.am"), world.hx_project.get("reference.labels")
    if mode in ("flat_types", "worst"):
        assert type(labels_obj).__name__ == "PyHxObject"
        assert not any("Field" in k.__name__ for k in type(labels_obj).__mro__)
    assert is_label_field(labels_obj) and not is_label_field(scan_obj)


@pytest.mark.parametrize("mode", MODES)
def test_each_field_array_is_read_once_per_apply(mode, scan, model_path):
    world = fake_hx.HxWorld(mode=mode)
    scan_field = add_field(world, scan, name="scan.am")
    module = dlpred_module(world, scan_field, model_path)
    world.hx_project.array_reads.clear()
    module.do_it.press()
    assert world.hx_message.records == []
    assert world.hx_project.array_reads["scan.am"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_training_inputs_read_each_field_once(mode, scan):
    world = fake_hx.HxWorld(mode=mode)
    scan_field = add_field(world, scan, name="scan.am")
    add_field(world, make_reference(scan), name="scan.labels", label=True, materials=CLASSES)
    module = load_module(world, "BONeDLFit", connect=scan_field)
    module.ports.labels.connect(world.hx_project.get("scan.labels"))
    world.hx_project.array_reads.clear()
    inputs = training_inputs([(module.ports.data, module.ports.labels)])
    (image, labels), = inputs.field_pairs
    assert image.shape == labels.shape == scan.shape and labels.class_names == CLASSES
    assert dict(world.hx_project.array_reads) == {"scan.am": 1, "scan.labels": 1}


def test_strict_fake_refuses_attributes_without_evidence(scan):
    world = fake_hx.HxWorld()
    module = load_module(world, "BONeDLPred")
    with pytest.raises(AttributeError, match="tooltip"):
        module.ports.threads.tooltip = "threads"
    with pytest.raises(AttributeError, match="vaule"):
        module.ports.threads.texts[0].vaule = 3
    field = add_field(world, scan, name="scan.am")
    with pytest.raises(AttributeError, match="voxel_size"):
        field.voxel_size = (1, 1, 1)
    with pytest.raises(AttributeError):
        module.ports.threads.texts[0].maximum  # noqa: B018 - reading one raises too


def test_every_fake_behaviour_is_marked_evidenced_or_assumed():
    kinds = {kind for kind, _ in fake_hx.BEHAVIOURS.values()}
    assert kinds == {"evidenced", "assumed"}
    assert all(source.strip() for _, source in fake_hx.BEHAVIOURS.values())
    assert set(fake_hx.MODES) == {"best", "fresh_wrappers", "flat_types", "copying_arrays", "worst"}
