"""TIFF volumes: multi-page (ImageJ hyperstack, OME-TIFF, BigTIFF) files and folders of slices.

Arrays are (z, y, x): page i of a stack (or file i of a naturally sorted folder) is slice z=i.
Voxel size (z, y, x) in mm comes from, in order: OME-XML ``PhysicalSizeX/Y/Z`` (with units),
ImageJ metadata (``spacing`` for z, page ``XResolution``/``YResolution`` in pixels per ``unit``,
``xorigin``... in pixels), and the JSON this package writes beside them (ImageJ ``Properties``,
OME ``Description`` or the tifffile shaped description) which also keeps origin, name and class names.

Reads are lazy: contiguous uncompressed stacks are memory-mapped, others are read page by page, so
a slab or a plane costs about the pages it touches, never the whole file.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import tifffile

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, InvalidVolumeError,
                               ShapeMismatchError)
from bone_avizo.io.base import VolumeWriter, read_only_view, reserve_space
from bone_avizo.io.medical import ScratchWriter
from bone_avizo.io.npy import (ReopeningSource, check_dtype, info_from_attrs, native_dtype, require_file, to_mm,
                               volume_attrs)
from bone_avizo.io.registry import Format
from bone_avizo.io.threads import io_threads
from bone_avizo.volume import VolumeInfo

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
BIGTIFF_LIMIT = 2**32 - 2**25  # above this a classic TIFF cannot address its data
LOSSLESS = ("zlib", "deflate", "lzma", "zstd", "lzw", "packbits")
IMAGEJ_DTYPES = "BHhf"  # uint8, uint16, int16, float32
OME_DTYPES = "bBhHiIfd"
META_KEY = "bone_avizo"


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: 's2.tif' < 's10.tif'."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


# ---------------------------------------------------------------------------------------------
# opening and metadata
# ---------------------------------------------------------------------------------------------
def _open_tiff(path: Path) -> tifffile.TiffFile:
    """Open a TIFF; FormatError if it is not a TIFF, CorruptFileError if it is damaged."""
    require_file(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in TIFF_MAGIC:
        raise FormatError(f"{path} is not a TIFF file (it starts with {magic!r}); check the file or its "
                          "extension")
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise CorruptFileError(f"{path} is a damaged or truncated TIFF ({exc}); re-export it") from exc


def _json(text) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ome_attrs(tif: tifffile.TiffFile) -> dict:
    """Voxel size (mm) from OME-XML PhysicalSizeX/Y/Z, name, and our JSON in the Image Description."""
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        return {}
    image = next((el for el in root.iter() if el.tag.endswith("}Image") or el.tag == "Image"), None)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if image is None or pixels is None:
        return {}
    description = next((el.text for el in image if el.tag.endswith("Description")), None)
    attrs = _json(description).get(META_KEY, {})
    if image.get("Name"):
        attrs["name"] = image.get("Name")
    sizes = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
    if any(s is not None for s in sizes):
        voxel = [to_mm([float(s)], pixels.get(f"PhysicalSize{a}Unit", "µm"), where=tif.filename)[0][0]
                 if s is not None else 1.0 for a, s in zip("ZYX", sizes)]
        attrs.update(voxel_size=voxel, unit="mm", origin=_origin_mm(attrs))
    return attrs


def _origin_mm(attrs: dict) -> list[float]:
    """The origin of our JSON metadata in mm."""
    return list(to_mm(attrs.get("origin", [0.0, 0.0, 0.0]), attrs.get("unit", "mm"), where="metadata")[0])


def _resolution(page, tag: str) -> float:
    """Pixel size in the file's unit from an X/YResolution tag (pixels per unit); 1 if absent."""
    value = page.tags.get(tag)
    if value is None:
        return 1.0
    num, den = value.value if isinstance(value.value, tuple) else (value.value, 1)
    return float(den) / float(num) if num else 1.0


