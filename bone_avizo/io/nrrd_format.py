"""NRRD volumes (.nrrd, .nhdr + data file) and 3D Slicer segmentations (.seg.nrrd); headers read with pynrrd.

NRRD lists axes fastest first (``sizes: x y z``); arrays here are (z, y, x). The voxel size is the
length of each axis' ``space directions`` vector (else ``spacings``) in ``space units`` (default mm); the
origin is ``space origin`` along the world axis each array axis follows. A non-axis-aligned direction
raises FormatError. Non-spatial axes (``none`` directions: channels, Slicer segment layers) must have
size 1. Raw data are memory-mapped (lazy); gzip, bzip2 and ASCII data are decoded whole on first read.

A Slicer segmentation (``.seg.nrrd``, or any NRRD with ``SegmentN_*`` fields) is read as a label volume:
class names from ``SegmentN_Name`` at their ``SegmentN_LabelValue``; overlapping segments (several
layers) are refused. Writing ``.seg.nrrd`` makes one segment per class 1..N-1 (class 0 is empty space)
with its name, a colour, its extent and label value, so Slicer opens it as a segmentation.
"""
from __future__ import annotations

import bz2
import gzip
import json
import logging
import os
import threading
import zlib
from pathlib import Path

import numpy as np

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, InputFileError, InvalidVolumeError,
                               UnsupportedDtypeError)
from bone_avizo.io.medical import ScratchWriter, axis_aligned, read_stream_into
from bone_avizo.io.npy import ReopeningSource, check_dtype, require_file, to_mm, volume_attrs
from bone_avizo.io.registry import Format
from bone_avizo.volume import VolumeInfo

try:
    import nrrd
except ImportError:  # pragma: no cover - pynrrd is a default dependency
    nrrd = None

log = logging.getLogger(__name__)

META_KEY = "bone_avizo"
NRRD_TYPES = {
    "int8": ("signed char", "int8", "int8_t"),
    "uint8": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "int16": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "uint16": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "int32": ("int", "signed int", "int32", "int32_t"),
    "uint32": ("uint", "unsigned int", "uint32", "uint32_t"),
    "int64": ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
              "int64_t"),
    "uint64": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "float32": ("float",),
    "float64": ("double",),
}
TYPE_OF = {spelling: np.dtype(name) for name, spellings in NRRD_TYPES.items() for spelling in spellings}
ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
             "ascii": "ascii", "text": "ascii", "txt": "ascii"}
# segment colours (RGB 0..1): by class name where Slicer has a usual one, else cycled
NAMED_COLOURS = {"bone": (0.945, 0.839, 0.569), "pore": (0.2, 0.45, 0.9), "pores": (0.2, 0.45, 0.9),
                 "marrow": (0.85, 0.2, 0.2), "soft": (0.8, 0.55, 0.45), "implant": (0.6, 0.6, 0.65)}
CYCLE = ((0.9, 0.8, 0.2), (0.85, 0.2, 0.2), (0.2, 0.45, 0.9), (0.2, 0.75, 0.3), (0.7, 0.3, 0.8), (0.9, 0.5, 0.1))


def _require_pynrrd() -> None:
    if nrrd is None:
        raise FormatError("reading NRRD needs the pynrrd package: pip install pynrrd")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_header(path: Path) -> tuple[dict, int]:
    """The header of a .nrrd/.nhdr (pynrrd's parsed dict) and the byte where attached data start."""
    with open(require_file(path), "rb") as fh:
        if not fh.read(4) == b"NRRD":
            raise FormatError(f"{path} is not a NRRD file (it does not start with 'NRRD'); check the file or "
                              "its extension")
        fh.seek(0)
        try:
            header = nrrd.read_header(fh)
        except Exception as exc:  # nrrd.NRRDError, ValueError, UnicodeDecodeError
            raise CorruptFileError(f"{path} has a malformed NRRD header ({exc}); fix or re-export it") from exc
        return header, fh.tell()


def _spatial_axes(header: dict, path: Path) -> list[int]:
    """The indices (file order) of the 3 spatial axes; the others must have size 1."""
    sizes = [int(s) for s in header["sizes"]]
    if "space directions" in header:
        directions = np.asarray(header["space directions"], dtype=float)
        spatial = [i for i, row in enumerate(directions) if np.all(np.isfinite(row))]
    elif "spacings" in header:
        spatial = [i for i, s in enumerate(np.asarray(header["spacings"], dtype=float)) if np.isfinite(s)]
    else:
        spatial = [i for i, s in enumerate(sizes) if s > 1] if len(sizes) > 3 else list(range(len(sizes)))
    extra = [i for i in range(len(sizes)) if i not in spatial and sizes[i] != 1]
    if len(spatial) != 3 or extra:
        layers = any(k.startswith("Segment") for k in header)
        how = ("overlapping segments in several layers; in Slicer export the segments to a labelmap first"
               if layers and extra else "a single-channel 3-D volume is needed")
        raise InvalidVolumeError(f"{path} has {len(sizes)} axes (sizes {' '.join(map(str, sizes))}, "
                                 f"{len(spatial)} spatial); {how}")
    return spatial


