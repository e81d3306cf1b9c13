"""A self-check of the Avizo the modules run in: every fact the adapter relies on, each OK or not.

No official reference of Avizo's Python API is public, and what public scripted-module code shows
leaves some behaviour open (DESIGN.md, section 5). The adapter is written to be safe either way;
this check tells which way a user's Avizo goes, and the report is what to attach to a bug report.

In Avizo: the ``BONeDoctor`` module (Python Scripts), or in Avizo's Python console
``from bone_avizo.avizo.doctor import run; run()``. Outside Avizo, ``python -m bone_avizo.avizo
doctor`` checks the Python environment only. Each fact is ``{"fact", "value", "status"}`` where
status is ``"OK"``, ``"differs: <what that breaks or costs>"`` or ``"not checked: <why>"``.
The probes (two small fields, a spreadsheet, hidden ports on the module) are removed afterwards.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bone_avizo.avizo.env import environment_report
from bone_avizo.avizo.fields import has_materials, label_type_named, type_chain, write_material_names
from bone_avizo.avizo.hx import AvizoNameError, hx_global
from bone_avizo.avizo.safety import find_object, remove_named

log = logging.getLogger(__name__)

OK = "OK"
PROBE = "BONeDoctor.probe"
REPORT_NAME = "bone_avizo_doctor.json"
_PROBE_XYZ = (5, 4, 3)  # distinct sizes: an axis swap shows


class _Report:
    def __init__(self):
        self.facts: list[dict[str, Any]] = []

    def add(self, fact: str, value: Any, status: str = OK) -> None:
        self.facts.append({"fact": fact, "value": value, "status": status})

    def check(self, fact: str, probe: Callable[[], tuple[Any, str]]) -> None:
        """Run ``probe`` (-> value, status); an exception is itself a finding."""
        try:
            value, status = probe()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
            value, status = f"{type(exc).__name__}: {exc}", "differs: the call failed (see value)"
        self.add(fact, value, status)


def doctor_report(module: Any = None, *, hx: Any = None) -> dict[str, Any]:
    """The report as a dict: ``{"created", "summary", "facts": [...]}``.

    ``module``: the scripted module running the check (its ports are probed); ``hx``: Avizo's
    globals (a mapping or object), found through ``module`` when not given. Without Avizo only
    the Python environment is checked.
    """
    report = _Report()
    _environment(report)
    project = _global(module, "hx_project", hx)
    if project is None:
        report.add("Avizo", None, "not checked: hx_project is not visible (not inside Avizo); run the "
                   "BONeDoctor module, or run() in Avizo's Python console")
    else:
        app = _global(module, "hx_app", hx)
        report.add("Avizo version", str(getattr(app, "version", None) or "unknown"))
        _fields(report, project)
        _spreadsheet(report, project)
        if module is not None:
            _ports(report, module, hx)
        else:
            report.add("ports", None, "not checked: run the BONeDoctor module to check port behaviour")
    differing = [f["fact"] for f in report.facts if f["status"].startswith("differs")]
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "bone_avizo_doctor": 1,
            "summary": "all OK" if not differing else f"differs: {', '.join(differing)}",
            "facts": report.facts}


def _global(module: Any, name: str, hx: Any) -> Any:
    try:
        return hx_global(module, name, hx)
    except AvizoNameError:
        main = sys.modules.get("__main__")
        return getattr(main, name, None)


# ---------------------------------------------------------------------------------------------
def _environment(report: _Report) -> None:
    env = environment_report()
    report.add("Python", f"{platform.python_version()} ({sys.executable})",
               OK if sys.version_info >= (3, 11) else "differs: bone_avizo needs Python 3.11 or newer")
    report.add("bone_avizo", env["bone_avizo"])
    report.add("numpy", env["numpy"])
    torch_text = env["torch"]
    report.add("torch and CUDA", torch_text, "differs: torch is missing: DLPred and DLFit cannot run; see "
               "docs/avizo.md" if torch_text.startswith("not installed") else OK)
    smp = env["segmentation_models_pytorch"]
    report.add("segmentation-models-pytorch", smp, "differs: missing: DLPred and DLFit cannot build networks"
               if smp.startswith("not installed") else OK)


def _fields(report: _Report, project: Any) -> None:
    values = np.asfortranarray(np.arange(np.prod(_PROBE_XYZ), dtype=np.uint8).reshape(_PROBE_XYZ))
    try:
        field = project.create("HxUniformScalarField3")
        field.set_array(values)
        field.name = PROBE
        name = str(field.name)
    except Exception as exc:  # noqa: BLE001
        report.add("create a field", f"{type(exc).__name__}: {exc}", "differs: hx_project.create / set_array "
                   "failed: DLPred cannot put its results into the project")
        return
    try:
        report.check("same Python object on each access", lambda: _identity(project, name))
        report.check("get_array view or copy", lambda: _view_or_copy(project, name))
        report.check("get_array axis order (x, y, z)", lambda: _axis_order(project, name, values))
        report.check("get_array memory layout", lambda: _layout(project, name))
        report.check("label field type chain", lambda: _label_field(project))
    finally:
        remove_named(project, name)


def _identity(project: Any, name: str) -> tuple[Any, str]:
    first, second = find_object(project, name), find_object(project, name)
    if first is second:
        return "same object", OK
    return "a new wrapper per access", ("differs: objects cannot be compared with `is`; bone_avizo tracks them "
                                        "by name, so nothing breaks (scripts of your own must do the same)")


def _view_or_copy(project: Any, name: str) -> tuple[Any, str]:
    field = find_object(project, name)
    first, second = np.asarray(field.get_array()), np.asarray(field.get_array())
    if np.shares_memory(first, second):
        return "view of the field's memory", OK
    return "a copy per call", ("differs: each get_array() costs the field's size in memory again; bone_avizo "
                               "reads each field once per Apply, so a scan needs its size once more, not more")


def _axis_order(project: Any, name: str, values: np.ndarray) -> tuple[Any, str]:
    array = np.asarray(find_object(project, name).get_array())
    if array.shape == values.shape and np.array_equal(array, values):
        return f"shape {array.shape} as set", OK
    if array.shape == values.shape[::-1] and np.array_equal(array, values.T):
        return f"shape {array.shape}: (z, y, x)", ("differs: get_array returns (z, y, x): every field would be "
                                                    "read transposed; report this, do not use the modules")
    return f"shape {array.shape}", "differs: get_array does not return what set_array was given: do not use the modules"


def _layout(project: Any, name: str) -> tuple[Any, str]:
    array = np.asarray(find_object(project, name).get_array())
    if array.flags.f_contiguous:
        return "x fastest (Fortran order in x, y, z)", OK
    return ("C order in (x, y, z)", "differs: reading a field makes one extra copy to put it in (z, y, x) order "
            "(more memory, no wrong result)")


def _label_field(project: Any) -> tuple[Any, str]:
    field = project.create("HxUniformLabelField3")
    try:
        field.set_array(np.zeros(_PROBE_XYZ, np.uint8, order="F"))
        write_material_names(field, ("Exterior", "bone"))
        field.name = PROBE + ".labels"
        chain, named, materials = type_chain(field), label_type_named(field), has_materials(field)
    finally:
        remove_named(project, str(field.name))
    value = {"type_chain": chain, "materials": materials}
    if named:
        return value, OK
    if materials:
        return value, ("differs: no label-field class in the Python type chain; label fields are recognised by "
                       "their Materials instead (works)")
    return value, ("differs: label fields cannot be recognised (no class name, no Materials): DLFit and IoU "
                   "would refuse them; report this")


def _spreadsheet(report: _Report, project: Any) -> None:
    from bone_avizo.avizo.outputs import write_spreadsheet

    def probe():
        sheet = write_spreadsheet(project, {"probe": {"a": [1, 2]}}, name=PROBE + ".table")
        if sheet is None:
            return "cannot create tables from Python", ("differs: IoU and DLFit show their tables as text only "
                                                        "(saved as JSON/CSV files); nothing else is lost")
        remove_named(project, str(sheet.name))
        return "HxSpreadSheet tables", OK

    report.check("spreadsheets from Python", probe)


def _ports(report: _Report, module: Any, hx: Any) -> None:
    def port_class(name):
        return hx_global(module, name, hx)

    def probe_port(kind: str, name: str):
        """The module's hidden probe port ``name`` (made on the first check, reused after)."""
        existing = getattr(getattr(module, "ports", None), name, None)
        if existing is not None:
            return existing
        port = port_class(kind)(module, name, "doctor")
        port.visible = False
        return port

    def filename_modes():
        klass = port_class("HxPortFilename")
        modes = {m: hasattr(klass, m) for m in ("ANY_FILE", "EXISTING_FILE", "MULTI_FILE", "LOAD_DIRECTORY")}
        missing = [m for m, present in modes.items() if not present]
        return modes, OK if not missing else f"differs: {', '.join(missing)} missing: file ports fall back to ANY_FILE"

    def toggles():
        klass = port_class("HxPortToggleList")
        port = probe_port("HxPortToggleList", "doctor_toggles")
        port.toggles = [klass.Toggle(label="a"), klass.Toggle(label="b")]
        port.toggles[1].checked = klass.Toggle.CHECKED
        seen = [bool(t.checked) for t in port.toggles]
        return seen, OK if seen == [False, True] else "differs: toggle lists cannot be assigned: option toggles fail"

    def menus():
        port = probe_port("HxPortMultiMenu", "doctor_menu")
        port.menus = [port_class("HxPortButtonMenu").Menu(options=["a", "b", "c"])]
        port.menus[0].selected = 2
        seen = port.menus[0].selected
        return seen, OK if seen == 2 else "differs: menus cannot be assigned: option menus fail"

    report.check("HxPortFilename modes", filename_modes)
    report.check("toggle list assignment", toggles)
    report.check("menu assignment", menus)


# ---------------------------------------------------------------------------------------------
def format_report(report: dict[str, Any]) -> str:
    """The report as lines ``fact: value -> status`` with the summary first."""
    lines = [f"bone_avizo doctor: {report['summary']}"]
    for fact in report["facts"]:
        value = fact["value"] if isinstance(fact["value"], str) else json.dumps(fact["value"], default=str)
        lines.append(f"{fact['fact']}: {value} -> {fact['status']}")
    return "\n".join(lines)


def save_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON (through a temporary name); returns the path."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    temporary.replace(path)
    return path


def run(output: str | Path | None = None, *, module: Any = None, hx: Any = None) -> dict[str, Any]:
    """Check, print the report and save it as JSON (default: ``bone_avizo_doctor.json`` in the home folder)."""
    report = doctor_report(module, hx=hx)
    print(format_report(report))
    path = save_report(report, output or Path.home() / REPORT_NAME)
    print(f"saved {path}: attach it to a bug report")
    return report
