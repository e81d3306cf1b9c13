"""Zarr volumes (.zarr, .ome.zarr folders): a chunked (z, y, x) array, random access, resumable writes.

Needs the optional ``zarr`` package (version 3, which reads and writes both Zarr formats 2 and 3):
``pip install "bone-avizo[zarr]"``. A plain ``.zarr`` is one array at the store's root (or at
``dataset=`` inside a group); an ``.ome.zarr`` is an OME-NGFF image group whose first resolution
level is read (leading singleton t/c axes dropped) with the voxel size from its ``scale``
transformation. Our metadata (``voxel_size``, ``origin``, ``unit``, ``name``, ``class_names``) are
array attributes, as for HDF5; ``done_slices`` is the resume point while writing. zarr decodes and
encodes the chunks of a slab concurrently, in as many threads as ``BONE_AVIZO_IO_THREADS`` allows.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, InvalidVolumeError,
                               ShapeMismatchError)
from bone_avizo.io.base import VolumeWriter
from bone_avizo.io.hdf5 import DEFAULT_NAMES, DONE_ATTR, chunk_shape
from bone_avizo.io.npy import (ReopeningSource, check_3d, check_dtype, info_from_attrs, native_dtype, require_file, to_mm,
                               volume_attrs)
from bone_avizo.io.registry import Format
from bone_avizo.io.threads import io_threads
from bone_avizo.volume import VolumeInfo

log = logging.getLogger(__name__)

INSTALL = 'pip install "bone-avizo[zarr]"'
COMPRESSIONS = ("zstd", "gzip", "blosc", "none")
NGFF_AXES = ("z", "y", "x")


def import_zarr():
    """The zarr module (>= 3); FormatError naming the install command when it is missing or too old."""
    try:
        import zarr
    except ImportError as exc:
        raise FormatError(f"reading or writing Zarr needs the zarr package; install it: {INSTALL}") from exc
    if int(zarr.__version__.split(".")[0]) < 3:
        raise FormatError(f"zarr {zarr.__version__} is too old (3 or newer needed); upgrade it: {INSTALL}")
    _size_zarr_threads(zarr)
    return zarr


_zarr_threads_sized = False


def _size_zarr_threads(zarr) -> None:
    """Once per process: zarr decodes and encodes the chunks of a slab concurrently in its thread pool;
    size the pool to the I/O threads (``BONE_AVIZO_IO_THREADS``) and let as many chunks be in flight.
    Settings the user gave zarr (``threading.max_workers``) stay."""
    global _zarr_threads_sized
    if _zarr_threads_sized:
        return
    _zarr_threads_sized = True
    threads = io_threads()
    settings = {"async.concurrency": max(int(zarr.config.get("async.concurrency", 10) or 10), 2 * threads)}
    if zarr.config.get("threading.max_workers", None) is None:
        settings["threading.max_workers"] = threads
    zarr.config.set(settings)
    log.debug("zarr: %s", settings)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _multiscales(attrs) -> list:
    """OME-NGFF multiscales of a group's attributes (v0.4 top level, v0.5 under 'ome')."""
    ome = attrs.get("ome")
    return (ome.get("multiscales") if isinstance(ome, dict) else None) or attrs.get("multiscales") or []


def _ngff_attrs(multiscale: dict) -> dict:
    """Voxel size and origin (mm, z, y, x) from the first dataset's scale/translation transformations."""
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    names = [a.get("name") for a in axes]
    if not all(n in names for n in NGFF_AXES):
        return {}
    attrs = {}
    for transform in multiscale["datasets"][0].get("coordinateTransformations", []):
        kind = transform.get("type")
        if kind in ("scale", "translation") and kind in transform:
            key = "voxel_size" if kind == "scale" else "origin"
            attrs[key] = [to_mm([transform[kind][names.index(a)]], axes[names.index(a)].get("unit", "mm"),
                                where="OME-Zarr")[0][0] for a in NGFF_AXES]
    if attrs:
        attrs["unit"] = "mm"
    return attrs