def _geometry(header: dict, spatial: list[int], path: Path) -> tuple[tuple, tuple, str]:
    """Voxel size and origin (z, y, x, mm) and the unit."""
    where = str(path)
    if "space directions" in header:
        directions = np.asarray(header["space directions"], dtype=float)[spatial]
        spacing, origin = axis_aligned(directions, header.get("space origin"), where=where)
    else:
        spacings = np.asarray(header.get("spacings", [1.0] * len(header["sizes"])), dtype=float)
        spacing, origin = tuple(abs(float(spacings[i])) for i in spatial), (0.0, 0.0, 0.0)
        if "spacings" not in header:
            log.warning("%s has no space directions or spacings; using voxel size 1 x 1 x 1", path)
    units = [u for u in header.get("space units", []) if u]
    unit = units[0] if units else "mm"
    if len(set(units)) > 1:
        log.warning("%s has different units per axis (%s); using %s for all", path, units, unit)
    voxel, unit_out = to_mm(spacing[::-1], unit, where=where)
    origin_mm, _ = to_mm(origin[::-1], unit, where=where)
    return voxel, origin_mm, unit_out


def _segment_names(header: dict) -> tuple[str, ...] | None:
    """Class names (index = label value) from Slicer's SegmentN_Name/SegmentN_LabelValue fields, or None."""
    values = {}
    index = 0
    while f"Segment{index}_Name" in header or f"Segment{index}_ID" in header:
        name = header.get(f"Segment{index}_Name") or header.get(f"Segment{index}_ID")
        try:
            value = int(header.get(f"Segment{index}_LabelValue", index + 1))
        except ValueError:
            value = index + 1
        values[value] = str(name)
        index += 1
    if not values:
        return None
    names = ["background"] + [f"label{v}" for v in range(1, max(values) + 1)]
    for value, name in values.items():
        names[value] = name
    return tuple(names)


