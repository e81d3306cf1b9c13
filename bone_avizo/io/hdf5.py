"""HDF5 volumes (.h5/.hdf5/.hdf): one 3-D dataset (z, y, x), chunked and compressed, random access.

Metadata are dataset attributes: ``voxel_size``/``origin`` (z, y, x) in ``unit`` (mm), ``name``,
``class_names``, and ``element_size_um`` (z, y, x) in µm as ilastik and ImageJ use it (read when
``voxel_size`` is absent). The writer is resumable: attribute ``done_slices`` records how many leading
slices are complete and the file is flushed each time it changes.

Datasets compressed with gzip (deflate, optionally with shuffle), the writer's default, are read and
written chunk by chunk with the compression in parallel threads (:mod:`bone_avizo.io.hdf5_chunks`; the
files stay standard gzip HDF5). ``BONE_AVIZO_IO_THREADS`` sets the number of threads.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, InvalidVolumeError,
                               ShapeMismatchError)
from bone_avizo.io.base import VolumeWriter
from bone_avizo.io.hdf5_chunks import ChunkCodec, ChunkReader, ChunkWriter
from bone_avizo.io.npy import ReopeningSource, check_3d, check_dtype, info_from_attrs, native_dtype, require_file, volume_attrs
from bone_avizo.io.registry import Format
from bone_avizo.volume import VolumeInfo

log = logging.getLogger(__name__)

DONE_ATTR = "done_slices"
DEFAULT_NAMES = ("data", "volume")
COMPRESSIONS = ("gzip", "lzf", "none")
# at most this often, a resume point stores the waiting slices of an incomplete chunk layer (compressing
# the whole layer again: every block did, which tripled the compression work of a prediction); complete
# layers count as soon as they are stored
CHECKPOINT_SECONDS = 10.0
DEFAULT_GZIP_LEVEL = 1  # level 4 took 1.9x as long on label volumes for 1.4x smaller files
MAX_CACHE = 256 * 2**20


def chunk_shape(shape) -> tuple[int, int, int]:
    """HDF5/Zarr chunks for a (z, y, x) volume: (min(z, 16), min(y, 256), min(x, 256))."""
    return (min(shape[0], 16), min(shape[1], 256), min(shape[2], 256))


def _cache_bytes(shape, dtype) -> int:
    """A chunk cache that holds one layer of chunks (16 slices), so slice-by-slice access decompresses
    each chunk once; capped at 256 MB."""
    layer = chunk_shape(shape)[0] * shape[1] * shape[2] * np.dtype(dtype).itemsize
    return int(min(layer * 1.1 + 2**20, MAX_CACHE))


def _list_datasets(group: h5py.Group) -> dict[str, tuple[int, ...]]:
    """Every dataset below ``group``: path -> shape."""
    found: dict[str, tuple[int, ...]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = obj.shape

    group.visititems(visit)
    return found


def _listing(found: dict) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in found.items()) or "none"


def _select_dataset(file: h5py.File, dataset: str | None, *, where: str) -> h5py.Dataset:
    """The dataset named ``dataset``, else the only 3-D one, else 'data'/'volume'; errors list the choices."""
    found = _list_datasets(file)
    if dataset is not None:
        node = file.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise FormatError(f"{where} has no dataset {dataset!r}; available: {_listing(found)}")
        return node
    volumes = [name for name, shape in found.items() if len(shape) == 3]
    if len(volumes) == 1:
        return file[volumes[0]]
    for name in DEFAULT_NAMES:
        if name in volumes:
            return file[name]
    if not volumes:
        raise InvalidVolumeError(f"{where} holds no 3-D dataset (datasets: {_listing(found)}); store the volume "
                                 "as a (z, y, x) dataset")
    raise FormatError(f"{where} holds several 3-D datasets ({_listing({v: found[v] for v in volumes})}); "
                      "choose one with dataset=<path>")


def _open_hdf5(path: Path, mode: str = "r", **kwargs) -> h5py.File:
    """Open an HDF5 file; FormatError if it is not HDF5, CorruptFileError if it is damaged."""
    require_file(path)
    if not h5py.is_hdf5(path):
        raise FormatError(f"{path} is not an HDF5 file; check the file or its extension")
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as exc:
        raise CorruptFileError(f"{path} is a damaged or truncated HDF5 file ({exc}); re-create it") from exc


class Hdf5Source(ReopeningSource):
    """A (z, y, x) dataset of an HDF5 file; slabs and regions read only the chunks they touch.
    Option ``dataset``: the dataset's path in the file (default: see :func:`_select_dataset`)."""

    def __init__(self, path: str | os.PathLike, *, dataset: str | None = None):
        self.path = Path(path)
        self._remember(self.path, dataset=dataset)
        with _open_hdf5(self.path) as file:
            ds = _select_dataset(file, dataset, where=str(self.path))
            name, where = ds.name, f"{self.path}:{ds.name}"
            shape = check_3d(ds.shape, where=where)
            dtype = native_dtype(ds.dtype, where=where)
            self.info = info_from_attrs(ds.attrs, shape, dtype, name=self.path.stem, where=where)
        # reopened with a chunk cache sized for this dataset
        self._file = _open_hdf5(self.path, rdcc_nbytes=_cache_bytes(shape, dtype), rdcc_nslots=10007)
        self._ds = self._file[name]
        self._chunks = self._chunk_reader(_cache_bytes(shape, dtype))

    @property
    def read_depth(self) -> int:
        return int(self._ds.chunks[0]) if self._ds.chunks else 1

    def _chunk_reader(self, cache_bytes: int) -> ChunkReader | None:
        """The threaded reader of gzip(/shuffle) chunks, or None (h5py reads other layouts and filters)."""
        codec = ChunkCodec.of(self._ds)
        if codec is None or not hasattr(self._ds.id, "chunk_iter"):
            return None
        return ChunkReader(self._ds, codec, cache_bytes=cache_bytes)

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return self.read_region(slice(z0, z1), slice(None), slice(None))

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        try:
            if self._chunks is not None and all(s.step in (None, 1) for s in (z, y, x)):
                return self._chunks.read((z, y, x), self.dtype)
            return np.asarray(self._ds[z, y, x], dtype=self.dtype)
        except (OSError, RuntimeError) as exc:
            raise CorruptFileError(f"{self.path}: cannot read [{z}, {y}, {x}] ({exc}); the file is damaged") from exc

    def close(self) -> None:
        self._chunks = None
        if self._file:
            self._file.close()