def _imagej_attrs(tif: tifffile.TiffFile) -> dict:
    """Voxel size and origin (mm) from ImageJ metadata: spacing, X/YResolution, unit, x/y/zorigin."""
    meta = tif.imagej_metadata or {}
    page = tif.pages.first
    # ImageJ keeps a negative spacing for stacks ordered top-down; the voxel size is its magnitude
    voxel = [abs(float(meta.get("spacing", 1.0))), _resolution(page, "YResolution"), _resolution(page, "XResolution")]
    origin_px = [float(meta.get(f"{a}origin", 0.0)) for a in "zyx"]
    unit = meta.get("unit")
    voxel_mm, unit_mm = to_mm(voxel, unit, where=tif.filename)
    properties = meta.get("Properties")
    attrs = _json(properties.get(META_KEY, "{}")) if isinstance(properties, dict) else {}
    attrs.pop("voxel_size", None)
    if "spacing" in meta or unit not in (None, "", "pixel", "pixels"):  # else ImageJ's "no calibration"
        attrs.update(voxel_size=list(voxel_mm), unit=unit_mm)
    if any(origin_px):
        attrs["origin"] = [-o * v for o, v in zip(origin_px, voxel_mm)]
    else:
        attrs["origin"] = _origin_mm(attrs) if "origin" in attrs else [0.0, 0.0, 0.0]
    return attrs


def _tiff_attrs(tif: tifffile.TiffFile) -> dict:
    """The volume metadata of an open TIFF as a :func:`volume_attrs`-style dict."""
    attrs = {}
    if tif.is_ome:
        attrs = _ome_attrs(tif)
    if not attrs and tif.is_imagej:
        attrs = _imagej_attrs(tif)
    if not attrs and tif.is_shaped and tif.shaped_metadata:
        attrs = _json(tif.shaped_metadata[0].get(META_KEY, "{}"))
    if "voxel_size" not in attrs:
        # an info, not a warning: the volume is marked uncalibrated, and what uses the voxel size says so
        log.info("%s has no voxel size (no ImageJ or OME-XML calibration); using 1 x 1 x 1", tif.filename)
    return attrs


def _declared_size(tif: tifffile.TiffFile) -> int:
    """How many values (voxels x samples) the ImageJ or tifffile-shaped metadata declare; 0 if unknown."""
    if tif.is_imagej:
        return int((tif.imagej_metadata or {}).get("images", 0)) * int(np.prod(tif.pages.first.shape))
    if tif.is_shaped and tif.shaped_metadata:
        return int(np.prod(tif.shaped_metadata[0].get("shape", [0])))
    return 0


def _check_complete(tif: tifffile.TiffFile, series, path: Path) -> None:
    """CorruptFileError when pages are missing or the first page's data run past the end of the file."""
    declared = _declared_size(tif)
    if declared > series.size:
        raise CorruptFileError(f"{path} is truncated or damaged: its metadata declare {declared} values, only "
                               f"{series.size} are readable; re-export it")
    first = tif.pages.first
    end = max((o + n for o, n in zip(first.dataoffsets, first.databytecounts)), default=0)
    if end > path.stat().st_size:
        raise CorruptFileError(f"{path} is truncated: its first page needs {end} bytes, the file has "
                               f"{path.stat().st_size}; re-export it")


# ImageJ metadata that mark real channels: a composite or colour display, per-channel LUTs or ranges
_CHANNEL_MARKS = ("LUTs", "Ranges", "slices", "frames")


def _planes_are_slices(tif: tifffile.TiffFile | None, series) -> bool:
    """Whether the planes of a (C or I, y, x) series are the slices of a volume. ``tifffile.imwrite(p,
    volume, imagej=True)`` labels the planes of a 3-D array as channels (axes CYX, mode grayscale);
    only metadata marking real channels (composite or colour mode, LUTs, display ranges, slices or
    frames besides) make them channels."""
    if series.axes == "IYX":
        return True
    if series.axes != "CYX" or tif is None or not tif.is_imagej:
        return False
    meta = tif.imagej_metadata or {}
    return meta.get("mode", "grayscale") == "grayscale" and not any(key in meta for key in _CHANNEL_MARKS)


