"""Raw binary volumes and MetaImage (.mhd + data file, .mha with inline data), memory-mapped.

A raw file has no header: give ``shape=(z, y, x)``, ``dtype=``, ``byte_order='little'|'big'`` and
``header_bytes=`` (bytes to skip; -1: the data are the last bytes of the file), or keep a
``<name>.mhd`` header beside it. MetaImage lists sizes in x, y, z order (``DimSize``,
``ElementSpacing``, ``Offset``); arrays here are (z, y, x). MetaImage has no unit field: lengths
are taken to be mm, as ITK does.
"""
from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np

from bone_avizo.errors import (BoneAvizoError, ConfigError, CorruptFileError, FormatError, InputFileError,
                               InvalidVolumeError, OutputExistsError, UnsupportedDtypeError)
from bone_avizo.io.base import ArraySource, VolumeSource, partial_path, remove_path, reserve_space
from bone_avizo.io.npy import MappedSource, MappedWriter, check_dtype, native_dtype, require_file
from bone_avizo.io.registry import Format
from bone_avizo.volume import VolumeInfo

log = logging.getLogger(__name__)

BYTE_ORDERS = {"little": "<", "big": ">"}
MET_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
    "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
MET_NAMES = {np.dtype(code): name for name, code in reversed(list(MET_TYPES.items()))}
MAX_HEADER = 1 << 16


# ---------------------------------------------------------------------------------------------
# raw
# ---------------------------------------------------------------------------------------------
def file_dtype(dtype, byte_order: str) -> np.dtype:
    """``dtype`` with the byte order 'little' or 'big' (ConfigError for anything else)."""
    if byte_order not in BYTE_ORDERS:
        raise ConfigError(f"byte_order must be 'little' or 'big', got {byte_order!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigError(f"unknown dtype {dtype!r}; use e.g. uint8, uint16, int16 or float32") from exc
    return native_dtype(dtype, where="the raw data").newbyteorder(BYTE_ORDERS[byte_order])


def _shape(shape) -> tuple[int, int, int]:
    try:
        values = tuple(int(s) for s in (shape.replace("x", ",").split(",") if isinstance(shape, str) else shape))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"shape must be three integers (z, y, x), got {shape!r}") from exc
    if len(values) != 3 or min(values) <= 0:
        raise InvalidVolumeError(f"shape must be three positive sizes (z, y, x), got {values}")
    return values  # type: ignore[return-value]


class RawSource(MappedSource):
    """A memory-mapped raw volume (z, y, x). Options: ``shape`` (z, y, x), ``dtype``, ``byte_order``,
    ``header_bytes`` (-1: data at the end), ``voxel_size``/``origin`` (z, y, x, mm), ``name``."""

    def __init__(self, path: str | os.PathLike, *, shape=None, dtype=None, byte_order: str = "little",
                 header_bytes: int = 0, voxel_size=None, origin=(0.0, 0.0, 0.0),
                 name: str | None = None):
        self.path = require_file(Path(path))
        self._remember(self.path, shape=shape, dtype=dtype, byte_order=byte_order, header_bytes=header_bytes,
                       voxel_size=voxel_size, origin=origin, name=name)
        if shape is None or dtype is None:
            raise ConfigError(f"{self.path} is raw data without a header; give shape=(z, y, x) and dtype= "
                              "(and byte_order=, header_bytes= if needed), or an .mhd header")
        shape = _shape(shape)
        stored = file_dtype(dtype, byte_order)
        offset = self._offset(shape, stored, int(header_bytes))
        self.info = VolumeInfo(shape, stored.newbyteorder("="), voxel_size or (1.0, 1.0, 1.0), origin,
                               name or self.path.stem, calibrated=voxel_size is not None)
        self._array = np.memmap(self.path, dtype=stored, mode="r", offset=offset, shape=shape)

    def _offset(self, shape, dtype: np.dtype, header: int) -> int:
        """Where the data start; CorruptFileError unless the file size fits header + data exactly."""
        needed = int(np.prod(shape)) * dtype.itemsize
        actual = self.path.stat().st_size
        offset = actual - needed if header < 0 else header
        if offset < 0 or actual != offset + needed:
            header = max(header, 0)
            raise CorruptFileError(f"{self.path} has {actual} bytes but shape {shape} {dtype.name} with {header} "
                                   f"header bytes needs {needed + header}; check shape, dtype and header_bytes "
                                   "(or the file is truncated)")
        return offset


def _open_raw(path: str | os.PathLike, **options) -> VolumeSource:
    """A raw file; without shape/dtype a ``<name>.mhd`` header beside it is used if present."""
    path = Path(path)
    header = path.with_suffix(".mhd")
    if not {"shape", "dtype"} & options.keys() and header.is_file():
        return _open_mhd(header)
    return RawSource(path, **options)


