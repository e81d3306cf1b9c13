"""What a scripted module puts into the project: result fields reused run after run, and tables.

:class:`ModuleResults` keeps a module's result objects between runs: a new run overwrites the
previous result field in place (as Avizo's own compute modules reuse their result, so that a
Volume Rendering or Ortho Slice connected to it stays connected) instead of piling up copies, and
results a run no longer makes are removed. The caller computes everything first and only then
writes, so a failed or cancelled run leaves the previous results untouched.

:func:`write_spreadsheet` puts tables into an ``HxSpreadSheet``. Public scripted-module code shows
spreadsheets in the project read through ``obj.all_interfaces.HxSpreadSheetInterface.tables[i]
.columns[j].asarray()``; no public code was found that *creates* tables from Python. The calls
used here (``add_table(name)``, ``add_column(name, typename)``, ``column.setarray(values)``) are
therefore modelled, not confirmed: where they are missing the half-made spreadsheet is removed, a
warning is logged and None is returned (the module still shows the report as text and can save
it as JSON), like material names in :mod:`bone_avizo.avizo.fields`.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bone_avizo.avizo.fields import is_label_field, volume_to_field
from bone_avizo.avizo.hx import hx_global
from bone_avizo.avizo.safety import find_object, note_created, note_renamed, remove_named
from bone_avizo.volume import Volume

log = logging.getLogger(__name__)

SPREADSHEET = "HxSpreadSheet"


def _remove_object(project: Any, obj: Any) -> None:
    """Remove ``obj`` (found by its name) from ``project`` when it is still there; failures are logged."""
    if obj is not None:
        remove_named(project, str(obj.name))


class ModuleResults:
    """The result objects of one module, by key (e.g. "labels", "prob_bone", "table").

    Results are remembered by their names and found again by name (never by Python identity, which
    Avizo need not keep); one whose master port is known to lead elsewhere is not taken for ours.
    """

    def __init__(self, module: Any, *, hx: Any = None):
        self._module = module
        self._hx = hx
        self._names: dict[str, str] = {}

    @property
    def project(self) -> Any:
        return hx_global(self._module, "hx_project", self._hx)

    def get(self, key: str) -> Any:
        """The result stored under ``key`` while it is still in the project (looked up by name), else None."""
        name = self._names.get(key)
        obj = find_object(self.project, name) if name is not None else None
        if obj is None or not self._made_here(obj):
            self._names.pop(key, None)
            return None
        return obj

    def _made_here(self, obj: Any) -> bool:
        """False only when ``obj``'s master port readably leads to another module."""
        try:
            source = obj.ports.master.source()
            return source is None or str(source.name) == str(self._module.name)
        except Exception:  # noqa: BLE001 - no readable master port: trust the name
            return True

    def put_volume(self, key: str, volume: Volume, *, label: bool, name: str, like: Any = None,
                   like_shape: Any = None) -> Any:
        """Write ``volume`` into the previous result field under ``key`` (or a new one) named ``name``.

        See :func:`~bone_avizo.avizo.volume_to_field` for ``label`` and ``like``. A previous result
        of the other kind (label vs scalar) is replaced by a new field.
        """
        previous = self.get(key)
        reuse = previous if previous is not None and is_label_field(previous) == label else None
        field = volume_to_field(volume, self.project, label=label, name=name, like=like, like_shape=like_shape,
                                into=reuse)
        return self.put(key, field, name=name)

    def put(self, key: str, obj: Any, *, name: str | None = None) -> Any:
        """Make ``obj`` (already in the project) the result under ``key``, removing the one it replaces,
        and give it ``name`` (taken over from the replaced object when it had it)."""
        previous = self.get(key)
        if previous is not None and str(previous.name) != str(obj.name):
            _remove_object(self.project, previous)
        if name is not None and obj.name != name:
            old = str(obj.name)
            obj.name = name
            note_renamed(old, str(obj.name))
        self._names[key] = str(obj.name)
        self._connect_master(obj)
        return obj

    def keep_only(self, keys: Iterable[str]) -> None:
        """Remove the results whose key is not in ``keys`` (e.g. probability maps no longer asked for)."""
        keep = set(keys)
        for key in [k for k in self._names if k not in keep]:
            remove_named(self.project, self._names.pop(key))

    def _connect_master(self, obj: Any) -> None:
        """Link the result to this module in the project graph (its ``master`` port), when possible."""
        try:
            master = obj.ports.master
            source = master.source()
            if source is None or str(source.name) != str(self._module.name):
                master.connect(self._module)
        except Exception as exc:  # noqa: BLE001 - cosmetic: the result is complete without the link
            log.debug("could not connect %s to its module (%s)", getattr(obj, "name", obj), exc)


# ---------------------------------------------------------------------------------------------
# spreadsheets
Columns = Mapping[str, Sequence[Any]]


def _column_typename(values: Sequence[Any]) -> str:
    """'string' when any value is text, 'int' when all are integers, else 'float'."""
    if any(isinstance(v, str) for v in values):
        return "string"
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return "int"
    return "float"


def _column_array(values: Sequence[Any], typename: str) -> np.ndarray:
    """``values`` as the array a spreadsheet column of ``typename`` holds (None -> NaN, '')."""
    if typename == "string":
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    if typename == "int":
        return np.asarray(values, dtype=np.int64)
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def write_spreadsheet(project: Any, tables: Mapping[str, Columns], *, name: str) -> Any:
    """A new ``HxSpreadSheet`` named ``name`` holding ``tables`` ({table: {column: values}}), or None
    (logged) where this Avizo does not offer the calls used (see the module docstring)."""
    try:
        sheet = project.create(SPREADSHEET)
    except Exception as exc:  # noqa: BLE001 - an Avizo without spreadsheets: the text report remains
        log.warning("no spreadsheet made: this Avizo cannot create %s (%s)", SPREADSHEET, exc)
        return None
    try:
        interface = sheet.all_interfaces.HxSpreadSheetInterface
        for title, columns in tables.items():
            _fill_table(interface.add_table(title), columns)
        sheet.name = name
    except (AttributeError, TypeError) as exc:
        _remove_object(project, sheet)
        log.warning("no spreadsheet made: this Avizo's spreadsheet interface differs (%s)", exc)
        return None
    except BaseException:
        _remove_object(project, sheet)
        raise
    note_created(sheet)
    return sheet


def _fill_table(table: Any, columns: Columns) -> None:
    for column_name, values in columns.items():
        typename = _column_typename(values)
        table.add_column(column_name, typename).setarray(_column_array(values, typename))