def _volume_shape(series, where: str, tif: tifffile.TiffFile | None = None) -> tuple[int, ...]:
    """The non-singleton (z, y, x) shape of a series; InvalidVolumeError for 2-D or colour data."""
    axes, shape = series.axes, series.shape
    if _planes_are_slices(tif, series):
        return tuple(shape)
    for axis in "SC":
        if axis in axes and shape[axes.index(axis)] > 1:
            if _planar_colour_from_tifffile(tif, series):
                raise InvalidVolumeError(
                    f"{where} is stored as one {shape[0]}-plane colour image (axes {axes}, shape {shape}), which "
                    "is what tifffile.imwrite does by default with a 3- or 4-slice array; if these are slices, "
                    "write it again with tifffile.imwrite(path, volume, photometric='minisblack')")
            raise InvalidVolumeError(f"{where} has {shape[axes.index(axis)]} channels (axes {axes}, shape {shape}); "
                                     "save a single-channel (grey-value) stack")
    return tuple(s for a, s in zip(axes, shape) if s != 1 or a in "YX")


def _planar_colour_from_tifffile(tif: tifffile.TiffFile | None, series) -> bool:
    """Whether ``series`` is one page of 3-4 separate colour planes that tifffile wrote from a (3 or 4, y, x)
    array without a photometric interpretation (its default for such arrays: RGB, planar)."""
    if tif is None or series.axes != "SYX" or not tif.shaped_metadata:
        return False
    page = tif.pages.first
    return page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.photometric == tifffile.PHOTOMETRIC.RGB


def _codec_missing(page, path: Path) -> FormatError | None:
    """The error for a page compressed with a codec this installation cannot decode, or None."""
    try:
        tifffile.TIFF.DECOMPRESSORS[page.compression]
    except (KeyError, ValueError, ImportError):
        return FormatError(f"{path} is compressed with {page.compression.name}, which needs the imagecodecs "
                           "package: pip install imagecodecs")
    return None


def _decode_error(exc: Exception, path: Path, what: str) -> FormatError | CorruptFileError:
    """The error to raise when ``what`` (a page or slice) of ``path`` fails to decode: a missing codec
    package is named (imagecodecs), anything else is damage."""
    if isinstance(exc, ImportError) or "imagecodecs" in str(exc):
        return FormatError(f"{path}: {what} cannot be decoded without the imagecodecs package ({exc}); "
                           "pip install imagecodecs")
    return CorruptFileError(f"{path}: {what} cannot be read ({exc}); the file is damaged")


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------
def stream_region(read_plane, info: VolumeInfo, z: slice, y: slice, x: slice) -> np.ndarray:
    """The region [z, y, x] built one z-plane at a time from ``read_plane(z) -> (y, x)``: memory is one
    plane plus the result."""
    zs, ys, xs = (range(*s.indices(n)) for s, n in zip((z, y, x), info.shape))
    out = np.empty((len(zs), len(ys), len(xs)), info.dtype)
    for i, zi in enumerate(zs):
        out[i] = read_plane(zi)[y, x]
    return out


def _stack_pages(pages: list, *, maxworkers: int, out: np.ndarray | None = None) -> np.ndarray:
    """The pages stacked (into ``out`` when given), decoded by ``maxworkers`` threads: tifffile's
    stack_pages (pages in parallel, or one page's strips and tiles), else page after page."""
    stack = getattr(getattr(tifffile, "tifffile", None), "stack_pages", None)
    if stack is not None:
        return stack(pages, maxworkers=maxworkers, out=None if out is None else out.view())
    decoded = np.stack([page.asarray(maxworkers=maxworkers) for page in pages])
    if out is None:
        return decoded
    out[...] = decoded.reshape(out.shape)
    return out


