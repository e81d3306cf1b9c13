"""Objects of the fake Avizo project: the base object with ports, parameter bundles, and the
uniform scalar and label fields with ``get_array``/``set_array`` in (x, y, z) order."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from .ports import HxConnection, HxPort, Strict


class PortsView:
    """``obj.ports``: ports by attribute (``obj.ports.data``) or key, iterable in creation order."""

    def __init__(self, ports: dict[str, HxPort]):
        object.__setattr__(self, "_ports", ports)

    def __getattr__(self, name: str) -> HxPort:
        try:
            return self._ports[name]
        except KeyError:
            raise AttributeError(f"no port named {name!r}; ports: {list(self._ports)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("ports are created by constructing a port with the module as owner")

    def __getitem__(self, name: str) -> HxPort:
        return self._ports[name]

    def __iter__(self) -> Iterator[HxPort]:
        return iter(list(self._ports.values()))

    def __len__(self) -> int:
        return len(self._ports)

    def __contains__(self, name) -> bool:
        return name in self._ports


class HxObject(Strict):
    """An object that can live in the project: a unique ``name``, ``ports``, ``selected``."""

    _attributes = ("selected",)

    def __init__(self):
        self._init_object(type(self).__name__)

    def _init_object(self, name: str) -> None:
        self._ports: dict[str, HxPort] = {}
        self._port_counter = 0
        self._project = None
        self._name = name
        self.selected = False

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        value = str(value)
        if self._project is not None:
            value = self._project._rename(self, value)
        self._name = value

    @property
    def ports(self) -> PortsView:
        return PortsView(self._ports)

    @property
    def portnames(self) -> list[str]:
        return list(self._ports)

    def _unnamed_port_name(self) -> str:
        self._port_counter += 1
        return f"port{self._port_counter}"

    def _register_port(self, port: HxPort, old_name: str | None) -> None:
        if port.name in self._ports and self._ports[port.name] is not port:
            raise ValueError(f"{self.name} already has a port named {port.name!r}")
        if old_name is not None:
            self._ports.pop(old_name, None)
        self._ports[port.name] = port

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class HxParamBundle:
    """A parameter bundle: ordered ``name -> value or sub-bundle``.

    ``bundle[name]`` reads (KeyError when absent), ``bundle[name] = value`` writes (a mapping
    becomes a sub-bundle), ``del``, ``in``, ``len`` and iteration over names work, and ``str()``
    gives a dict literal, as public modules rely on with ``eval(str(field.parameters['Materials']))``.
    """

    def __init__(self, name: str = "", items: Mapping[str, Any] | None = None):
        self.name = name
        self._items: dict[str, Any] = {}
        for key, value in (items or {}).items():
            self[key] = value

    def __getitem__(self, key: str):
        return self._items[key]

    def __setitem__(self, key: str, value) -> None:
        if isinstance(value, Mapping):
            value = HxParamBundle(key, value)
        self._items[str(key)] = value

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __contains__(self, key) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, HxParamBundle) else v for k, v in self._items.items()}

    def __str__(self) -> str:
        return repr(self.to_dict())

    __repr__ = __str__


# dtypes Avizo has no scalar field type for; public modules cast them before set_array
_REFUSED_DTYPES = {np.dtype(np.uint32), np.dtype(np.uint64), np.dtype(np.int64), np.dtype(np.bool_),
                   np.dtype(np.float16)}


class HxUniformScalarField3(HxObject):
    """A 3-D image on a uniform grid.

    ``get_array()`` returns the stored array itself, shape (nx, ny, nz); ``set_array(a)`` stores
    what it is given (no copy) and refuses dtypes Avizo has no field type for. ``bounding_box`` is
    ((xmin, ymin, zmin), (xmax, ymax, zmax)) spanning the first to the last voxel *centre*; a
    field whose box was never set spans (0, 0, 0)..(nx-1, ny-1, nz-1), i.e. voxel size 1.
    ``ports.master`` is the connection to the module that made it. Every ``get_array()`` is counted
    in the project's ``array_reads``; with the ``copying_arrays`` quirk it returns a copy.
    """

    _attributes = ("parameters",)

    def __init__(self):
        super().__init__()
        self._array: np.ndarray | None = None
        self._bbox = None
        self.parameters = HxParamBundle("parameters")
        HxConnection(self, "master", "Master")

    def get_array(self) -> np.ndarray:
        if self._array is None:
            raise RuntimeError(f"{self.name} holds no data yet; call set_array first")
        if self._project is not None:
            self._project.array_reads[self.name] += 1
            if "copying_arrays" in self._project.quirks:
                return self._array.copy(order="K")
        return self._array

    def set_array(self, array) -> None:
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(f"set_array needs a 3-D (x, y, z) array, got shape {array.shape}")
        if array.dtype in _REFUSED_DTYPES:
            raise TypeError(f"Avizo has no {type(self).__name__} of dtype {array.dtype}")
        self._array = array

    @property
    def bounding_box(self):
        if self._bbox is not None:
            return self._bbox
        if self._array is None:
            return ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        return ((0.0, 0.0, 0.0), tuple(float(n - 1) for n in self._array.shape))

    @bounding_box.setter
    def bounding_box(self, box) -> None:
        low, high = box
        low, high = tuple(float(v) for v in low), tuple(float(v) for v in high)
        if len(low) != 3 or len(high) != 3:
            raise ValueError(f"bounding_box needs ((xmin, ymin, zmin), (xmax, ymax, zmax)), got {box!r}")
        self._bbox = (low, high)


class HxUniformLabelField3(HxUniformScalarField3):
    """A label image (uint8 or uint16) whose ``parameters['Materials']`` names the labels in order.

    After ``set_array`` every label value present has a material: the first is "Exterior", the
    second "Inside", further ones "Material<i>" (an approximation of Avizo's own naming).
    """

    _LABEL_DTYPES = {np.dtype(np.uint8), np.dtype(np.uint16)}

    def __init__(self):
        super().__init__()
        self.parameters["Materials"] = {"Exterior": {}, "Inside": {}}

    def set_array(self, array) -> None:
        array = np.asarray(array)
        if array.dtype not in self._LABEL_DTYPES:
            raise TypeError(f"a label field holds uint8 or uint16 labels, got {array.dtype}")
        super().set_array(array)
        materials = self.parameters["Materials"]
        for index in range(len(materials), int(array.max()) + 1 if array.size else 0):
            materials[f"Material{index}"] = {}


class _Interfaces:
    """``obj.all_interfaces``: the object's interfaces by class name (``.HxSpreadSheetInterface``)."""

    def __init__(self, **interfaces):
        self.__dict__.update(interfaces)


class SpreadSheetColumn:
    """One column: ``name``, ``typename`` ('int', 'float' or 'string'), ``asarray()``, ``setarray(values)``."""

    _DTYPES = {"int": np.int64, "float": np.float64, "string": object}

    def __init__(self, table: "SpreadSheetTable", name: str, typename: str):
        if typename not in self._DTYPES:
            raise TypeError(f"column {name!r}: unknown type {typename!r}; use one of {sorted(self._DTYPES)}")
        self._table = table
        self.name = str(name)
        self.typename = typename
        self._values = np.zeros(table.rows, self._DTYPES[typename])

    def asarray(self) -> np.ndarray:
        return self._values

    def setarray(self, values) -> None:
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"column {self.name!r} takes a 1-D array, got shape {values.shape}")
        if self.typename == "string":
            values = np.array([str(v) for v in values], dtype=object)
        elif self.typename == "int" and values.dtype.kind not in "biu":
            raise TypeError(f"column {self.name!r} holds integers, got {values.dtype}")
        self._table._resize(len(values), self)
        self._values = values.astype(self._DTYPES[self.typename])