def compression_args(compression: str | None, level: int | None, itemsize: int) -> dict:
    """h5py create_dataset arguments for 'gzip' (level 0-9, default 1: fast, and label volumes still shrink about 20-fold), 'lzf' or None."""
    if compression in (None, "none"):
        return {}
    if compression not in COMPRESSIONS:
        raise ConfigError(f"unknown HDF5 compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    args = {"compression": compression, "shuffle": itemsize > 1}
    if compression == "gzip":
        args["compression_opts"] = DEFAULT_GZIP_LEVEL if level is None else int(level)
    return args


def _hdf5_attrs(info: VolumeInfo) -> dict:
    """Dataset attributes for ``info``: :func:`volume_attrs` plus ilastik's element_size_um."""
    attrs = volume_attrs(info)
    if info.unit == "mm" and info.calibrated:
        attrs["element_size_um"] = [v * 1000.0 for v in info.voxel_size]
    return attrs


def _recoverable(ds: h5py.Dataset, done: int) -> int:
    """Make a partial dataset safe to continue after slice ``done`` and return where to continue.

    A process killed while HDF5 rewrote a compressed chunk can leave that chunk undecodable, and
    HDF5 reads a chunk back before writing part of it. So the chunks past the resume point are reset
    to zeros (written directly, never read), and if the chunk layer holding the resume point does not
    decode, it is reset too and the work continues at the start of that layer."""
    depth = ds.chunks[0]
    start = done - done % depth
    if done > start:
        try:
            ds[start:done]
        except OSError:
            log.warning("%s: slices %d..%d are damaged; continuing at slice %d", ds.file.filename, start,
                        done - 1, start)
            done = start
    first = start + depth if done > start else start
    offsets = [ds.id.get_chunk_info(i).chunk_offset for i in range(ds.id.get_num_chunks())]
    stale = [offset for offset in offsets if offset[0] >= first]
    if stale:
        mask, zeros = _zero_chunk(ds)
        for offset in stale:
            ds.id.write_direct_chunk(offset, zeros, mask)
    return done


def _zero_chunk(ds: h5py.Dataset) -> tuple[int, bytes]:
    """(filter mask, stored bytes) of an all-zero chunk of ``ds``: same shape, type and filters."""
    with h5py.File(io.BytesIO(), "w") as scratch:
        zero = scratch.create_dataset("zero", shape=ds.chunks, dtype=ds.dtype, chunks=ds.chunks,
                                      compression=ds.compression, compression_opts=ds.compression_opts,
                                      shuffle=ds.shuffle, fillvalue=0)
        zero[...] = 0
        scratch.flush()
        return zero.id.read_direct_chunk((0,) * ds.ndim)


@contextmanager
def _write_errors_as_oserror():
    """h5py reports some failed writes (a full disk while flushing or closing) as RuntimeError with the
    errno inside the text; raise them as OSError, which the writers report as OutputWriteError."""
    try:
        yield
    except RuntimeError as exc:
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code)) from exc