def _our_metadata(header: dict) -> dict:
    try:
        value = json.loads(header.get(META_KEY, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class NrrdSource(ReopeningSource):
    """A NRRD volume (z, y, x): raw data memory-mapped; gzip/bzip2/ASCII data decoded whole on first read."""

    def __init__(self, path: str | os.PathLike):
        _require_pynrrd()
        self.path = require_file(Path(path))
        self._remember(self.path)
        header, offset = read_header(self.path)
        self.header = header
        spatial = _spatial_axes(header, self.path)
        sizes = [int(header["sizes"][i]) for i in spatial]
        dtype = self._dtype(header)
        voxel, origin, unit = _geometry(header, spatial, self.path)
        extra = _our_metadata(header)
        names = tuple(extra["class_names"]) if extra.get("class_names") else _segment_names(header)
        self.info = VolumeInfo(tuple(sizes[::-1]), dtype.newbyteorder("="), voxel, origin,
                               str(extra.get("name") or _stem(self.path)), names, unit)
        self.encoding = ENCODINGS.get(str(header.get("encoding", "raw")).lower())
        if self.encoding is None:
            raise FormatError(f"{self.path} has NRRD encoding {header.get('encoding')!r}, which is not supported; "
                              "use raw, gzip, bzip2 or ascii")
        self.data_path = self._data_path(header)
        self._lock = threading.Lock()
        self._array: np.ndarray | None = None
        self._file_dtype = dtype
        self._offset = offset if self.data_path == self.path else 0
        if self.encoding == "raw" and int(header.get("line skip", 0)) == 0:
            self._array = self._map(dtype, self._offset)

    def _dtype(self, header: dict) -> np.dtype:
        kind = str(header.get("type", "")).strip()
        if kind not in TYPE_OF:
            raise FormatError(f"{self.path} has NRRD type {kind!r}, which is not supported; use an integer or "
                              "float type")
        dtype = TYPE_OF[kind]
        if dtype.itemsize > 1:
            dtype = dtype.newbyteorder(">" if str(header.get("endian", "little")).lower() == "big" else "<")
        return dtype

    def _data_path(self, header: dict) -> Path:
        name = header.get("data file", header.get("datafile"))
        if name is None:
            return self.path
        name = str(name).strip()
        if name.upper().startswith("LIST") or len(name.split()) > 1:
            raise FormatError(f"{self.path}: data file {name!r} (one file per slice) is not supported; save the "
                              "volume as a single .nrrd")
        data = self.path.parent / name
        if not data.is_file():
            raise InputFileError(f"{self.path} names data file {data}, which does not exist; put it beside the "
                                 "header")
        return data

    def _map(self, dtype: np.dtype, offset: int) -> np.memmap:
        needed = int(np.prod(self.shape)) * dtype.itemsize
        size = self.data_path.stat().st_size
        skip = int(self.header.get("byte skip", 0))
        offset = size - needed if skip == -1 else offset + skip
        if offset < 0 or size < offset + needed:
            raise CorruptFileError(f"{self.data_path} has {size} bytes but the {'x'.join(map(str, self.shape[::-1]))} "
                                   f"{dtype.name} data need {needed} after byte {max(offset, 0)}; the file is "
                                   "truncated or its header is wrong")
        return np.memmap(self.data_path, dtype=dtype, mode="r", offset=offset, shape=self.shape)

    def _data(self) -> np.ndarray:
        with self._lock:
            array = self._array
            if array is None:
                array = self._array = self._decode()
        return array

    def _decode(self) -> np.ndarray:
        """The whole volume from gzip/bzip2 data, decompressed straight into the array; other encodings
        and skips through pynrrd."""
        skips = int(self.header.get("line skip", 0)) or int(self.header.get("byte skip", 0))
        if self.encoding in ("gzip", "bzip2") and not skips:
            opener = gzip.GzipFile if self.encoding == "gzip" else bz2.BZ2File
            with open(self.data_path, "rb") as raw:
                raw.seek(self._offset)
                with opener(fileobj=raw, mode="rb") as stream:
                    return read_stream_into(stream, self._file_dtype, self.shape, where=str(self.data_path))
        try:
            data, _ = nrrd.read(str(self.path), index_order="C")
        except Exception as exc:  # zlib.error, EOFError, OSError, nrrd.NRRDError
            raise CorruptFileError(f"{self.path}: the {self.encoding} data cannot be decoded ({exc}); the file is "
                                   "truncated or damaged") from exc
        if data.size != int(np.prod(self.shape)):
            raise CorruptFileError(f"{self.path} holds {data.size} values, its header declares "
                                   f"{int(np.prod(self.shape))}; re-export it")
        return data.reshape(self.shape)

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return np.ascontiguousarray(self._data()[z0:z1], dtype=self.dtype)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return np.ascontiguousarray(self._data()[z, y, x], dtype=self.dtype)

    def close(self) -> None:
        self._array = None


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
NRRD_NAMES = {np.dtype(name): spellings[0] if name in ("float32", "float64") else name
              for name, spellings in NRRD_TYPES.items()}
WRITE_ENCODINGS = ("gzip", "raw")


def _vector(values) -> str:
    return "(" + ",".join(repr(float(v)) for v in values) + ")"


def _nrrd_header(info: VolumeInfo, encoding: str, fields: dict[str, str]) -> bytes:
    """NRRD header text for ``info`` (sizes x y z, LPS space, axis-aligned directions), with custom
    ``key:=value`` fields, ending with the blank line before the data."""
    vz, vy, vx = info.voxel_size
    lines = ["NRRD0004", "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html",
             f"type: {NRRD_NAMES[info.dtype]}", "dimension: 3", "space: left-posterior-superior",
             "sizes: " + " ".join(str(s) for s in info.shape[::-1]),
             f"space directions: {_vector((vx, 0, 0))} {_vector((0, vy, 0))} {_vector((0, 0, vz))}",
             "kinds: domain domain domain", "endian: little", f"encoding: {encoding}",
             f"space origin: {_vector(info.origin[::-1])}"]
    if info.unit == "mm":
        lines.append('space units: "mm" "mm" "mm"')
    lines += [f"{key}:={value}" for key, value in fields.items()]
    return ("\n".join(lines) + "\n\n").encode("latin-1", "replace")


class NrrdWriter(ScratchWriter):
    """Writes NRRD (.nrrd, data attached), ``encoding`` ``gzip`` (default, level ``compression_level``) or
    ``raw``; name and class names in a ``bone_avizo:=`` field. Slabs collect in a scratch file; commit writes
    the header and the data slice by slice."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 encoding: str = "gzip", compression_level: int = 1):
        dtype = check_dtype(info.dtype, fmt="NRRD")
        if dtype.kind == "b":
            info = info.with_(dtype=np.dtype(np.uint8))
        elif dtype not in NRRD_NAMES:
            raise UnsupportedDtypeError(f"NRRD cannot store data type {dtype}; cast the volume to float32 first")
        if Path(path).suffix.lower() == ".nhdr":
            raise ConfigError(f"{path}: writing a detached .nhdr header is not supported; name the output .nrrd")
        if encoding not in WRITE_ENCODINGS:
            raise ConfigError(f"unknown NRRD encoding {encoding!r}; choose one of {', '.join(WRITE_ENCODINGS)}")
        self.encoding = encoding
        self.compression_level = int(compression_level)
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _fields(self, array: np.ndarray) -> dict[str, str]:
        return {META_KEY: json.dumps(volume_attrs(self.info))}

    def _encode(self, array: np.ndarray, path: Path) -> None:
        header = _nrrd_header(self.info, self.encoding, self._fields(array))
        little = self.info.dtype.newbyteorder("<")
        with open(path, "wb") as fh:
            fh.write(header)
            packer = zlib.compressobj(self.compression_level, zlib.DEFLATED, 31) if self.encoding == "gzip" else None
            for plane in array:
                data = np.ascontiguousarray(plane, dtype=little).tobytes()
                fh.write(packer.compress(data) if packer else data)
            if packer:
                fh.write(packer.flush())


def segment_colour(name: str, value: int) -> tuple[float, float, float]:
    return NAMED_COLOURS.get(name.strip().lower(), CYCLE[(value - 1) % len(CYCLE)])


def _label_extents(array: np.ndarray, count: int) -> list[tuple[int, ...] | None]:
    """Per label 1..count-1 its extent (x0, x1, y0, y1, z0, z1) in voxels, or None when absent; one pass over
    the (z, y, x) ``array``, slice by slice."""
    extents: list[list[int] | None] = [None] * count
    for z, plane in enumerate(array):
        present = np.unique(plane)
        for value in present[(present > 0) & (present < count)]:
            ys, xs = np.nonzero(plane == value)
            box = [int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max()), z, z]
            old = extents[value]
            extents[value] = box if old is None else [min(old[0], box[0]), max(old[1], box[1]), min(old[2], box[2]),
                                                      max(old[3], box[3]), old[4], z]
    return [tuple(e) if e is not None else None for e in extents]


class SegNrrdWriter(NrrdWriter):
    """Writes a 3D Slicer segmentation (``.seg.nrrd``): a 3-D labelmap (one layer) and, per class 1..N-1,
    ``SegmentK_ID/Name/Color/LabelValue/Layer/Extent`` fields (class names from the volume's class names,
    else ``label<k>``). Integer label volumes only."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 encoding: str = "gzip", compression_level: int = 1):
        if np.dtype(info.dtype).kind not in "bui" or np.dtype(info.dtype).itemsize > 2:
            raise ConfigError(f"a Slicer segmentation holds labels (uint8/uint16), not {np.dtype(info.dtype)}; "
                              "write the labels, or this volume as .nrrd")
        super().__init__(path, info, overwrite=overwrite, resume=resume, encoding=encoding,
                         compression_level=compression_level)

    def _fields(self, array: np.ndarray) -> dict[str, str]:
        names = list(self.info.class_names or ())
        count = max(len(names), int(array.max(initial=0)) + 1 if array.size else 1)
        names += [f"label{v}" for v in range(len(names), count)]
        fields = {**super()._fields(array), "Segmentation_MasterRepresentation": "Binary labelmap",
                  "Segmentation_SourceRepresentation": "Binary labelmap",
                  "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
                  "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
        for index, (value, extent) in enumerate(zip(range(1, count), _label_extents(array, count)[1:])):
            prefix = f"Segment{index}_"
            fields.update({
                prefix + "ID": f"Segment_{value}", prefix + "Name": names[value], prefix + "NameAutoGenerated": "0",
                prefix + "Color": " ".join(f"{c:g}" for c in segment_colour(names[value], value)),
                prefix + "ColorAutoGenerated": "0", prefix + "LabelValue": str(value), prefix + "Layer": "0",
                prefix + "Extent": " ".join(map(str, extent or (0, -1, 0, -1, 0, -1))),
                prefix + "Tags": "|"})
        return fields


FORMATS = {
    "nrrd": Format("nrrd", (".nrrd", ".nhdr"), NrrdSource, NrrdWriter,
                   "NRRD (.nrrd, .nhdr + data; raw memory-mapped, gzip read whole), Slicer/ITK/Teem"),
    "seg-nrrd": Format("seg-nrrd", (".seg.nrrd",), NrrdSource, SegNrrdWriter,
                       "3D Slicer segmentation (.seg.nrrd): labels with named, coloured segments"),
}
