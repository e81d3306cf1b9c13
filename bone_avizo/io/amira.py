"""AmiraMesh ``.am`` volumes, the native format of Avizo and Amira.

Reads uniform 3-D lattices written as ``BINARY-LITTLE-ENDIAN``, ``BINARY`` (big endian) or
``ASCII`` (header versions 2.x and 3.0, first line ``# AmiraMesh ...`` or ``# Avizo ...``), with
the data raw, run-length encoded (``HxByteRLE``) or zlib-compressed (``HxZip``). Writes files
Avizo opens: binary little endian (default), ASCII, or compressed.

Layout: the data section holds x fastest, then y, then z, so the array on disk is (z, y, x) in
C order. ``define Lattice X Y Z`` gives the sizes in x, y, z order; the ``BoundingBox xmin xmax
ymin ymax zmin zmax`` spans the first to the last voxel *centre*, so a voxel is
``(max - min) / (n - 1)`` along each axis and the origin is the centre of the first voxel.

Label fields (data named ``Labels`` or a ``Materials`` block in the parameters) get class names
from the materials *in the order they are listed*: the voxel value is the material's position in
the list. The ``Id`` a material may carry is Avizo's own identifier and not the voxel value (Avizo
keeps Ids stable when materials are deleted, e.g. Ids 0, 9, 10 for voxel values 0, 1, 2).

Uncompressed binary data is memory-mapped, so slabs and regions are read lazily. Compressed
(HxByteRLE, HxZip) and ASCII data are decoded whole on first access and kept in memory.
"""
from __future__ import annotations

import array
import logging
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from bone_avizo._compat import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, InputFileError,
                               OutputWriteError, UnsupportedDtypeError)
from bone_avizo.io.base import VolumeSource, VolumeWriter, remove_path
from bone_avizo.io.registry import Format
from bone_avizo.volume import VolumeInfo

log = logging.getLogger(__name__)

# AmiraMesh primitive type -> numpy dtype string without byte order ("byte" is unsigned in Amira)
READ_TYPES = {"byte": "u1", "ubyte": "u1", "sbyte": "i1", "short": "i2", "ushort": "u2", "int": "i4",
              "uint": "u4", "float": "f4", "double": "f8"}
# numpy dtype -> AmiraMesh type written (the types Avizo handles in uniform scalar/label fields)
WRITE_TYPES = {np.dtype(np.bool_): "byte", np.dtype(np.uint8): "byte", np.dtype(np.int16): "short",
               np.dtype(np.uint16): "ushort", np.dtype(np.int32): "int", np.dtype(np.float32): "float",
               np.dtype(np.float64): "double"}
_CAST_ADVICE = {"u4": "uint16 (or int32 if values exceed 65535)", "u8": "uint16 (or int32 if values "
                "exceed 65535)", "i8": "int32", "i1": "int16", "f2": "float32"}
_MAGIC = re.compile(r"#\s*(?:AmiraMesh|Avizo)\s+(?:3D\s+)?(BINARY-LITTLE-ENDIAN|BINARY|ASCII)\s+"
                    r"(\d+(?:\.\d+)*)", re.IGNORECASE)