class Hdf5Writer(VolumeWriter):
    """Writes a chunked, compressed (z, y, x) HDF5 dataset; resumable.

    Options: ``dataset`` (path in the file, default 'data'), ``compression`` ('gzip' default, 'lzf',
    None) and ``compression_level`` (gzip 0-9).
    """

    resumable = True

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 dataset: str = "data", compression: str | None = "gzip", compression_level: int | None = None):
        check_dtype(info.dtype, fmt="HDF5")
        self.dataset = dataset
        self._compression = compression_args(compression, compression_level, info.dtype.itemsize)
        self._file: h5py.File | None = None
        self._ds: h5py.Dataset | None = None
        self._chunks = None
        self._recorded = 0  # the resume point in the file
        self._next_checkpoint = 0.0  # time.monotonic() from which waiting slices are stored again
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _open(self) -> None:
        cache = dict(rdcc_nbytes=_cache_bytes(self.info.shape, self.info.dtype), rdcc_nslots=10007)
        if self.resume and self.temp_path.exists():
            self._reopen(cache)
            return
        self._file = h5py.File(self.temp_path, "w", **cache)
        self._ds = self._file.create_dataset(self.dataset, shape=self.info.shape, dtype=self.info.dtype,
                                             chunks=chunk_shape(self.info.shape), **self._compression)
        self._ds.attrs.update(_hdf5_attrs(self.info))
        self._ds.attrs[DONE_ATTR] = 0
        self._file.flush()
        self._chunks = self._chunk_writer(0)

    def _chunk_writer(self, done: int) -> ChunkWriter | None:
        """Whole chunk layers compressed in threads for gzip(/shuffle) output; None: h5py writes (lzf, none)."""
        codec = ChunkCodec.of(self._ds)
        return None if codec is None else ChunkWriter(self._ds, codec, done=done)

    def _reopen(self, cache: dict) -> None:
        where = f"cannot resume from {self.temp_path}"
        try:
            self._file = h5py.File(self.temp_path, "r+", **cache)
        except OSError as exc:
            raise CorruptFileError(f"{where}: it is damaged ({exc}); delete it or write again without resume") from exc
        ds = self._file.get(self.dataset)
        if not isinstance(ds, h5py.Dataset) or ds.shape != self.info.shape or ds.dtype != self.info.dtype:
            found = (ds.shape, ds.dtype) if isinstance(ds, h5py.Dataset) else "no such dataset"
            self._file.close()
            raise ShapeMismatchError(f"{where}: dataset {self.dataset!r} is {found}, expected "
                                     f"{self.info.shape} {self.info.dtype}; delete it or write without resume")
        self._ds = ds
        self.done_slices = self._recorded = _recoverable(ds, int(ds.attrs.get(DONE_ATTR, 0)))
        self._chunks = self._chunk_writer(self.done_slices)
        log.info("resuming %s after %d completed slices", self.path, self.done_slices)

    def _write(self, z0: int, slab: np.ndarray) -> None:
        with _write_errors_as_oserror():
            if self._chunks is not None:
                self._chunks.write(z0, slab)
            else:
                self._ds[z0:z0 + slab.shape[0]] = slab

    def _save_done(self, z_end: int) -> None:
        """Record slices 0..z_end-1 as done: those of an incomplete chunk layer, which wait in memory, are
        stored for it at most every CHECKPOINT_SECONDS; in between the resume point ends at that layer."""
        with _write_errors_as_oserror():
            if self._chunks is not None:
                if time.monotonic() >= self._next_checkpoint:
                    self._chunks.persist(z_end)
                    self._next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
                z_end = self._chunks.persisted_end(z_end)
            if z_end <= self._recorded:
                return
            self._file.flush()  # the slices first: a kill between the flushes must not record unwritten ones
            self._ds.attrs[DONE_ATTR] = z_end
            self._file.flush()
            self._recorded = z_end

    def _write_waiting(self) -> None:
        """Store the slices still waiting for their chunk layer; the resume point then counts them."""
        stored = self._chunks.flush() if self._chunks is not None else False
        if (stored or self._recorded < self.done_slices) and DONE_ATTR in self._ds.attrs:
            self._ds.attrs[DONE_ATTR] = self._recorded = self.done_slices

    def _close(self) -> None:
        file = self._file
        if file is None:
            return
        try:
            with _write_errors_as_oserror():
                self._write_waiting()
                file.flush()  # h5py only prints errors of closing, so flush first (dataset still open)
        finally:
            self._file = self._ds = self._chunks = None
            with _write_errors_as_oserror():
                file.close()

    def _before_commit(self) -> None:
        if self._ds is not None:
            with _write_errors_as_oserror():
                self._write_waiting()
            del self._ds.attrs[DONE_ATTR]  # a finished file needs no resume point


FORMATS = {
    "hdf5": Format("hdf5", (".h5", ".hdf5", ".hdf"), Hdf5Source, Hdf5Writer,
                   "HDF5 dataset (z, y, x), chunked and compressed; resumable writes"),
}