class SpreadSheetTable:
    """One table: ``name``, ``columns``, ``rows`` (the row count, shared by all columns), ``add_column``."""

    def __init__(self, name: str):
        self.name = str(name)
        self._columns: list[SpreadSheetColumn] = []
        self.rows = 0

    @property
    def columns(self) -> list[SpreadSheetColumn]:
        return list(self._columns)

    def add_column(self, name: str, typename: str = "float") -> SpreadSheetColumn:
        column = SpreadSheetColumn(self, name, typename)
        self._columns.append(column)
        return column

    def _resize(self, rows: int, by: SpreadSheetColumn) -> None:
        others = [c for c in self._columns if c is not by]
        if others and rows != self.rows:
            raise ValueError(f"table {self.name!r} has {self.rows} rows; column {by.name!r} got {rows} values")
        self.rows = rows


class HxSpreadSheetInterface:
    """``tables`` of a spreadsheet (none when created) and ``add_table(name)``."""

    def __init__(self):
        self._tables: list[SpreadSheetTable] = []

    @property
    def tables(self) -> list[SpreadSheetTable]:
        return list(self._tables)

    def add_table(self, name: str) -> SpreadSheetTable:
        table = SpreadSheetTable(name)
        self._tables.append(table)
        return table


class HxSpreadSheet(HxObject):
    """A spreadsheet object: named tables of typed columns, reached through
    ``all_interfaces.HxSpreadSheetInterface``.

    Public scripted-module code reads spreadsheets as
    ``obj.all_interfaces.HxSpreadSheetInterface.tables[i].columns[j].asarray()``; that is modelled
    as seen. No public code creating tables from Python was found: ``add_table(name)``,
    ``add_column(name, typename)`` and ``column.setarray(values)`` are this mock's assumption (see
    :mod:`bone_avizo.avizo.outputs`, which falls back softly where a real Avizo differs).
    """

    _attributes = ("parameters", "all_interfaces")

    def __init__(self):
        super().__init__()
        self.parameters = HxParamBundle("parameters")
        HxConnection(self, "master", "Master")
        self.all_interfaces = _Interfaces(HxSpreadSheetInterface=HxSpreadSheetInterface())