class TiffSource(ReopeningSource):
    """A multi-page TIFF (z, y, x): memory-mapped when the stack is contiguous and uncompressed,
    otherwise read page by page, pages decoded in parallel (a slab or plane never loads the whole file)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._remember(self.path)
        self._tif = _open_tiff(self.path)
        try:
            self._setup()
        except BaseException:
            self._tif.close()
            raise

    def _setup(self) -> None:
        where = str(self.path)
        series = self._tif.series[0]
        shape = _volume_shape(series, where, self._tif)
        _check_complete(self._tif, series, self.path)
        if len(shape) == 2:
            raise InvalidVolumeError(f"{where} is a 2-D image {shape}, not a volume; give a multi-page stack "
                                     "or a folder of slices")
        if len(shape) != 3:
            raise InvalidVolumeError(f"{where} has {len(shape)} axes ({series.axes}, shape {series.shape}); "
                                     "save a single 3-D (z, y, x) stack")
        dtype = native_dtype(series.dtype, where=where)
        self.info = info_from_attrs(_tiff_attrs(self._tif), shape, dtype, name=_stem(self.path), where=where)
        self._lock = threading.Lock()
        self._memmap = self._map(series, dtype)
        self._pages = None
        if self._memmap is None and (missing := _codec_missing(self._tif.pages.first, self.path)):
            raise missing
        if self._memmap is None:
            self._pages = series.pages
            if len(self._pages) != shape[0]:
                raise FormatError(f"{where} stores {shape[0]} slices in {len(self._pages)} pages; only one "
                                  "slice per page is supported: re-save it as a multi-page TIFF")

    def _map(self, series, dtype: np.dtype):
        """A read-only memmap of a contiguous, uncompressed series, or None."""
        offset = series.dataoffset
        if offset is None:
            return None
        file_dtype = np.dtype(self._tif.byteorder + dtype.char)
        needed = offset + int(np.prod(self.shape)) * dtype.itemsize
        actual = self.path.stat().st_size
        if actual < needed:
            raise CorruptFileError(f"{self.path} is truncated: its pixel data need {needed} bytes, the file has "
                                   f"{actual}; re-export it")
        return np.memmap(self.path, dtype=file_dtype, mode="r", offset=offset, shape=self.shape)

    def _decode(self, zs: range, out: np.ndarray | None = None) -> np.ndarray:
        """Pages ``zs`` as (n, y, x), decoded in parallel by tifffile's ``maxworkers`` I/O threads; straight
        into ``out`` (n, y, x) when it has the pages' type."""
        if out is not None and out.dtype != self._pages[zs.start].dtype:
            out = None
        try:
            with self._lock:
                pages = _stack_pages([self._pages[z] for z in zs], maxworkers=io_threads(), out=out)
        except Exception:  # decoders raise their own types (zlib.error, imagecodecs errors)
            pages = np.stack([self._page(z) for z in zs])  # one by one: the error names the damaged page
        return pages.reshape((len(zs),) + self.shape[1:])

    def _page(self, z: int) -> np.ndarray:
        try:
            with self._lock:
                return self._pages[z].asarray()
        except Exception as exc:  # decoders raise their own types (zlib.error, imagecodecs errors)
            raise _decode_error(exc, self.path, f"page {z}") from exc

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        full = slice(None)
        return self.read_region(slice(z0, z1), full, full)

    def view_slab(self, z0: int, z1: int) -> np.ndarray | None:
        self._check_slab(z0, z1)
        return None if self._memmap is None else read_only_view(self._memmap[z0:z1], self.dtype)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        """The region [z, y, x] (z, y, x); touches only the pages of z: a whole slab is decoded at once,
        a part of one a batch of pages (one per I/O thread) at a time."""
        if self._memmap is not None:
            return np.array(self._memmap[z, y, x], dtype=self.dtype)
        zs, ys, xs = (range(*s.indices(n)) for s, n in zip((z, y, x), self.shape))
        out = np.empty((len(zs), len(ys), len(xs)), self.dtype)
        if (len(ys), len(xs)) == self.shape[1:] and zs.step == 1 and len(zs):
            decoded = self._decode(zs, out)  # the whole slab at once, in place when the types agree
            if not np.shares_memory(decoded, out):
                out[...] = decoded
            return out
        batch = io_threads()
        for i in range(0, len(zs), batch):
            out[i:i + batch] = self._decode(zs[i:i + batch])[:, y, x]
        return out

    def close(self) -> None:
        self._memmap = None
        self._pages = None
        self._tif.close()


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_slices(folder: Path, suffixes: tuple[str, ...] = TIFF_SUFFIXES) -> list[Path]:
    """The files of ``folder`` ending in ``suffixes`` (any case) in natural order (s2.tif before s10.tif);
    hidden files skipped."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def _slice_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with _open_tiff(path) as tif:
        series = tif.series[0]
        return _volume_shape(series, str(path)), native_dtype(series.dtype, where=str(path))


class TiffFolderSource(ReopeningSource):
    """A folder of single-slice TIFFs (z, y, x), one file per z in natural order, read file by file.

    Folders of other slice files reuse it through the hooks ``_list_files``, ``_header``, ``_attrs``
    and ``_read_file``."""

    def __init__(self, path: str | os.PathLike):
        self.path = require_file(Path(path), "folder")
        self._remember(self.path)
        self.files = self._list_files()
        shape, dtype = self._check_headers()
        self.info = info_from_attrs(self._attrs(), (len(self.files),) + shape, dtype, name=self.path.name,
                                    where=str(self.path))

    def _list_files(self) -> list[Path]:
        files = list_slices(self.path)
        if not files:
            raise FormatError(f"folder {self.path} holds no .tif/.tiff files; give a folder of TIFF slices")
        return files

    def _header(self, path: Path) -> tuple[tuple[int, ...], np.dtype]:
        """The (y, x) shape and dtype of one slice file."""
        return _slice_header(path)

    def _attrs(self) -> dict:
        """The volume metadata (:func:`volume_attrs` style) of the folder."""
        with _open_tiff(self.files[0]) as tif:
            return _tiff_attrs(tif)

    def _read_file(self, path: Path) -> np.ndarray:
        """The (y, x) slice stored in ``path``."""
        with _open_tiff(path) as tif:
            try:
                return tif.series[0].asarray()
            except Exception as exc:  # decoders raise their own types (zlib.error, imagecodecs errors)
                raise _decode_error(exc, path, "the slice") from exc

    def _check_headers(self) -> tuple[tuple[int, int], np.dtype]:
        shape, dtype = self._header(self.files[0])
        for path in self.files:
            other = self._header(path) if path is not self.files[0] else (shape, dtype)
            if len(other[0]) != 2 or other != (shape, dtype):
                raise ShapeMismatchError(f"slice {path.name} has shape {other[0]} {other[1]}, but "
                                         f"{self.files[0].name} has {shape} {dtype}; all slices of a folder "
                                         "must be 2-D with the same shape and type")
        return shape, dtype  # type: ignore[return-value]

    def _slice(self, z: int) -> np.ndarray:
        return self._read_file(self.files[z]).reshape(self.shape[1:])

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        full = slice(None)
        return self.read_region(slice(z0, z1), full, full)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return stream_region(self._slice, self.info, z, y, x)


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
def _check_compression(compression: str | None) -> str | None:
    """A lossless TIFF compression name that works here, or None; ConfigError otherwise."""
    if compression in (None, "", "none"):
        return None
    if compression not in LOSSLESS:
        raise ConfigError(f"unknown TIFF compression {compression!r}; choose one of none, {', '.join(LOSSLESS)}")
    try:
        tifffile.imwrite(io.BytesIO(), np.zeros((2, 2), np.uint8), compression=compression)
    except (KeyError, ImportError, ValueError) as exc:
        raise ConfigError(f"TIFF compression {compression!r} is not available here ({exc}); install "
                          "imagecodecs or use zlib") from exc
    return compression


def _tiff_kwargs(info: VolumeInfo, *, bigtiff: bool, axes: str = "ZYX") -> dict:
    """tifffile.imwrite arguments that store ``info``'s geometry: ImageJ metadata for ImageJ's types
    (uint8/uint16/int16/float32) in classic TIFF, OME-XML otherwise, a JSON description for the rest."""
    vz, vy, vx = info.voxel_size
    extra = json.dumps(volume_attrs(info))
    char = info.dtype.char
    if char in IMAGEJ_DTYPES and not bigtiff:
        origin = {f"{a}origin": -o / v for a, o, v in zip("zyx", info.origin, info.voxel_size)}
        scale = dict(resolution=(1.0 / vx, 1.0 / vy), spacing=vz, unit=info.unit) if info.calibrated else {}
        return dict(imagej=True, resolution=scale.pop("resolution", None),
                    metadata={"axes": axes, **scale, **origin, "Properties": {META_KEY: extra}})
    if char in OME_DTYPES:
        sizes = {}
        if info.unit == "mm" and info.calibrated:
            sizes = {f"PhysicalSize{a}": v for a, v in zip("ZYX", info.voxel_size)}
            sizes.update({f"PhysicalSize{a}Unit": "mm" for a in "ZYX"})
        return dict(ome=True, bigtiff=bigtiff, metadata={"axes": axes, "Name": info.name,
                                                         "Description": json.dumps({META_KEY: volume_attrs(info)}),
                                                         **sizes})
    return dict(bigtiff=bigtiff, metadata={"axes": axes, META_KEY: extra})


class _PixelData:
    """The pixel data of an uncompressed TIFF stack (header and tags written by ``tifffile.memmap``): a
    slab goes in with one ``pwrite``, as fast as one ``tifffile.imwrite`` of the whole stack (a memory map
    took 3-4 times as long: page faults, then a synchronous flush)."""

    def __init__(self, path: Path, info: VolumeInfo, kwargs: dict):
        created = tifffile.memmap(path, shape=info.shape, dtype=info.dtype, **kwargs)
        self.offset, self.dtype = int(created.offset), created.dtype
        self.plane_bytes = int(np.prod(info.shape[1:])) * self.dtype.itemsize
        del created
        self._fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))

    def __setitem__(self, slices: slice, slab: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(slab, self.dtype)).cast("B")
        position = self.offset + slices.start * self.plane_bytes
        while view:
            if hasattr(os, "pwrite"):
                written = os.pwrite(self._fd, view, position)
            else:  # Windows
                os.lseek(self._fd, position, os.SEEK_SET)
                written = os.write(self._fd, view)
            view, position = view[written:], position + written

    def flush(self) -> None:
        """Close the file (the writes are in the file already)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TiffWriter(ScratchWriter):
    """Writes a multi-page TIFF (z, y, x) with its voxel size; slabs may come in any order.

    Uncompressed output is written slab by slab straight into ``<name>.partial``; with ``compression``
    (zlib, lzma, ...) slabs go to an uncompressed scratch file that is compressed page by page on
    commit. ``bigtiff`` defaults to True above ~4 GB (the output is then OME-TIFF).
    """

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 compression: str | None = None, bigtiff: bool | None = None):
        check_dtype(info.dtype, fmt="TIFF", kinds="iuf")
        self.compression = _check_compression(compression)
        self.bigtiff = info.nbytes > BIGTIFF_LIMIT if bigtiff is None else bool(bigtiff)
        self._array = None
        self._aborting = False
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _open(self) -> None:
        if self.compression is not None:
            super()._open()  # a scratch file, encoded on commit
            return
        self._array = _PixelData(self.temp_path, self.info, _tiff_kwargs(self.info, bigtiff=self.bigtiff))
        reserve_space(self.temp_path)

    def _encode(self, array: np.ndarray, path: Path) -> None:
        tifffile.imwrite(path, (np.asarray(page) for page in array), shape=self.info.shape, dtype=self.info.dtype,
                         compression=self.compression, **_tiff_kwargs(self.info, bigtiff=self.bigtiff))

    def _close(self) -> None:
        if self.compression is not None:
            super()._close()
            return
        array, self._array = self._array, None
        if array is not None:
            array.flush()