_MARKER = re.compile(rb"(?m)^@(\d+)[ \t]*(?:#[^\n]*)?\r?\n")  # "@1" or "@1 # a comment" (ASCII files)
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\n|[{}()\[\],=]|[^\s{}()\[\],="]+')
_HEADER_CHUNK = 1 << 16
_HEADER_MAX = 1 << 26
_RLE_CHUNK = 1 << 24
_BACKGROUND_NAMES = {"exterior", "background", "bg"}
# material colours written for classes 1.. (Exterior has none), cycled
_PALETTE = ((0.9, 0.8, 0.2), (0.85, 0.2, 0.2), (0.2, 0.45, 0.9), (0.2, 0.75, 0.3), (0.7, 0.3, 0.8),
            (0.95, 0.55, 0.1), (0.1, 0.75, 0.75), (0.6, 0.4, 0.2))


class Compression(StrEnum):
    """How the data section of a written ``.am`` file is stored."""

    NONE = "none"
    RLE = "rle"    # HxByteRLE, Avizo's run-length encoding (label fields)
    ZIP = "zip"    # HxZip, a zlib stream


_HX_NAMES = {Compression.RLE: "HxByteRLE", Compression.ZIP: "HxZip"}


# =============================================================================================
# HxByteRLE
# =============================================================================================
def rle_encode(data) -> bytes:
    """Encode bytes with Avizo's HxByteRLE.

    The stream is a sequence of tokens, each starting with a control byte ``c``: if ``c & 0x80``
    the next ``c & 0x7F`` bytes are copied literally, otherwise the next single byte is repeated
    ``c`` times. Counts are 1..127 (0 is never written). Runs of 3 or more equal bytes become
    repeat tokens, everything else literal stretches. ``data``: bytes or any array (its raw bytes
    in C order).
    """
    values = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return b"".join(_rle_encode_chunk(values[i:i + _RLE_CHUNK]) for i in range(0, values.size, _RLE_CHUNK))


def _rle_encode_chunk(values: np.ndarray) -> bytes:
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    lengths = np.diff(np.r_[starts, values.size])
    repeat = lengths >= 3
    literal = ~repeat
    seg_first = literal & np.r_[True, repeat[:-1]]
    seg_last = literal & np.r_[repeat[1:], True]
    lit_starts = starts[seg_first]
    lit_lengths = starts[seg_last] + lengths[seg_last] - lit_starts
    tokens = [_split_127(starts[repeat], lengths[repeat]) + (False,),
              _split_127(lit_starts, lit_lengths) + (True,)]
    tok_start = np.concatenate([t[0] for t in tokens])
    tok_count = np.concatenate([t[1] for t in tokens])
    tok_literal = np.concatenate([np.full(t[0].size, t[2]) for t in tokens])
    order = np.argsort(tok_start, kind="stable")
    tok_start, tok_count, tok_literal = tok_start[order], tok_count[order], tok_literal[order]
    sizes = np.where(tok_literal, tok_count + 1, 2)
    offsets = np.cumsum(sizes) - sizes
    out = np.empty(int(sizes.sum()), np.uint8)
    out[offsets] = np.where(tok_literal, tok_count | 0x80, tok_count)
    out[offsets[~tok_literal] + 1] = values[tok_start[~tok_literal]]
    lit_counts = tok_count[tok_literal]
    out[_ranges(offsets[tok_literal] + 1, lit_counts)] = values[_ranges(tok_start[tok_literal], lit_counts)]
    return out.tobytes()


def _split_127(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split stretches (start, length) into pieces of at most 127: (piece starts, piece lengths)."""
    pieces = (lengths + 126) // 127
    index = _ranges(np.zeros_like(pieces), pieces)
    first = np.repeat(starts, pieces) + 127 * index
    return first, np.minimum(127, np.repeat(lengths, pieces) - 127 * index)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each start s and count c."""
    counts = np.asarray(counts, np.int64)
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.asarray(starts, np.int64), counts) + within


def rle_decode(data: bytes, size: int) -> np.ndarray:
    """Decode an HxByteRLE stream that must expand to exactly ``size`` bytes; returns uint8 (size,).

    Raises CorruptFileError when a token runs past the end of the stream or the expanded size
    differs from ``size``. Amira's terminating 0 byte is accepted; any other control byte of 0
    repeats its byte 0 times.
    """
    raw = np.frombuffer(data, np.uint8)
    control = _control_positions(bytes(data))
    counts = raw[control] & 0x7F
    literal = raw[control] >= 0x80
    total = int(counts.sum(dtype=np.int64))
    if total != size:
        raise CorruptFileError(f"HxByteRLE data expands to {total} bytes, the lattice needs {size}")
    length_at = np.zeros(raw.size, np.uint8)
    length_at[control[~literal] + 1] = counts[~literal]
    length_at[_ranges(control[literal] + 1, counts[literal])] = 1
    keep = np.flatnonzero(length_at)
    return np.repeat(raw[keep], length_at[keep])


def _control_positions(data: bytes) -> np.ndarray:
    """Positions of the control bytes of an HxByteRLE stream (a sequential scan).

    Amira ends the stream with one extra 0 byte and counts it in the declared length (e.g.
    ``@1(HxByteRLE,6113)`` holding 6112 bytes of tokens): a 0 control byte in the last position,
    with no value byte after it, is that terminator and not a token.
    """
    positions = array.array("q")
    append = positions.append
    pos, end = 0, len(data)
    while pos < end:
        c = data[pos]
        append(pos)
        pos += (c & 0x7F) + 1 if c & 0x80 else 2
    if pos == end + 1 and data[end - 1] == 0:  # Amira's terminator: a lone 0 after the last token
        positions.pop()
        pos = end
    if pos != end:
        raise CorruptFileError(f"HxByteRLE data ends inside a token ({end} bytes, the last token needs "
                               f"{pos}); the file is truncated or corrupt")
    return np.frombuffer(positions, np.int64) if positions else np.zeros(0, np.int64)


# =============================================================================================
# Header
# =============================================================================================
@dataclass(frozen=True)
class DataSection:
    """One data declaration such as ``Lattice { byte Labels } @1(HxByteRLE,1234)``."""

    location: str                 # the defined location, e.g. "Lattice"
    type_name: str                # AmiraMesh primitive type, e.g. "ushort"
    components: int               # values per element (1 for scalar fields)
    name: str                     # e.g. "Data", "Labels"
    index: int                    # the k of @k
    encoding: str | None = None   # "HxByteRLE", "HxZip" or None (raw)
    encoded_size: int | None = None


@dataclass(frozen=True)
class AmiraHeader:
    """A parsed AmiraMesh header. ``defines`` sizes are in file order (x, y, z for a Lattice)."""

    binary: bool
    little_endian: bool
    version: str
    defines: dict[str, tuple[int, ...]]
    parameters: dict[str, Any]
    sections: tuple[DataSection, ...]
    data_start: int | None        # file offset just after the first data marker line
    first_index: int | None       # the k of that first marker


class _HeaderParser:
    """Parses the header text after the first line: defines, Parameters bundle, declarations."""

    def __init__(self, text: str, where: str):
        lines = [line for line in text.split("\n") if not line.lstrip().startswith("#")]
        self.tokens = _TOKEN.findall("\n".join(lines))
        self.pos = 0
        self.where = where

    def peek(self, skip_newlines: bool = True) -> str | None:
        pos = self.pos
        while skip_newlines and pos < len(self.tokens) and self.tokens[pos] == "\n":
            pos += 1
        return self.tokens[pos] if pos < len(self.tokens) else None

    def next(self, skip_newlines: bool = True) -> str | None:
        while skip_newlines and self.pos < len(self.tokens) and self.tokens[self.pos] == "\n":
            self.pos += 1
        if self.pos >= len(self.tokens):
            return None
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expect(self, token: str, what: str) -> None:
        got = self.next()
        if got != token:
            raise CorruptFileError(f"{self.where}: malformed header: expected {token!r} in {what}, got {got!r}; "
                                   "re-save the file from Avizo")

    def parse(self) -> tuple[dict, dict, list[DataSection]]:
        defines: dict[str, tuple[int, ...]] = {}
        parameters: dict[str, Any] = {}
        sections: list[DataSection] = []
        top_level_materials = None
        while (token := self.next()) is not None:
            if token == "define":
                name, sizes = self.define()
                defines[name] = sizes
            elif token == "Parameters" and self.peek() == "{":
                self.next()
                parameters.update(self.bundle())
            elif token == "Materials" and self.peek() == "{":  # AmiraMesh 1.0: outside Parameters
                self.next()
                top_level_materials = self.bundle()
            elif self.peek(skip_newlines=False) == "{":
                sections.append(self.declaration(token))
            else:
                self.skip_line()
        if top_level_materials and "Materials" not in parameters:
            parameters["Materials"] = top_level_materials
        return defines, parameters, sections

    def skip_line(self) -> None:
        while self.next(skip_newlines=False) not in (None, "\n"):
            continue

    def define(self) -> tuple[str, tuple[int, ...]]:
        name = self.next(skip_newlines=False) or ""
        sizes = []
        while self.peek(skip_newlines=False) not in (None, "\n"):
            token = self.next(skip_newlines=False)
            try:
                sizes.append(int(token))
            except ValueError:
                raise CorruptFileError(f"{self.where}: malformed header: 'define {name}' has a non-integer "
                                       f"size {token!r}") from None
        return name, tuple(sizes)

    def bundle(self) -> dict[str, Any]:
        """Entries up to the closing brace: ``key {bundle}`` or ``key value ...`` ended by , or newline."""
        entries: dict[str, Any] = {}
        while True:
            token = self.next()
            if token is None:
                raise CorruptFileError(f"{self.where}: malformed header: a Parameters block is not closed "
                                       "(unbalanced braces); the file is truncated or was edited by hand")
            if token == "}":
                return entries
            if token == ",":
                continue
            if token == "{":  # an unnamed entry such as { Name "Bone" Id 1 }: keyed by its Name
                entry = self.bundle()
                name = entry.get("Name") or entry.get("name") or [f"Material{len(entries)}"]
                entries[" ".join(name) if isinstance(name, list) else str(name)] = entry
                continue
            key = _unquote(token)
            if self.peek() == "{":
                self.next()
                entries[key] = self.bundle()
                continue
            values = []
            while self.peek(skip_newlines=False) not in (None, "\n", ",", "}"):
                values.append(_unquote(self.next(skip_newlines=False)))
            entries[key] = values

    def declaration(self, location: str) -> DataSection:
        what = f"the declaration of {location}"
        self.expect("{", what)
        type_name, components = self.next(), 1
        if self.peek() == "[":
            self.next()
            components = _int(self.next(), self.where, what)
            self.expect("]", what)
        name = self.next() or ""
        self.expect("}", what)
        if self.peek(skip_newlines=False) == "=":
            self.next()
        marker = self.next(skip_newlines=False) or ""
        if not re.fullmatch(r"@\d+", marker):
            raise CorruptFileError(f"{self.where}: malformed header: {what} has no data marker @N (got "
                                   f"{marker!r}); re-save the file from Avizo")
        encoding = size = None
        if self.peek(skip_newlines=False) == "(":
            self.next()
            encoding = self.next()
            self.expect(",", what)
            size = _int(self.next(), self.where, what)
            self.expect(")", what)
        return DataSection(location, type_name or "", components, name, int(marker[1:]), encoding, size)


def _unquote(token: str) -> str:
    return token[1:-1] if len(token) >= 2 and token[0] == token[-1] == '"' else token


def _int(token: str | None, where: str, what: str) -> int:
    try:
        return int(token)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CorruptFileError(f"{where}: malformed header: {what} has {token!r} where an integer "
                               "belongs; re-save the file from Avizo") from None


def _read_header_bytes(path: Path) -> tuple[bytes, int | None, int | None]:
    """The header bytes, the index of the first data marker and the offset just after it."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_CHUNK)
        _check_magic_bytes(head, path)
        while True:
            found = _MARKER.search(head)
            if found:
                return head[:found.start()], int(found.group(1)), found.end()
            more = f.read(len(head)) if len(head) < _HEADER_MAX else b""
            if not more:
                return head, None, None
            head += more


def _check_magic_bytes(head: bytes, path: Path) -> None:
    first = head.split(b"\n", 1)[0].decode("latin-1").strip()
    if not _MAGIC.match(first):
        shown = first[:60] if first.isprintable() else "binary data"
        raise FormatError(f"{path} is not an AmiraMesh file (its first line is {shown!r}, expected "
                          "'# AmiraMesh BINARY-LITTLE-ENDIAN 2.1' or similar); check the file or its extension")


def _decode_text(raw: bytes) -> str:
    """Header text: UTF-8 (what current Avizo writes, e.g. "µm"), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_header(path: str | os.PathLike) -> AmiraHeader:
    """Parse the header of the AmiraMesh file ``path`` (reads only the header bytes)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path} does not exist or is not a file; check the path")
    raw, first_index, data_start = _read_header_bytes(path)
    text = _decode_text(raw).replace("\r\n", "\n")
    first_line, _, rest = text.partition("\n")
    mode, version = _MAGIC.match(first_line.strip()).groups()  # type: ignore[union-attr]
    defines, parameters, sections = _HeaderParser(rest, str(path)).parse()
    mode = mode.upper()
    return AmiraHeader(binary=mode != "ASCII", little_endian=mode == "BINARY-LITTLE-ENDIAN", version=version,
                       defines=defines, parameters=parameters, sections=tuple(sections),
                       data_start=data_start, first_index=first_index)


# =============================================================================================
# Header -> VolumeInfo
# =============================================================================================
def _lattice_shape(header: AmiraHeader, path: Path) -> tuple[int, int, int]:
    """(z, y, x) from ``define Lattice X Y Z``."""
    sizes = header.defines.get("Lattice")
    if sizes is None:
        raise FormatError(f"{path} has no 'define Lattice X Y Z' line: it is not a 3-D image or label field "
                          "(perhaps a surface, spreadsheet or landmark file); export the volume from Avizo")
    if len(sizes) != 3 or min(sizes) <= 0:
        raise FormatError(f"{path}: 'define Lattice' must give 3 positive sizes (x y z), got {sizes}; "
                          "only 3-D lattices are supported")
    return sizes[2], sizes[1], sizes[0]


def _check_uniform(header: AmiraHeader, path: Path) -> None:
    coord = header.parameters.get("CoordType")
    coord = " ".join(coord) if isinstance(coord, list) else coord
    if (coord is not None and str(coord).lower() != "uniform") or "Coordinates" in header.defines:
        raise FormatError(f"{path} has {coord or 'non-uniform'} coordinates: only uniform lattices are "
                          "supported; resample it to a uniform grid in Avizo (e.g. Resample) and save again")


def _pick_section(header: AmiraHeader, path: Path, field: str | None) -> DataSection:
    lattice = [s for s in header.sections if s.location == "Lattice"]
    if not lattice:
        raise FormatError(f"{path} declares no Lattice data (no 'Lattice {{ type Name }} @1' line); "
                          "export the volume from Avizo")
    if field is not None:
        named = [s for s in lattice if s.name == field]
        if not named:
            raise FormatError(f"{path} has no Lattice data named {field!r}; choose one of "
                              f"{', '.join(s.name for s in lattice)}")
        lattice = named
    section = lattice[0]
    if section.components != 1:
        raise UnsupportedDtypeError(f"{path} holds {section.type_name}[{section.components}] data "
                                    f"({section.components} values per voxel, e.g. a vector or colour field); "
                                    "only scalar fields are supported: extract one channel in Avizo and save it")
    if section.type_name not in READ_TYPES:
        raise UnsupportedDtypeError(f"{path} holds {section.type_name!r} data; supported AmiraMesh types: "
                                    f"{', '.join(READ_TYPES)}; convert the field in Avizo (Convert Image Type)")
    if section.encoding not in (None, "HxByteRLE", "HxZip"):
        raise FormatError(f"{path} uses the {section.encoding} encoding; supported: raw, HxByteRLE, HxZip; "
                          "save it uncompressed from Avizo")
    return section


def _floats(values: Any, path: Path, name: str) -> list[float]:
    try:
        return [float(v) for v in (values if isinstance(values, list) else [values])]
    except ValueError:
        raise CorruptFileError(f"{path}: {name} has non-numeric values {values}; fix it in Avizo") from None


def _geometry(params: dict, shape: tuple[int, int, int], path: Path) -> tuple[tuple, tuple]:
    """(voxel size, origin), both (z, y, x), from BoundingBox (spans first to last voxel centre).

    Along an axis of one voxel the box cannot span centres: Amira then stores the voxel's
    thickness as the extent (a 2x2x1 label field with ``0 2`` in z has 2-unit slices); an extent
    of 0 there takes the mean voxel size of the other axes.
    """
    if "BoundingBox" not in params:
        log.warning("%s has no BoundingBox; assuming voxel size 1 and origin 0", path)
        return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    box = _floats(params["BoundingBox"], path, "BoundingBox")
    if len(box) != 6:
        raise CorruptFileError(f"{path}: BoundingBox needs 6 values (xmin xmax ymin ymax zmin zmax), got {box}")
    sizes = (shape[2], shape[1], shape[0])
    spans = [(box[2 * i], box[2 * i + 1]) for i in range(3)]
    voxel = [(hi - lo) / (n - 1) if n > 1 else (hi - lo) or None for (lo, hi), n in zip(spans, sizes)]
    if any(v is not None and not v > 0 for v in voxel):
        raise CorruptFileError(f"{path}: BoundingBox {box} has a zero or reversed extent for {sizes} voxels "
                               "(x, y, z); set the voxel size in Avizo (Crop Editor) and save again")
    known = [v for v in voxel if v is not None]
    fill = float(np.mean(known)) if known else 1.0
    voxel = [fill if v is None else v for v in voxel]
    return (voxel[2], voxel[1], voxel[0]), (spans[2][0], spans[1][0], spans[0][0])


ASSUMED_UNIT = "mm"


def _unit(params: dict, path: Path) -> str:
    """The length unit of ``Units { Coordinates "..." }``; ASSUMED_UNIT (mm), with a note, when absent."""
    units = params.get("Units", params.get("Unit"))
    if isinstance(units, dict):
        units = units.get("Coordinates")
    if isinstance(units, list):
        units = units[0] if units else None
    if units and str(units).strip():
        return str(units).strip()
    log.info("%s has no Units field: its voxel size and origin are taken as %s (the numbers are kept as they "
             "are; only the unit name is assumed)", path, ASSUMED_UNIT)
    return ASSUMED_UNIT


def _material_names(params: dict) -> tuple[str, ...] | None:
    """Class names of a label field: the Materials in the order listed (voxel value = position)."""
    materials = params.get("Materials")
    if not isinstance(materials, dict) or not materials:
        return None
    names = tuple(materials)
    for position, (name, entry) in enumerate(materials.items()):
        ident = entry.get("Id") if isinstance(entry, dict) else None
        if ident and ident != [str(position)]:
            log.debug("material %s has Id %s at position %d; the position is its voxel value", name, ident,
                      position)
    return names


# =============================================================================================
# Reading
# =============================================================================================
class AmiraSource(VolumeSource):
    """A lazily read AmiraMesh uniform lattice, arrays (z, y, x).

    ``field`` picks a Lattice data section by name (default: the first). Raw binary data is
    memory-mapped; HxByteRLE, HxZip and ASCII data are decoded whole on first access.
    Attributes: ``header`` (AmiraHeader), ``section`` (the DataSection read), ``encoding``
    ('raw', 'HxByteRLE', 'HxZip' or 'ascii').
    """

    def __init__(self, path: str | os.PathLike, *, field: str | None = None):
        self.path = Path(path)
        self.header = read_header(self.path)
        shape = _lattice_shape(self.header, self.path)
        _check_uniform(self.header, self.path)
        self.section = _pick_section(self.header, self.path, field)
        self.encoding = self.section.encoding or ("raw" if self.header.binary else "ascii")
        order = "<" if self.header.little_endian else ">"
        self._file_dtype = np.dtype(order + READ_TYPES[self.section.type_name])
        self._nbytes = int(np.prod(shape)) * self._file_dtype.itemsize
        self._array: np.ndarray | None = None
        self._closed = False
        self._offset = self._section_offset()
        voxel, origin = _geometry(self.header.parameters, shape, self.path)
        self.info = VolumeInfo(shape, self._file_dtype.newbyteorder("="), voxel, origin, self.path.stem,
                               None, _unit(self.header.parameters, self.path))
        if self.encoding == "raw":
            self._data()  # maps the file now, so a truncated file fails at open
        self.info = self.info.with_(class_names=self._class_names())

    # -- locating and decoding the data section --------------------------------------------
    def _section_offset(self) -> int:
        header = self.header
        if header.data_start is None:
            raise CorruptFileError(f"{self.path} ends before its data section (no '@{self.section.index}' "
                                   "line after the header); the file is truncated")
        if header.first_index == self.section.index or not header.binary:
            return header.data_start
        return self._walk_sections(header.data_start)

    def _walk_sections(self, data_start: int) -> int:
        """Offset of a binary section that is not the first: skip the sections before it (the first
        starts at ``data_start``)."""
        by_index = {s.index: s for s in self.header.sections}
        offset, index = data_start, self.header.first_index
        with open(self.path, "rb") as f:
            while index != self.section.index:
                offset += _section_nbytes(by_index.get(index), self.header, self.path)
                f.seek(offset)
                found = re.match(rb"\s*@(\d+)[ \t]*\r?\n", f.read(64))
                if not found:
                    raise CorruptFileError(f"{self.path}: data section @{self.section.index} not found where "
                                           "the header says; the file is truncated or corrupt")
                offset, index = offset + found.end(), int(found.group(1))
        return offset

    def _memmap(self) -> np.ndarray:
        available = self.path.stat().st_size - self._offset
        if available < self._nbytes:
            raise CorruptFileError(f"{self.path} is truncated: the {self.info.shape[2]}x{self.info.shape[1]}x"
                                   f"{self.info.shape[0]} {self.section.type_name} lattice needs {self._nbytes} "
                                   f"bytes after the header, the file has {available}; copy or export it again")
        return np.memmap(self.path, self._file_dtype, "r", offset=self._offset, shape=self.info.shape)

    def _decode(self) -> np.ndarray:
        if self.encoding == "ascii":
            return self._decode_ascii()
        size = self.section.encoded_size or 0
        available = self.path.stat().st_size - self._offset
        if not 0 <= size <= available:  # checked before reading: a damaged size may be huge or negative
            raise CorruptFileError(f"{self.path} is truncated or corrupt: the {self.encoding} data needs {size} "
                                   f"bytes after the header, the file has {available}; copy or export it again")
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            raw = f.read(size)
        data = self._expand(raw)
        return np.frombuffer(data, self._file_dtype).reshape(self.info.shape)

    def _expand(self, raw: bytes):
        try:
            if self.encoding == "HxByteRLE":
                return rle_decode(raw, self._nbytes)
            data = zlib.decompress(raw)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{self.path}: {exc}") from None
        except zlib.error as exc:
            raise CorruptFileError(f"{self.path}: the HxZip data cannot be decompressed ({exc}); the file is "
                                   "corrupt") from None
        if len(data) != self._nbytes:
            raise CorruptFileError(f"{self.path}: the HxZip data expands to {len(data)} bytes, the lattice "
                                   f"needs {self._nbytes}; the file is corrupt")
        return data

    def _decode_ascii(self) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            text = f.read()
        if self.header.first_index != self.section.index:
            start = re.search(rb"(?m)^@%d[ \t]*(?:#[^\n]*)?\r?\n" % self.section.index, text)
            if not start:
                raise CorruptFileError(f"{self.path}: data section @{self.section.index} is missing; the file "
                                       "is truncated")
            text = text[start.end():]
        following = re.search(rb"(?m)^@\d+", text)
        values = text[:following.start() if following else len(text)].split()
        expected = int(np.prod(self.info.shape))
        if len(values) != expected:
            raise CorruptFileError(f"{self.path}: the ASCII data has {len(values)} values, the lattice needs "
                                   f"{expected}; the file is truncated or corrupt")
        kind = np.float64 if self._file_dtype.kind == "f" else np.int64
        try:
            parsed = np.array(values, dtype=kind) if kind is np.int64 else np.array(values).astype(kind)
        except ValueError:
            raise CorruptFileError(f"{self.path}: the ASCII data holds non-numeric values") from None
        return parsed.astype(self.info.dtype).reshape(self.info.shape)

    def _data(self) -> np.ndarray:
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        if self._array is None and self.encoding == "raw":
            self._array = self._memmap()
        elif self._array is None:
            log.debug("decoding %s data of %s", self.encoding, self.path)
            self._array = self._decode()
        return self._array

    def __getstate__(self) -> dict:
        """Pickle (e.g. for data-loader workers) without the mapped data; the copy maps the file again."""
        state = self.__dict__.copy()
        if self.encoding == "raw":
            state["_array"] = None
        return state

    def _class_names(self) -> tuple[str, ...] | None:
        names = _material_names(self.header.parameters)
        if names is not None and self.info.dtype.kind not in "ui":
            log.warning("%s: Materials ignored on %s data (label fields are integer)", self.path, self.info.dtype)
            return None
        if names is None and self.section.name.lower() == "labels":
            top = self._max_value()
            log.info("%s: label field without Materials; naming classes 0..%d Material<i>", self.path, top)
            names = tuple(f"Material{i}" for i in range(top + 1))
        return names

    def _max_value(self) -> int:
        data, step = self._data(), max(1, (1 << 26) // max(1, self.info.nbytes // self.info.shape[0]))
        return int(max(int(data[z:z + step].max()) for z in range(0, self.info.shape[0], step)))

    # -- VolumeSource ----------------------------------------------------------------------
    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        """Slices z0..z1-1 as a new native-endian (z1-z0, y, x) array."""
        self._check_slab(z0, z1)
        return np.array(self._data()[z0:z1], dtype=self.info.dtype)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        """The region [z, y, x] as a new array; memory-mapped files read only what it covers."""
        return np.array(self._data()[z, y, x], dtype=self.info.dtype)

    def close(self) -> None:
        self._array = None
        self._closed = True


def _section_nbytes(section: DataSection | None, header: AmiraHeader, path: Path) -> int:
    if section is None or (section.encoding is None and section.type_name not in READ_TYPES):
        raise FormatError(f"{path}: cannot skip an undeclared or unknown data section to reach the lattice; "
                          "save the volume alone from Avizo")
    if section.encoded_size is not None:
        if section.encoded_size < 0:
            raise CorruptFileError(f"{path}: data section @{section.index} declares a negative size "
                                   f"({section.encoded_size}); the file is corrupt")
        return section.encoded_size
    count = int(np.prod(header.defines.get(section.location, (0,))))
    return count * section.components * np.dtype(READ_TYPES[section.type_name]).itemsize


def open_amira(path: str | os.PathLike, *, field: str | None = None) -> AmiraSource:
    """Open an AmiraMesh ``.am`` uniform lattice lazily; ``field`` picks a Lattice data section by name."""
    return AmiraSource(path, field=field)


# =============================================================================================
# Writing
# =============================================================================================
def _amira_type(dtype) -> str:
    """The AmiraMesh type written for ``dtype``; UnsupportedDtypeError for types Avizo handles badly."""
    dtype = np.dtype(dtype)
    if dtype in WRITE_TYPES:
        return WRITE_TYPES[dtype]
    advice = _CAST_ADVICE.get(dtype.str[1:], "uint8, uint16, int16, int32, float32 or float64")
    raise UnsupportedDtypeError(f"dtype {dtype} cannot be written to AmiraMesh for Avizo; cast the volume "
                                f"to {advice} first")


def _number(value: float) -> str:
    return f"{float(value):.15g}"


def _material_name(name: str, taken: set[str]) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip()) or "Material"
    if clean[0].isdigit() or clean[0] in ".-":
        clean = "Material_" + clean
    base, i = clean, 2
    while clean in taken:
        clean, i = f"{base}_{i}", i + 1
    taken.add(clean)
    return clean


def _materials_lines(class_names: tuple[str, ...]) -> list[str]:
    """The Materials block: class 0 first (named Exterior when it is the background), Id = value."""
    lines, taken = ["    Materials {"], set[str]()
    for value, name in enumerate(class_names):
        if value == 0 and name.strip().lower() in _BACKGROUND_NAMES:
            name = "Exterior"
        lines.append(f"        {_material_name(name, taken)} {{")
        if value == 0:
            lines.append("            Id 0")
        else:
            colour = " ".join(_number(c) for c in _PALETTE[(value - 1) % len(_PALETTE)])
            lines += [f"            Id {value},", f"            Color {colour}"]
        lines.append("        }")
    return lines + ["    }"]


def format_header(info: VolumeInfo, *, ascii: bool = False, compress: Compression | str = Compression.NONE,
                  encoded_size: int | None = None) -> bytes:
    """The AmiraMesh header for ``info`` up to and including the ``@1`` line that precedes the data.

    Label volumes (class_names set) get a Materials block and data named Labels. A compressed
    data section needs ``encoded_size``, its length in bytes.
    """
    compress = Compression(compress)
    type_name = _amira_type(info.dtype)
    nz, ny, nx = info.shape
    (vz, vy, vx), (oz, oy, ox) = info.voxel_size, info.origin
    box = (ox, ox + (nx - 1) * vx, oy, oy + (ny - 1) * vy, oz, oz + (nz - 1) * vz)
    unit = re.sub(r'["\\\s]', "", info.unit.replace("µ", "u").replace("μ", "u")) or "mm"
    lines = ["# AmiraMesh 3D ASCII 2.1" if ascii else "# AmiraMesh BINARY-LITTLE-ENDIAN 2.1", "",
             f"define Lattice {nx} {ny} {nz}", "", "Parameters {", "    Units {",
             f'        Coordinates "{unit}"', "    }"]
    if info.class_names is not None:
        lines += _materials_lines(info.class_names)
    lines += [f'    Content "{nx}x{ny}x{nz} {type_name}, uniform coordinates",',
              f"    BoundingBox {' '.join(_number(v) for v in box)},", '    CoordType "uniform"', "}", ""]
    data_name = "Labels" if info.class_names is not None else "Data"
    suffix = "" if compress is Compression.NONE else f"({_HX_NAMES[compress]},{encoded_size})"
    lines += [f"Lattice {{ {type_name} {data_name} }} @1{suffix}", "", "# Data section follows", "@1", ""]
    return "\n".join(lines).encode("ascii")


class AmiraWriter(VolumeWriter):
    """Writes an AmiraMesh ``.am`` file Avizo opens, slab by slab, through ``<path>.partial``.

    Options: ``ascii=True`` writes ``# AmiraMesh 3D ASCII 2.1`` (one value per line; small volumes
    only); ``compress='rle'`` (HxByteRLE, for uint8/uint16 label fields) or ``'zip'`` (HxZip).
    Raw binary slabs are written in place at their offsets in any order. ASCII and compressed data
    are encoded as soon as the slices before them have arrived (slabs may come in any order; the
    ones ahead are held in memory) into ``<path>.partial.body``; commit writes the header, whose
    compressed size is then known, and appends the body. Slices never written are zeros.
    """

    def __init__(self, path: str | os.PathLike, info: VolumeInfo, *, overwrite: bool = False,
                 resume: bool = False, ascii: bool = False, compress: Compression | str | None = None):
        self.type_name = _amira_type(info.dtype)
        self.ascii = bool(ascii)
        self.compress = _check_compression(compress, self.ascii, info.dtype)
        self._file_dtype = np.dtype(np.uint8 if info.dtype == np.bool_ else info.dtype).newbyteorder("<")
        self._file: BinaryIO | None = None
        self._body: BinaryIO | None = None
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    @property
    def sequential(self) -> bool:
        """True when the data is encoded in slice order (ASCII or compressed)."""
        return self.ascii or self.compress is not Compression.NONE

    @property
    def body_path(self) -> Path:
        return self.temp_path.with_name(self.temp_path.name + ".body")

    # -- VolumeWriter ----------------------------------------------------------------------
    def _open(self) -> None:
        if self.sequential:
            self._pending: dict[int, np.ndarray] = {}
            self._next_z = 0
            self._zip = zlib.compressobj(6) if self.compress is Compression.ZIP else None
            self._body = open(self.body_path, "wb")
            return
        self._header = format_header(self.info)
        self._file = open(self.temp_path, "wb")
        self._file.write(self._header)
        self._file.truncate(len(self._header) + int(np.prod(self.info.shape)) * self._file_dtype.itemsize)
        self._file.seek(0, os.SEEK_END)
        self._file.write(b"\n")

    def _write(self, z0: int, slab: np.ndarray) -> None:
        if not self.sequential:
            plane_bytes = self.info.shape[1] * self.info.shape[2] * self._file_dtype.itemsize
            self._file.seek(len(self._header) + z0 * plane_bytes)
            self._file.write(np.ascontiguousarray(slab, dtype=self._file_dtype).data)
            return
        if z0 < self._next_z:
            raise OutputWriteError(f"{self.path}: slices {z0}..{self._next_z - 1} were already encoded; an "
                                   "ASCII or compressed AmiraMesh writer takes each slice once")
        for i, plane in enumerate(slab):
            self._pending[z0 + i] = np.array(plane, dtype=self._file_dtype)
        self._flush_pending()

    def _flush_pending(self) -> None:
        planes = []
        while self._next_z in self._pending:
            planes.append(self._pending.pop(self._next_z))
            self._next_z += 1
        if planes:
            self._body.write(self._encode(np.stack(planes)))

    def _encode(self, block: np.ndarray) -> bytes:
        if self.ascii:
            fmt = {"f4": "%.9g", "f8": "%.17g"}.get(block.dtype.str[1:])
            values = block.reshape(-1).tolist()
            text = "\n".join(map(str, values)) if fmt is None else "\n".join(fmt % v for v in values)
            return (text + "\n").encode("ascii")
        if self.compress is Compression.RLE:
            return rle_encode(block)
        return self._zip.compress(block.tobytes())

    def commit(self) -> Path:
        """Finish the data section (ASCII and compressed: header + body), close and rename."""
        if self.sequential and not self._closed:
            try:
                self._finish()
            except BaseException:
                self.abort()
                raise
        return super().commit()

    def _finish(self) -> None:
        missing = [z for z in range(self._next_z, self.info.shape[0]) if z not in self._pending]
        if missing:
            log.warning("%s: %d slices were never written; storing zeros", self.path, len(missing))
            zero = np.zeros(self.info.shape[1:], self._file_dtype)
            self._pending.update({z: zero for z in missing})
        try:
            self._flush_pending()
            if self._zip is not None:
                self._body.write(self._zip.flush())
            self._body.close()
            self._assemble()
        except OSError as exc:
            raise OutputWriteError(f"writing {self.path} failed: {exc.strerror or exc}; check free disk "
                                   "space") from exc

    def _assemble(self) -> None:
        size = self.body_path.stat().st_size
        header = format_header(self.info, ascii=self.ascii, compress=self.compress, encoded_size=size)
        with open(self.temp_path, "wb") as out, open(self.body_path, "rb") as body:
            out.write(header)
            shutil.copyfileobj(body, out, 1 << 20)
            if not self.ascii:
                out.write(b"\n")
        remove_path(self.body_path)

    def _close(self) -> None:
        for handle in (self._file, self._body):
            if handle is not None and not handle.closed:
                handle.close()
        if self._body is not None:
            remove_path(self.body_path)


def _check_compression(compress: Compression | str | None, ascii: bool, dtype: np.dtype) -> Compression:
    try:
        compress = Compression(compress or Compression.NONE)
    except ValueError:
        raise ConfigError(f"unknown AmiraMesh compression {compress!r}; choose one of "
                          f"{', '.join(c.value for c in Compression)}") from None
    if ascii and compress is not Compression.NONE:
        raise ConfigError("an ASCII AmiraMesh file cannot be compressed; use ascii=False or compress='none'")
    if compress is Compression.RLE and np.dtype(dtype).itemsize > 2:
        raise ConfigError(f"HxByteRLE compression is for label fields (uint8/uint16), not {np.dtype(dtype)}; "
                          "use compress='zip' or 'none'")
    return compress


FORMATS = {
    "am": Format(name="am", extensions=(".am",), open=open_amira, writer=AmiraWriter,
                 description="AmiraMesh (Avizo/Amira native): uniform 3-D image or label field, binary or "
                             "ASCII, raw, HxByteRLE or HxZip"),
}
