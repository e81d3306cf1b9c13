"""The self-check (BONeDoctor module, doctor_report in the console, `python -m bone_avizo.avizo doctor`)
against every fake mode: each fact the adapter relies on is OK where the fake behaves that way and
"differs: ..." where it does not, and nothing of the user's project changes."""
from __future__ import annotations

import json

import pytest

import fake_hx
from bone_avizo.avizo.cli import main as avizo_main
from bone_avizo.avizo.doctor import doctor_report
from test_avizo_modules import add_field, load_module, make_scan

# mode -> the facts that must differ there (everything else checked must be OK)
DIFFERS = {
    "best": set(),
    "fresh_wrappers": {"same Python object on each access"},
    "flat_types": {"label field type chain", "same Python object on each access"},
    "copying_arrays": {"get_array view or copy"},
    "worst": {"same Python object on each access", "get_array view or copy", "label field type chain"},
}
AVIZO_FACTS = {"Avizo version", "same Python object on each access", "get_array view or copy",
               "get_array axis order (x, y, z)", "get_array memory layout", "label field type chain",
               "spreadsheets from Python", "HxPortFilename modes", "toggle list assignment", "menu assignment"}


def statuses(report) -> dict[str, str]:
    return {fact["fact"]: fact["status"] for fact in report["facts"]}


@pytest.mark.parametrize("mode", list(fake_hx.MODES))
def test_doctor_module_reports_each_fact_per_mode(mode, tmp_path):
    world = fake_hx.HxWorld(mode=mode)
    add_field(world, make_scan(), name="scan.am")
    before = {name: obj.get_array().tobytes() if hasattr(obj, "get_array") else None
              for name, obj in world.hx_project._objects.items()}
    module = load_module(world, "BONeDoctor")
    module.ports.output.filenames = str(tmp_path / "report.json")
    module.do_it.press()
    module.do_it.press()  # a second check reuses its probe ports
    assert world.hx_message.records == []
    report = json.loads((tmp_path / "report.json").read_text())
    found = statuses(report)
    assert AVIZO_FACTS <= set(found)
    differing = {fact for fact, status in found.items() if status.startswith("differs")}
    environment = {"torch and CUDA", "segmentation-models-pytorch", "Python"}
    assert differing - environment == DIFFERS[mode], found
    assert all(status == "OK" or status.startswith(("differs: ", "not checked: ")) for status in found.values())
    assert report["summary"] == ("all OK" if not differing else f"differs: {', '.join(sorted(differing, key=list(found).index))}")
    assert module.report.text.startswith("bone_avizo doctor: ") and "saved " in module.report.text
    after = {name: obj.get_array().tobytes() if hasattr(obj, "get_array") else None
             for name, obj in world.hx_project._objects.items()}
    assert after == {**before, "BONeDoctor": None}  # the probes are gone, the scan untouched


def test_doctor_in_the_console_checks_avizo_without_ports():
    world = fake_hx.HxWorld(mode="fresh_wrappers")
    report = doctor_report(hx=world.globals())
    found = statuses(report)
    assert found["same Python object on each access"].startswith("differs: ")
    assert found["ports"].startswith("not checked: ")
    assert set(world.hx_project.objects) == set()


def test_doctor_outside_avizo_checks_the_environment(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert avizo_main(["doctor", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    found = statuses(report)
    assert found["Python"] == "OK" and found["Avizo"].startswith("not checked: hx_project is not visible")
    assert printed.startswith("bone_avizo doctor: ") and f"saved {out}" in printed
    assert not list(tmp_path.glob("*.partial"))


def test_doctor_reports_a_label_field_that_cannot_be_recognised(monkeypatch):
    world = fake_hx.HxWorld(mode="flat_types")
    monkeypatch.setattr("bone_avizo.avizo.doctor.write_material_names", lambda field, names: None)
    # a label field without a label-field class and without materials (the fake names them on set_array)
    monkeypatch.setattr(fake_hx.HxUniformLabelField3, "set_array", fake_hx.HxUniformScalarField3.set_array)
    monkeypatch.setattr(fake_hx.HxUniformLabelField3, "__init__", fake_hx.HxUniformScalarField3.__init__)
    status = statuses(doctor_report(hx=world.globals()))["label field type chain"]
    assert status.startswith("differs: label fields cannot be recognised")