class TiffFolderWriter(VolumeWriter):
    """Writes a folder of single-slice TIFFs ``<prefix>_00000.tif``... (one per z, prefix defaults to the
    folder's name) into ``<folder>.partial/``, renamed on commit. Options: ``compression``, ``prefix``."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 compression: str | None = None, prefix: str | None = None):
        check_dtype(info.dtype, fmt="TIFF", kinds="iuf")
        self.compression = _check_compression(compression)
        self.prefix = prefix or Path(path).name
        self._digits = max(5, len(str(info.shape[0] - 1)))
        self._kwargs = _tiff_kwargs(info, bigtiff=False, axes="YX")
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def slice_name(self, z: int) -> str:
        return f"{self.prefix}_{z:0{self._digits}d}.tif"

    def _open(self) -> None:
        self.temp_path.mkdir()

    def _write(self, z0: int, slab: np.ndarray) -> None:
        for i, plane in enumerate(slab):
            tifffile.imwrite(self.temp_path / self.slice_name(z0 + i), plane, compression=self.compression,
                             **self._kwargs)

    def _close(self) -> None:
        """Nothing to flush: each slice file is complete when written."""


FORMATS = {
    "tiff": Format("tiff", (".tif", ".tiff", ".ome.tif", ".ome.tiff"), TiffSource, TiffWriter,
                   "multi-page TIFF (ImageJ hyperstack, OME-TIFF, BigTIFF), optional lossless compression"),
    "tiff-folder": Format("tiff-folder", (), TiffFolderSource, TiffFolderWriter,
                          "folder of single-slice TIFFs <name>_00000.tif..., naturally sorted", is_folder=True),
}
