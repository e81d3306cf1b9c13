"""NumPy ``.npy`` volumes, memory-mapped, with an optional ``<name>.npy.json`` metadata sidecar.

This module also holds the small metadata helpers the array formats share: one JSON-able
dictionary (``voxel_size``, ``origin``, ``unit``, ``name``, ``class_names``) that is the ``.npy``
sidecar, the HDF5 dataset attributes and the Zarr array attributes; unit conversion to mm; and
the dtype checks. Arrays are (z, y, x); voxel size and origin are (z, y, x) in mm.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bone_avizo.errors import (BoneAvizoError, CorruptFileError, InputFileError, InvalidVolumeError, OutputWriteError,
                               UnsupportedDtypeError)
from bone_avizo.io.base import VolumeSource, VolumeWriter, read_only_view, remove_path, reserve_space
from bone_avizo.io.registry import Format
from bone_avizo.volume import VolumeInfo

log = logging.getLogger(__name__)

# length unit spellings (lower case) -> millimetres per unit
_UNIT_MM = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "millimeters": 1.0, "millimetres": 1.0,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "\\u00b5m": 1e-3, "micron": 1e-3, "microns": 1e-3,
    "micrometer": 1e-3, "micrometre": 1e-3, "micrometers": 1e-3, "micrometres": 1e-3,
    "nm": 1e-6, "nanometer": 1e-6, "nanometre": 1e-6,
    "cm": 10.0, "centimeter": 10.0, "centimetre": 10.0,
    "m": 1000.0, "meter": 1000.0, "metre": 1000.0,
    "inch": 25.4, "in": 25.4,
}

READABLE_KINDS = "biuf"  # bool, signed, unsigned, float


# ---------------------------------------------------------------------------------------------
# shared helpers: units, dtypes, metadata dictionaries, atomic JSON
# ---------------------------------------------------------------------------------------------
def unit_to_mm(unit: str | None) -> float | None:
    """Millimetres per ``unit`` (e.g. 'µm', 'um', 'micron' -> 0.001), or None if unknown/empty."""
    if unit is None:
        return None
    return _UNIT_MM.get(str(unit).strip().lower())


def to_mm(values, unit: str | None, *, where: str) -> tuple[tuple[float, ...], str]:
    """Convert lengths given in ``unit`` to mm; an unknown unit keeps the values and the unit."""
    factor = unit_to_mm(unit)
    if factor is None:
        if unit not in (None, "", "pixel", "pixels"):
            log.warning("%s: unknown length unit %r; voxel size kept as is", where, unit)
        return tuple(float(v) for v in values), (str(unit) if unit else "mm")
    return tuple(float(v) * factor for v in values), "mm"


def require_file(path: Path, what: str = "file") -> Path:
    """Raise InputFileError unless ``path`` exists."""
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist; check the path")
    return path


def native_dtype(dtype, *, where: str) -> np.dtype:
    """``dtype`` in native byte order; UnsupportedDtypeError for complex, string or record types."""
    dtype = np.dtype(dtype)
    if dtype.kind not in READABLE_KINDS or dtype.fields is not None or dtype.shape:
        raise UnsupportedDtypeError(f"{where} has data type {dtype}, which is not supported; convert it to "
                                    "an integer or float type (e.g. uint16 or float32)")
    return dtype.newbyteorder("=")


def check_dtype(dtype, *, fmt: str, kinds: str = READABLE_KINDS) -> np.dtype:
    """Raise UnsupportedDtypeError unless ``fmt`` can store ``dtype``."""
    dtype = native_dtype(dtype, where=f"a volume to write as {fmt}")
    if dtype.kind not in kinds:
        raise UnsupportedDtypeError(f"{fmt} cannot store data type {dtype}; cast the volume first "
                                    "(e.g. bool -> uint8)")
    return dtype


def volume_attrs(info: VolumeInfo) -> dict[str, Any]:
    """The JSON-able metadata of ``info``: voxel_size/origin (z, y, x), unit, name, class_names."""
    attrs: dict[str, Any] = {"axes": "zyx", "voxel_size": list(info.voxel_size), "origin": list(info.origin),
                             "unit": info.unit, "name": info.name}
    if not info.calibrated:  # no voxel size was ever recorded: do not make the assumed 1 x 1 x 1 look measured
        del attrs["voxel_size"]
    if info.class_names is not None:
        attrs["class_names"] = list(info.class_names)
    return attrs


def _plain(value):
    """An attribute value (numpy scalar/array, bytes) as plain Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def info_from_attrs(attrs: Mapping[str, Any], shape, dtype, *, name: str, where: str) -> VolumeInfo:
    """A VolumeInfo from a metadata mapping written by :func:`volume_attrs` (or ilastik's
    ``element_size_um``); missing entries get defaults (voxel size 1, origin 0). Without a voxel size the
    info is marked uncalibrated."""
    def get(key):
        return _plain(attrs[key]) if key in attrs else None

    try:
        unit = get("unit") or "mm"
        if get("voxel_size") is None and get("element_size_um") is not None:
            voxel, voxel_unit = get("element_size_um"), "um"
        else:
            voxel, voxel_unit = get("voxel_size") or [1.0, 1.0, 1.0], unit
        voxel, unit_out = to_mm(voxel, voxel_unit, where=where)
        origin, _ = to_mm(get("origin") or [0.0, 0.0, 0.0], unit, where=where)
        names = get("class_names")
        calibrated = get("voxel_size") is not None or get("element_size_um") is not None
        return VolumeInfo(tuple(shape), dtype, tuple(voxel), tuple(origin), str(get("name") or name),
                          tuple(names) if names else None, unit_out, calibrated)
    except BoneAvizoError:  # a bad voxel size or shape, already said as such
        raise
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"{where} has malformed metadata ({exc}); fix or remove its voxel_size/origin "
                               "attributes") from exc


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary name and an atomic rename."""
    temp = path.with_name(path.name + ".partial")
    try:
        temp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def check_3d(shape, *, where: str) -> tuple[int, int, int]:
    """Raise InvalidVolumeError unless ``shape`` is 3-D and non-empty."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or 0 in shape:
        raise InvalidVolumeError(f"{where} holds an array of shape {shape}, not a 3-D volume (z, y, x); "
                                 "give a 3-D stack of slices")
    return shape  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# .npy