def _select(group, dataset: str | None, *, where: str):
    """(array, extra attrs) of a group: ``dataset``, else the OME-NGFF level 0, else the only 3-D array,
    else 'data'/'volume'."""
    if dataset is not None:
        node = group.get(dataset)
        if node is None or not hasattr(node, "shape"):
            raise FormatError(f"{where} has no array {dataset!r}; available: {_listing(group)}")
        return node, {}
    multiscales = _multiscales(group.attrs.asdict())
    if multiscales:
        return group[multiscales[0]["datasets"][0]["path"]], _ngff_attrs(multiscales[0])
    arrays = {name: node for name, node in group.members(max_depth=None) if hasattr(node, "shape")}
    volumes = [name for name, node in arrays.items() if len(node.shape) == 3]
    chosen = volumes if len(volumes) == 1 else [n for n in DEFAULT_NAMES if n in volumes][:1]
    if chosen:
        return arrays[chosen[0]], {}
    if not volumes:
        raise InvalidVolumeError(f"{where} holds no 3-D array (arrays: {_listing(group)}); store the volume "
                                 "as a (z, y, x) array")
    raise FormatError(f"{where} holds several 3-D arrays ({', '.join(volumes)}); choose one with dataset=<path>")


def _listing(group) -> str:
    return ", ".join(f"{name} {node.shape}" for name, node in group.members(max_depth=None)
                     if hasattr(node, "shape")) or "none"


def _open_zarr_node(path: Path, mode: str = "r"):
    """The array or group at ``path``; FormatError if it is not a Zarr store."""
    zarr = import_zarr()
    require_file(path)
    try:
        return zarr.open(store=str(path), mode=mode)
    except (FileNotFoundError, KeyError, zarr.errors.BaseZarrError, zarr.errors.NodeNotFoundError) as exc:
        raise FormatError(f"{path} is not a Zarr store ({exc}); check the path or its extension") from exc
    except (ValueError, TypeError) as exc:
        raise CorruptFileError(f"{path} has damaged Zarr metadata ({exc}); re-create it") from exc


class ZarrSource(ReopeningSource):
    """A (z, y, x) Zarr array; slabs and regions read only the chunks they touch.
    Option ``dataset``: the array's path inside a Zarr group."""

    def __init__(self, path: str | os.PathLike, *, dataset: str | None = None):
        self.path = Path(path)
        self._remember(self.path, dataset=dataset)
        node = _open_zarr_node(self.path)
        extra = {}
        if not hasattr(node, "shape"):
            node, extra = _select(node, dataset, where=str(self.path))
        where = f"{self.path}:{node.path or '/'}"
        self._lead = self._leading_axes(node.shape, where)
        shape = check_3d(node.shape[self._lead:], where=where)
        dtype = native_dtype(node.dtype, where=where)
        attrs = {**node.attrs.asdict(), **extra}
        self.info = info_from_attrs(attrs, shape, dtype, name=_stem(self.path), where=where)
        self._array = node

    @staticmethod
    def _leading_axes(shape, where: str) -> int:
        """How many leading singleton axes (OME-NGFF t, c) to drop."""
        lead = max(len(shape) - 3, 0)
        if any(s != 1 for s in shape[:lead]):
            raise InvalidVolumeError(f"{where} has shape {shape}; only a single 3-D (z, y, x) volume (leading "
                                     "axes of size 1) can be read: pick one channel/time point")
        return lead

    @property
    def read_depth(self) -> int:
        return int(self._array.chunks[self._lead])

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return self.read_region(slice(z0, z1), slice(None), slice(None))

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        try:
            return np.asarray(self._array[(0,) * self._lead + (z, y, x)], dtype=self.dtype)
        except (ValueError, OSError) as exc:
            raise CorruptFileError(f"{self.path}: cannot read [{z}, {y}, {x}] ({exc}); a chunk is damaged") from exc

    def close(self) -> None:
        self._array = None


def compressor(name: str | None, zarr_format: int):
    """The compressors argument for ``name`` ('zstd', 'gzip', 'blosc' or None) in Zarr format 2 or 3."""
    if name in (None, "none"):
        return None
    if name not in COMPRESSIONS:
        raise ConfigError(f"unknown Zarr compression {name!r}; choose one of {', '.join(COMPRESSIONS)}")
    if zarr_format == 2:
        import numcodecs
        return {"zstd": numcodecs.Zstd(level=3), "gzip": numcodecs.GZip(level=4), "blosc": numcodecs.Blosc()}[name]
    codecs = import_zarr().codecs
    return {"zstd": codecs.ZstdCodec(level=3), "gzip": codecs.GzipCodec(level=4), "blosc": codecs.BloscCodec()}[name]