class RawWriter(MappedWriter):
    """Writes headerless raw data (z, y, x, C order) through a memmap of ``<name>.partial``; the voxel size
    is not stored (write .mhd to keep it). Option ``byte_order`` ('little' default or 'big')."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 byte_order: str = "little"):
        self.stored = file_dtype(check_dtype(info.dtype, fmt="raw"), byte_order)
        self._array = None
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _open(self) -> None:
        self._array = self._map(self.temp_path, 0)

    def _map(self, path: Path, offset: int) -> np.memmap:
        with open(path, "ab") as fh:  # create, or extend past a header already written
            fh.truncate(offset + self.info.nbytes)
        reserve_space(path)
        return np.memmap(path, dtype=self.stored, mode="r+", offset=offset, shape=self.info.shape)


# ---------------------------------------------------------------------------------------------
# MetaImage
# ---------------------------------------------------------------------------------------------
def _read_mhd_header(path: Path) -> tuple[dict[str, str], int]:
    """The header fields of a .mhd/.mha and the byte size of the header text (up to ElementDataFile)."""
    with open(require_file(path), "rb") as fh:
        head = fh.read(MAX_HEADER)
    fields: dict[str, str] = {}
    size = 0
    for line in head.splitlines(keepends=True):
        size += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            raise FormatError(f"{path} is not a MetaImage header (line {line[:40]!r} has no 'key = value'); "
                              "check the file")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            return fields, size
    raise CorruptFileError(f"{path} has no ElementDataFile line; the MetaImage header is incomplete")


def _field(fields: dict, key: str, path: Path, count: int | None = None, default=None):
    value = fields.get(key.lower())
    if value is None:
        if default is None:
            raise CorruptFileError(f"{path} lacks the MetaImage field {key}; add it to the header")
        return default
    parts = value.split()
    try:
        numbers = [float(p) for p in parts]
    except ValueError as exc:
        raise CorruptFileError(f"{path}: {key} = {value!r} is not numeric") from exc
    if not numbers or not all(np.isfinite(numbers)):
        raise CorruptFileError(f"{path}: {key} = {value!r} is not a finite number; fix the header")
    if count is not None and len(numbers) != count:
        raise InvalidVolumeError(f"{path}: {key} has {len(numbers)} values, expected {count} (a 3-D image)")
    return numbers


def _mhd_geometry(fields: dict, path: Path) -> dict:
    ndims = int(_field(fields, "NDims", path)[0])
    channels = int(_field(fields, "ElementNumberOfChannels", path, default=[1])[0])
    if ndims != 3 or channels != 1:
        raise InvalidVolumeError(f"{path} is a {ndims}-D image with {channels} channel(s); only single-channel "
                                 "3-D MetaImages are volumes")
    element = fields.get("elementtype", "")
    if element not in MET_TYPES:
        raise UnsupportedDtypeError(f"{path}: ElementType {element!r} is not supported; use one of "
                                    f"{', '.join(MET_TYPES)}")
    spacing = "ElementSpacing" if "elementspacing" in fields else "ElementSize"
    offset_key = next((k for k in ("Offset", "Position", "Origin") if k.lower() in fields), "Offset")
    msb = fields.get("binarydatabyteordermsb", fields.get("elementbyteordermsb", "False")).lower() == "true"
    return dict(shape=tuple(int(v) for v in reversed(_field(fields, "DimSize", path, 3))),
                dtype=MET_TYPES[element], byte_order="big" if msb else "little",
                voxel_size=tuple(reversed(_field(fields, spacing, path, 3))) if spacing.lower() in fields else None,
                origin=tuple(reversed(_field(fields, offset_key, path, 3, default=[0.0, 0.0, 0.0]))),
                name=path.stem)


def _data_file(fields: dict, path: Path) -> Path | None:
    """The data file named by ElementDataFile, or None for LOCAL (inline data)."""
    value = fields["elementdatafile"]
    if value.upper() == "LOCAL":
        return None
    if value.upper() == "LIST" or "%" in value or len(value.split()) > 1:
        raise FormatError(f"{path}: ElementDataFile = {value!r} (one file per slice) is not supported; "
                          "convert the series to a single .raw or .mha")
    data = path.parent / value
    if not data.is_file():
        raise InputFileError(f"{path} names data file {data}, which does not exist; put it beside the header")
    return data


def metaimage_data_file(path: Path, *, reading: bool) -> Path | None:
    """The data file that goes with a .mhd header: the one it names (``reading``; None when it cannot be
    told, the reader reports why) or the ``.raw`` beside it that the writer makes; None for other paths."""
    if path.suffix.lower() != ".mhd":
        return None
    if not reading:
        return path.with_suffix(".raw")
    try:
        return _data_file(_read_mhd_header(path)[0], path)
    except (BoneAvizoError, OSError, KeyError):
        return None


def _open_mhd(path: str | os.PathLike) -> VolumeSource:
    """A MetaImage volume: .mhd with a separate data file or .mha with inline data; memory-mapped
    (compressed data, CompressedData = True, are decompressed into memory)."""
    path = Path(path)
    fields, header_size = _read_mhd_header(path)
    geometry = _mhd_geometry(fields, path)
    if fields.get("binarydata", "True").lower() != "true":
        raise FormatError(f"{path} holds ASCII data (BinaryData = False); save it as binary MetaImage")
    data = _data_file(fields, path)
    header = header_size if data is None else int(_field(fields, "HeaderSize", path, default=[0])[0])
    if fields.get("compresseddata", "False").lower() == "true":
        return _compressed(data or path, header, geometry)
    return RawSource(data or path, header_bytes=header, **geometry)


def _compressed(path: Path, header: int, geometry: dict) -> ArraySource:
    stored = file_dtype(geometry.pop("dtype"), geometry.pop("byte_order"))
    shape = geometry.pop("shape")
    needed = int(np.prod(shape)) * stored.itemsize
    with open(path, "rb") as fh:
        fh.seek(max(header, 0))
        try:  # at most one byte more than the volume needs: damaged data cannot fill the memory
            raw = zlib.decompressobj().decompress(fh.read(), needed + 1)
        except zlib.error as exc:
            raise CorruptFileError(f"{path}: compressed data cannot be decompressed ({exc})") from exc
    if len(raw) != needed:
        raise CorruptFileError(f"{path} decompresses to {len(raw)} bytes but shape {shape} {stored.name} needs "
                               f"{needed}; the file is truncated or its header is wrong")
    array = np.frombuffer(raw, stored).reshape(shape).astype(stored.newbyteorder("="))
    voxel_size = geometry.pop("voxel_size")
    return ArraySource(array, VolumeInfo(shape, array.dtype, voxel_size or (1.0, 1.0, 1.0),
                                         calibrated=voxel_size is not None, **geometry))


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _mhd_header(info: VolumeInfo, data_file: str, byte_order: str = "little") -> str:
    """MetaImage header text for ``info`` (sizes written x, y, z); ElementDataFile comes last."""
    def xyz(values) -> str:
        return " ".join(_number(v) for v in reversed(values))

    lines = [("ObjectType", "Image"), ("NDims", "3"), ("BinaryData", "True"),
             ("BinaryDataByteOrderMSB", str(byte_order == "big")), ("CompressedData", "False"),
             ("TransformMatrix", "1 0 0 0 1 0 0 0 1"), ("Offset", xyz(info.origin)),
             ("CenterOfRotation", "0 0 0"), ("ElementSpacing", xyz(info.voxel_size)),
             ("DimSize", xyz(info.shape)), ("ElementType", MET_NAMES[info.dtype]), ("ElementDataFile", data_file)]
    if not info.calibrated:  # no voxel size was recorded: do not write the assumed 1 x 1 x 1 as a measured one
        lines = [(key, value) for key, value in lines if key != "ElementSpacing"]
    return "".join(f"{key} = {value}\n" for key, value in lines)


class MhdWriter(RawWriter):
    """Writes MetaImage: ``.mhd`` header + ``<stem>.raw`` data, or ``.mha`` with the data inline.

    For .mhd the data go to ``<stem>.raw.partial`` and the header to ``<name>.mhd.partial``; on commit the
    data file is renamed first and the header last, so a header only exists beside complete data.
    """

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 byte_order: str = "little"):
        if native_dtype(info.dtype, where="a volume to write as MetaImage") not in MET_NAMES:
            raise UnsupportedDtypeError(f"MetaImage cannot store data type {info.dtype}; cast the volume first "
                                        f"(supported: {', '.join(sorted({d.name for d in MET_NAMES}))})")
        path = Path(path)
        self.inline = path.suffix.lower() == ".mha"
        self.data_path = None if self.inline else path.with_suffix(".raw")
        if self.data_path is not None and self.data_path.exists() and not overwrite:
            raise OutputExistsError(f"data file {self.data_path} already exists; choose another name or allow "
                                    "overwriting (--overwrite)")
        self.byte_order = byte_order
        super().__init__(path, info, overwrite=overwrite, resume=resume, byte_order=byte_order)

    def _open(self) -> None:
        data_name = "LOCAL" if self.inline else self.data_path.name
        header = _mhd_header(self.info, data_name, self.byte_order).encode("latin-1")
        self.temp_path.write_bytes(header)
        if self.inline:
            self._array = self._map(self.temp_path, len(header))
        else:
            self._array = self._map(partial_path(self.data_path), 0)

    def commit(self) -> Path:
        if not self._closed and self.data_path is not None:
            self._close()
            os.replace(partial_path(self.data_path), self.data_path)
        return super().commit()

    def abort(self) -> None:
        super().abort()
        if self.data_path is not None:
            remove_path(partial_path(self.data_path))


FORMATS = {
    "raw": Format("raw", (".raw",), _open_raw, RawWriter,
                  "headerless raw binary (give shape=, dtype=, byte_order=, header_bytes=)"),
    "mhd": Format("mhd", (".mhd", ".mha"), _open_mhd, MhdWriter,
                  "MetaImage: .mhd header + .raw data, or .mha with inline data"),
}