# ---------------------------------------------------------------------------------------------
def sidecar_path(path: Path) -> Path:
    """``<name>.npy.json``: the metadata sidecar of a .npy volume."""
    return path.with_name(path.name + ".json")


class ReopeningSource(VolumeSource):
    """A file source that pickles as its constructor call: the copy reopens the file where it is
    unpickled (e.g. in a worker process); handles and memory maps never travel, nor do the voxels."""

    _args: tuple = ()
    _options: dict = {}

    def _remember(self, *args, **options) -> None:
        """Record the constructor arguments used to reopen this source."""
        self._args, self._options = args, options

    def __reduce__(self):
        return functools.partial(type(self), **self._options), self._args


class MappedSource(ReopeningSource):
    """A source over a memory-mapped (z, y, x) array ``self._array``: reads copy only what they slice,
    converted to the native-order ``info.dtype``."""

    _array: np.ndarray | None = None

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return np.ascontiguousarray(self._array[z0:z1], dtype=self.dtype)

    def view_slab(self, z0: int, z1: int) -> np.ndarray | None:
        self._check_slab(z0, z1)
        return read_only_view(self._array[z0:z1], self.dtype)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return np.ascontiguousarray(self._array[z, y, x], dtype=self.dtype)

    def close(self) -> None:
        self._array = None


class NpySource(MappedSource):
    """A memory-mapped ``.npy`` volume (z, y, x); metadata from ``<name>.npy.json`` when present."""

    def __init__(self, path: str | os.PathLike):
        self.path = require_file(Path(path))
        self._remember(self.path)
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            if "object" in str(exc).lower() or "pickle" in str(exc).lower():
                raise UnsupportedDtypeError(f"{self.path} holds Python objects, not numbers; save a numeric "
                                            "array (np.save with an integer or float dtype)") from exc
            raise CorruptFileError(f"{self.path} is not a valid or complete .npy file ({exc}); "
                                   "re-create it with numpy.save") from exc
        except OSError as exc:
            raise CorruptFileError(f"{self.path} cannot be read as .npy ({exc}); re-create it with "
                                   "numpy.save") from exc
        self._array = array
        shape = check_3d(array.shape, where=str(self.path))
        dtype = native_dtype(array.dtype, where=str(self.path))
        meta = self._sidecar()
        self.info = info_from_attrs(meta, shape, dtype, name=self.path.stem, where=str(self.path))

    def _sidecar(self) -> dict:
        side = sidecar_path(self.path)
        if not side.is_file():
            return {}
        try:
            return json.loads(side.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise CorruptFileError(f"metadata sidecar {side} is not valid JSON ({exc}); fix or delete it") from exc



class MappedWriter(VolumeWriter):
    """A writer whose temporary output is a numpy memmap held in ``self._array`` (set by ``_open``)."""

    _array = None

    def _write(self, z0: int, slab: np.ndarray) -> None:
        self._array[z0:z0 + slab.shape[0]] = slab

    def _close(self) -> None:
        if self._array is not None:
            self._array.flush()
        self._array = None


class NpyWriter(MappedWriter):
    """Writes ``.npy`` through ``numpy.lib.format.open_memmap`` on ``<name>.npy.partial``; on commit the
    ``<name>.npy.json`` sidecar (voxel size, origin, unit, name, class names) is written atomically first,
    then the array is renamed. Options: ``sidecar`` (default True)."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 sidecar: bool = True):
        check_dtype(info.dtype, fmt=".npy")
        self.sidecar = sidecar
        self._array = None
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _open(self) -> None:
        self._array = np.lib.format.open_memmap(self.temp_path, mode="w+", dtype=self.info.dtype,
                                                shape=self.info.shape)
        reserve_space(self.temp_path)

    def commit(self) -> Path:
        if not self._closed:
            side = sidecar_path(self.path)
            try:
                if self.sidecar:
                    write_json_atomic(side, volume_attrs(self.info))
                elif side.exists():
                    remove_path(side)  # a stale sidecar would describe another volume
            except OSError as exc:
                self._discard()
                raise OutputWriteError(f"writing {side} failed: {exc.strerror or exc}; check free disk "
                                       "space") from exc
        return super().commit()


FORMATS = {
    "npy": Format("npy", (".npy",), NpySource, NpyWriter,
                  "NumPy .npy (memory-mapped), metadata in a <name>.npy.json sidecar"),
}