def _ngff_metadata(info: VolumeInfo, path: str) -> dict:
    """OME-NGFF multiscales (one level at ``path``) for ``info``: axes z, y, x in millimetres."""
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in NGFF_AXES]
    transforms = [{"type": "scale", "scale": list(info.voxel_size)}]
    if any(info.origin):
        transforms.append({"type": "translation", "translation": list(info.origin)})
    return {"axes": axes, "datasets": [{"path": path, "coordinateTransformations": transforms}], "name": info.name}


class ZarrWriter(VolumeWriter):
    """Writes a chunked (z, y, x) Zarr array into ``<name>.zarr.partial/``; resumable.

    Options: ``compression`` ('zstd' default, 'gzip', 'blosc', None), ``zarr_format`` (3 default, or 2),
    ``dataset`` (array path inside a group; an ``.ome.zarr`` output is an OME-NGFF group with level '0').
    """

    resumable = True

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 compression: str | None = "zstd", zarr_format: int = 3, dataset: str | None = None):
        self.zarr = import_zarr()
        check_dtype(info.dtype, fmt="Zarr")
        if zarr_format not in (2, 3):
            raise ConfigError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
        self.zarr_format = zarr_format
        self._compressor = compressor(compression, zarr_format)
        self.ome = str(path).lower().endswith(".ome.zarr")
        self.dataset = dataset or ("0" if self.ome else None)
        self._array: Any = None  # the zarr array, once opened
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _open(self) -> None:
        if self.resume and self.temp_path.exists():
            self._reopen()
            return
        attrs = {**volume_attrs(self.info), DONE_ATTR: 0}
        args = dict(shape=self.info.shape, chunks=chunk_shape(self.info.shape), dtype=self.info.dtype,
                    compressors=self._compressor, attributes=attrs)
        if self.dataset is None:
            self._array = self.zarr.create_array(store=str(self.temp_path), zarr_format=self.zarr_format, **args)
            return
        group = self.zarr.open_group(str(self.temp_path), mode="w", zarr_format=self.zarr_format)
        if self.ome:
            self._set_ngff(group)
        self._array = group.create_array(self.dataset, **args)

    def _set_ngff(self, group) -> None:
        multiscales = [_ngff_metadata(self.info, self.dataset)]
        if self.zarr_format == 3:
            group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
        else:
            multiscales[0]["version"] = "0.4"
            group.attrs["multiscales"] = multiscales

    def _reopen(self) -> None:
        where = f"cannot resume from {self.temp_path}"
        try:
            array = self.zarr.open_array(str(self.temp_path), path=self.dataset or "", mode="r+")
        except (FileNotFoundError, KeyError, ValueError, self.zarr.errors.BaseZarrError) as exc:
            raise CorruptFileError(f"{where}: no readable array ({exc}); delete it or write again without "
                                   "resume") from exc
        if array.shape != self.info.shape or array.dtype != self.info.dtype:
            raise ShapeMismatchError(f"{where}: it holds {array.shape} {array.dtype}, expected {self.info.shape} "
                                     f"{self.info.dtype}; delete it or write without resume")
        self._array = array
        self.done_slices = int(array.attrs.get(DONE_ATTR, 0))
        log.info("resuming %s after %d completed slices", self.path, self.done_slices)

    def _write(self, z0: int, slab: np.ndarray) -> None:
        self._array[z0:z0 + slab.shape[0]] = slab

    def _save_done(self, z_end: int) -> None:
        self._array.attrs[DONE_ATTR] = z_end  # chunk writes are already on disk when this is stored

    def _close(self) -> None:
        self._array = None

    def _before_commit(self) -> None:
        if self._array is not None:
            del self._array.attrs[DONE_ATTR]


FORMATS = {
    "zarr": Format("zarr", (".zarr", ".ome.zarr"), ZarrSource, ZarrWriter,
                   "Zarr v2/v3 array or OME-Zarr image (needs the zarr extra); resumable writes", is_folder=True),
}
