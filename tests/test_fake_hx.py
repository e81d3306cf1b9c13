"""The Avizo mock behaves as public scripted-module code expects Avizo to behave."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

import fake_hx
from fake_hx import HxWorld, load_pyscro

RECORDER = '''
class Recorder(PyScriptObject):
    def __init__(self):
        self.data.valid_types = ('HxUniformScalarField3')
        self.size = HxPortIntTextN(self, "size", "Size")
        self.size.texts = [HxPortIntTextN.IntText(label="X", value=5, clamp_range=(1, 10))]
        self.scale = HxPortFloatTextN(self, "scale", "Scale")
        self.flags = HxPortToggleList(self, "flags", "Flags")
        self.flags.toggles[0] = HxPortToggleList.Toggle(label="on", checked=HxPortToggleList.Toggle.CHECKED)
        self.mode = HxPortRadioBox(self, "mode", "Mode")
        self.mode.radio_boxes = [HxPortRadioBox.RadioBox(label="A"), HxPortRadioBox.RadioBox(label="B")]
        self.menu = HxPortMultiMenu(self)
        self.menu.menus = [HxPortButtonMenu.Menu(options=["p", "q", "r"])]
        self.menu.name = "menu"
        self.path = HxPortFilename(self, "path", "Path")
        self.info = HxPortInfo(self, "info", "Info")
        self.do_it = HxPortDoIt(self, "apply", "Apply")
        self.seen = []

    def update(self):
        self.seen.append(("update", self.do_it.was_hit, self.size.is_new, self.data.is_new))

    def compute(self):
        self.seen.append(("compute", self.do_it.was_hit))
        if not self.do_it.was_hit:
            return
        with hx_progress.progress(4, "working") as p:
            for _ in range(4):
                if p.interrupted:
                    hx_message.warning("stopped")
                    return
                p.increase_progress_step()
        hx_message.info("done")
'''


@pytest.fixture
def world():
    return HxWorld()


@pytest.fixture
def module(world, tmp_path):
    path = tmp_path / "Recorder.pyscro"
    path.write_text(RECORDER)
    return load_pyscro(path, world.hx_project)


def test_loader_runs_the_source_with_injected_globals(world, module):
    assert type(module).__name__ == "Recorder"
    assert world.hx_project.get("Recorder") is module
    assert module.ports.size is module.size and "menu" in module.portnames
    assert module.data.valid_types == ["HxUniformScalarField3"]
    assert module.fire_count == 1  # Avizo fires a newly created module


def test_was_hit_only_during_the_fire_after_a_press(module):
    module.seen.clear()
    module.fire()
    assert module.seen == [("update", False, False, False), ("compute", False)]
    module.do_it.hit()
    assert not module.do_it.was_hit  # pressed, but not yet fired
    module.fire()
    assert module.seen[-2:] == [("update", True, False, False), ("compute", True)]
    assert not module.do_it.was_hit
    module.fire()
    assert module.seen[-1] == ("compute", False)


def test_scripts_press_buttons_by_setting_was_hit(module, world):
    module.do_it.was_hit = True
    module.fire()
    assert world.hx_message.records[-1] == ("info", "done")


def test_is_new_set_by_a_change_and_reset_by_the_fire(module):
    assert not module.size.is_new
    module.size.texts[0].value = 5  # unchanged value: not new
    assert not module.size.is_new
    module.size.texts[0].value = 7
    assert module.size.is_new
    module.fire()
    assert not module.size.is_new
    module.flags.toggles[0].checked = False
    module.mode.selected = 1
    module.menu.menus[0].selected = 2
    assert module.flags.is_new and module.mode.is_new and module.menu.is_new


def test_ports_are_new_after_creation_until_the_first_fire(world, tmp_path):
    path = tmp_path / "Recorder.pyscro"
    path.write_text(RECORDER)
    module = load_pyscro(path, world.hx_project, fire=False)
    assert module.size.is_new and module.data.is_new
    module.fire()
    assert not module.size.is_new and not module.data.is_new


def test_connecting_data_marks_the_connection_new(module, world):
    field = world.create_field(np.zeros((2, 3, 4), np.uint8))
    module.data.connect(field)
    module.fire()
    assert module.seen[-2] == ("update", False, False, True)
    assert module.data.source() is field
    label = world.create_field(np.zeros((2, 3, 4), np.uint8), label=True)
    module.data.connect(label)  # a label field is a uniform scalar field too
    with pytest.raises(TypeError):
        module.data.connect(module)


def test_values_clamp_and_floats_are_single_precision(module):
    module.size.texts[0].value = 99
    assert module.size.texts[0].value == 10
    module.scale.texts[0].value = 0.1
    assert module.scale.texts[0].value == float(np.float32(0.1)) != 0.1
    module.scale.texts[0].clamp_range = (0.5, 2.0)
    assert module.scale.texts[0].value == 0.5


def test_selection_must_be_in_range(module):
    with pytest.raises(IndexError):
        module.mode.selected = 2
    with pytest.raises(IndexError):
        module.menu.menus[0].selected = 3


def test_filename_modes(module):
    assert module.path.filenames is None
    module.path.filenames = "/data/scan.tif"
    assert module.path.filenames == "/data/scan.tif"
    with pytest.raises(TypeError):
        module.path.filenames = ["/a", "/b"]
    module.path.mode = fake_hx.HxPortFilename.MULTI_FILE
    module.path.filenames = ["/a"]
    assert module.path.filenames == "/a"  # one file in multi-file mode comes back as a str
    module.path.filenames = ["/a", "/b"]
    assert module.path.filenames == ["/a", "/b"]


@pytest.mark.parametrize("after, expected", [(None, ("info", "done")), (2, ("warning", "stopped")),
                                             (0, ("warning", "stopped"))])
def test_progress_cancel_simulation(module, world, after, expected):
    world.hx_progress.interrupt_after = after
    module.do_it.press()
    assert world.hx_message.records[-1] == expected
    bar = world.hx_progress.bars[-1]
    assert bar.closed and bar.text == "working"
    assert bar.current_step == (4 if after is None else after)


def test_nested_fire_runs_again_instead_of_recursing(world, tmp_path):
    source = textwrap.dedent('''
        class Again(PyScriptObject):
            def __init__(self):
                self.buttons = HxPortButtonList(self, "buttons", "Buttons")
                self.hits = []
            def update(self):
                self.hits.append(self.buttons.buttons[0].hit)
                if not self.hits[:-1]:
                    self.buttons.buttons[0].hit = True
                    self.fire()
    ''')
    path = tmp_path / "Again.pyscro"
    path.write_text(source)
    module = load_pyscro(path, world.hx_project)
    assert module.hits == [False, True] and module.fire_count == 2


def test_project_names_are_unique_and_objects_removable(world):
    a = world.create_field(np.zeros((1, 1, 1), np.float32), name="scan")
    b = world.create_field(np.zeros((1, 1, 1), np.float32), name="scan")
    assert (a.name, b.name) == ("scan", "scan2")
    assert set(world.hx_project.objects) == {"scan", "scan2"}
    world.hx_project.remove(a)
    with pytest.raises(KeyError):
        world.hx_project.get("scan")
    loose = world.hx_object_factory.create("HxUniformScalarField3")
    assert loose.name not in world.hx_project.objects
    world.hx_project.add(loose)
    assert world.hx_project.get(loose.name) is loose


def test_field_stores_what_it_is_given_and_spans_voxel_centres(world):
    zyx = np.arange(7 * 13 * 29, dtype=np.uint16).reshape(7, 13, 29)
    field = world.create_field(zyx.T)
    assert field.get_array() is not None and field.get_array().shape == (29, 13, 7)
    assert np.shares_memory(field.get_array(), zyx)
    assert field.bounding_box == ((0.0, 0.0, 0.0), (28.0, 12.0, 6.0))
    field.bounding_box = ((1, 2, 3), (4, 5, 6))
    assert field.bounding_box == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int64, np.bool_])
def test_field_refuses_dtypes_avizo_has_no_field_for(world, dtype):
    field = world.hx_project.create("HxUniformScalarField3")
    with pytest.raises(TypeError):
        field.set_array(np.zeros((2, 2, 2), dtype))


def test_label_field_materials(world):
    field = world.create_field(np.array([0, 1, 3], np.uint8).reshape(3, 1, 1), label=True)
    materials = field.parameters["Materials"]
    assert list(materials) == ["Exterior", "Inside", "Material2", "Material3"]
    assert eval(str(field.parameters["Materials"])) == {name: {} for name in materials}
    with pytest.raises(TypeError):
        field.set_array(np.zeros((2, 2, 2), np.float32))
