"""Lazy volume sources and atomic volume writers: the interfaces every format implements.

A source reads any slab ``[z0:z1]`` (and any region) of a volume without loading the whole
file. A writer receives slabs in any order, writes them to a temporary name, and renames to
the final name only on :meth:`VolumeWriter.commit`; an interrupted write never leaves a file
that looks finished. Resumable writers (HDF5, Zarr) persist how many leading slices are
complete so an interrupted job can continue.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Mapping, Union

import numpy as np

from bone_avizo.errors import (BoneAvizoError, OutputExistsError, OutputIsInputError, OutputWriteError,
                               ShapeMismatchError)
from bone_avizo.volume import Volume, VolumeInfo

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


class VolumeSource(ABC):
    """A read-only, lazily read volume in (z, y, x) order."""

    info: VolumeInfo

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.info.shape

    @property
    def dtype(self) -> np.dtype:
        return self.info.dtype

    @property
    def voxel_size(self):
        return self.info.voxel_size

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def read_depth(self) -> int:
        """Slices the format decodes at once (an HDF5/Zarr chunk layer; 1 for a slice per read): a reader
        of scattered slices (a sample of them) decodes each such layer once and counts all its slices."""
        return 1

    @abstractmethod
    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        """Slices z0..z1-1 as a new (z1-z0, y, x) array."""

    def view_slab(self, z0: int, z1: int) -> np.ndarray | None:
        """Slices z0..z1-1 as a read-only (z1-z0, y, x) view of voxels already in memory or mapped from the
        file, in native byte order; None when they must be read (and copied) by :meth:`read_slab`. For a
        caller that only reads the slab at once: it skips a copy of every voxel."""
        self._check_slab(z0, z1)
        return None

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        """The region [z, y, x] (step-1 slices) as a new array. Formats with random access override."""
        z0, z1, _ = z.indices(self.shape[0])
        return np.ascontiguousarray(self.read_slab(z0, z1)[:, y, x])

    def read_plane(self, axis: int, index: int) -> np.ndarray:
        """One plane: axis 0 -> (y, x), axis 1 -> (z, x), axis 2 -> (z, y)."""
        if not 0 <= index < self.shape[axis]:
            raise IndexError(f"plane {index} outside 0..{self.shape[axis] - 1} on axis {axis}")
        full = slice(None)
        region = [full, full, full]
        region[axis] = slice(index, index + 1)
        return np.take(self.read_region(*region), 0, axis=axis)

    def read_all(self) -> np.ndarray:
        return self.read_slab(0, self.shape[0])

    def to_volume(self) -> Volume:
        return Volume(self.read_all(), self.info)

    def close(self) -> None:
        """Release file handles. Reading after close is an error."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_slab(self, z0: int, z1: int) -> tuple[int, int]:
        n = self.shape[0]
        if not (0 <= z0 <= z1 <= n):
            raise IndexError(f"slab [{z0}:{z1}] outside the volume's 0..{n} slices")
        return z0, z1


class ArraySource(VolumeSource):
    """A source over an in-memory (or memory-mapped) array or Volume."""

    def __init__(self, data: Volume | np.ndarray, info: VolumeInfo | None = None):
        if isinstance(data, Volume):
            info, data = data.info, data.array
        self.array = data
        self.info = info or VolumeInfo(data.shape, data.dtype, calibrated=False)

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return np.array(self.array[z0:z1])

    def view_slab(self, z0: int, z1: int) -> np.ndarray | None:
        self._check_slab(z0, z1)
        return read_only_view(self.array[z0:z1], self.dtype)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return np.array(self.array[z, y, x])


def read_only_view(array: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``array`` as a read-only plain ndarray view when it holds ``dtype`` in native byte order, else None."""
    if not isinstance(array, np.ndarray) or array.dtype != dtype or not array.dtype.isnative:
        return None
    view = array.view(np.ndarray)
    view.flags.writeable = False
    return view


def partial_path(path: Path) -> Path:
    """The temporary name a writer uses until commit: ``<name>.partial`` beside the output."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


def check_output_path(path: Path, *, overwrite: bool) -> None:
    """Refuse an existing output (unless overwrite; an empty folder made for it is no loss) and an
    unwritable folder, before any work."""
    if path.exists() and not overwrite and not _empty_folder(path):
        raise OutputExistsError(f"output {path} already exists; choose another name or allow overwriting "
                                "(--overwrite)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputWriteError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputWriteError(f"output folder {folder} is not writable; choose another output path")


PathArg = Union[str, os.PathLike, None]
NamedPaths = Mapping[str, Union[PathArg, Iterable[PathArg]]]


def _named(paths: NamedPaths) -> list[tuple[str, Path]]:
    """(name, path) for every path given under a name (a single path, or a list of paths); None skipped."""
    out = []
    for name, value in paths.items():
        values = [value] if value is None or isinstance(value, (str, os.PathLike)) else list(value)
        out += [(name, Path(v)) for v in values if v is not None and str(v)]
    return out


def _with_data_files(named: list[tuple[str, Path]], reading: bool) -> list[tuple[str, Path]]:
    """The paths and the data files that go with them (a MetaImage header's .raw)."""
    from bone_avizo.io.raw import metaimage_data_file

    out = []
    for name, path in named:
        data = metaimage_data_file(path, reading=reading)
        out += [(name, path)] + ([(f"{name} (its data file)", data)] if data is not None else [])
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _collision(output: Path, other: Path) -> str | None:
    """How writing ``output`` would touch ``other`` (a phrase), or None when it would not."""
    out, oth = output.resolve(), other.resolve()
    if out == oth:
        return "is the same file as"
    if _same_file(output, other):
        return "is a hard link to"
    if oth in out.parents:
        return "lies inside"
    if out in oth.parents:
        return "is a folder holding"
    return None


def check_outputs_spare_inputs(outputs: NamedPaths, inputs: NamedPaths) -> None:
    """Refuse, before any work and whatever ``overwrite`` says, outputs that would replace one of the
    inputs or another output: the same path once links are resolved, a hard link to it (same device and
    inode), an output inside an input folder (a folder of slices, a Zarr store) or a folder output
    holding an input. ``outputs`` / ``inputs`` map a name for messages (a flag such as ``--output``)
    to a path or a list of paths (None entries are skipped)."""
    named_inputs, named_outputs = _with_data_files(_named(inputs), True), _with_data_files(_named(outputs), False)
    for k, (out_name, out) in enumerate(named_outputs):
        for in_name, source in named_inputs:
            relation = _collision(out, source)
            if relation:
                raise OutputIsInputError(
                    f"{out_name} {out} {relation} {in_name} {source}; writing it would destroy that "
                    "input (--overwrite never replaces an input): choose another output path")
        for other_name, other in named_outputs[k + 1:]:
            relation = _collision(out, other)
            if relation:
                raise OutputIsInputError(f"{out_name} {out} {relation} {other_name} {other}; "
                                         "give each output its own path")


def replace_path(src: Path, dst: Path) -> None:
    """Atomically move ``src`` to ``dst`` (a file or folder), replacing ``dst`` if present."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(dst.name + ".old")
        if old.exists():
            remove_path(old)
        os.replace(dst, old)
        os.replace(src, dst)
        remove_path(old)
    else:
        os.replace(src, dst)


def reserve_space(path: Path) -> None:
    """Allocate the disk blocks of the (sparse) file ``path`` now, so that a full disk fails here with
    ENOSPC instead of killing the process with SIGBUS when a memory-mapped write finds no space.
    A no-op where the operating system or the file system cannot allocate ahead."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    with open(path, "r+b") as fh:
        try:
            allocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


class VolumeWriter(ABC):
    """Writes a volume slab by slab to ``<path>.partial`` and renames it to ``path`` on commit.

    Use as a context manager: a clean exit commits, an exception aborts (the partial output is
    deleted, or kept for resumable writers opened with ``resume=True`` so the job can continue).
    """

    resumable = False

    def __init__(self, path: str | os.PathLike, info: VolumeInfo, *, overwrite: bool = False,
                 resume: bool = False):
        self.path = Path(path)
        self.info = info
        self.resume = resume and self.resumable
        self.temp_path = partial_path(self.path)
        self.done_slices = 0
        self._closed = False
        check_output_path(self.path, overwrite=overwrite)
        if self.temp_path.exists() and not self.resume:
            remove_path(self.temp_path)
        try:
            self._open()
        except BoneAvizoError:  # already says what went wrong (OutputWriteError is an OSError too)
            raise
        except OSError as exc:
            self._discard()
            raise OutputWriteError(f"cannot create {self.temp_path}: {exc.strerror or exc}; "
                                   "check the folder's permissions and free space") from exc

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Create (or, when resuming, reopen) the temporary output; set ``done_slices``."""

    @abstractmethod
    def _write(self, z0: int, slab: np.ndarray) -> None:
        """Store slab (n, y, x) at slices z0..z0+n-1 of the temporary output."""

    @abstractmethod
    def _close(self) -> None:
        """Flush and close the temporary output (called before rename and on abort)."""

    def _save_done(self, z_end: int) -> None:
        """Persist that slices 0..z_end-1 are complete (resumable writers only)."""

    def _before_commit(self) -> None:
        """Last changes to the temporary output before it is closed and renamed (e.g. dropping the
        resume point); OSError here is reported like a failed write."""

    # -- public API ----------------------------------------------------------------------
    def write_slab(self, z0: int, slab: np.ndarray) -> None:
        """Write slab (n, y, x) at z0; the dtype is cast to the writer's dtype when safe."""
        nz, ny, nx = self.info.shape
        slab = np.asarray(slab)
        if slab.ndim != 3 or slab.shape[1:] != (ny, nx) or not 0 <= z0 <= nz - slab.shape[0]:
            raise ShapeMismatchError(f"slab of shape {slab.shape} at z={z0} does not fit a volume of "
                                     f"shape {self.info.shape}")
        try:
            self._write(z0, slab.astype(self.info.dtype, copy=False))
        except BoneAvizoError:  # already says what went wrong (OutputWriteError is an OSError too)
            raise
        except OSError as exc:
            raise OutputWriteError(f"writing {self.path} failed at slice {z0}: {exc.strerror or exc}; "
                                   "check free disk space") from exc

    def mark_done(self, z_end: int) -> None:
        """Record that slices 0..z_end-1 are complete (a resume point for resumable formats)."""
        self.done_slices = max(self.done_slices, z_end)
        try:
            self._save_done(self.done_slices)
        except BoneAvizoError:  # already says what went wrong (OutputWriteError is an OSError too)
            raise
        except OSError as exc:
            raise OutputWriteError(f"writing {self.path} failed after slice {z_end - 1}: {exc.strerror or exc}; "
                                   "check free disk space") from exc

    def commit(self) -> Path:
        """Close and rename the temporary output to the final path."""
        if self._closed:
            return self.path
        try:
            self._before_commit()
            self._close()
            self._closed = True
            replace_path(self.temp_path, self.path)
        except BoneAvizoError:  # already says what went wrong (OutputWriteError is an OSError too)
            raise
        except OSError as exc:  # e.g. the disk filled up while the last data were flushed
            self._discard()
            raise OutputWriteError(f"writing {self.path} failed: {exc.strerror or exc}; check free disk "
                                   "space") from exc
        log.info("wrote %s", self.path)
        return self.path

    def _discard(self) -> None:
        """After a failed open or commit: close quietly and remove what a resume cannot use."""
        self.abort()
        if not self.resume:
            remove_path(self.temp_path)

    def abort(self) -> None:
        """Close and discard the temporary output (resumable writers in resume mode keep it)."""
        if self._closed:
            return
        try:
            self._close()
        except Exception:  # noqa: BLE001 - an abort follows an error (or a cancel): that one is reported
            log.debug("closing %s while discarding it failed", self.temp_path, exc_info=True)
        finally:
            self._closed = True
            if not self.resume:
                remove_path(self.temp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class MemoryWriter:
    """A writer into an in-memory array, with the VolumeWriter interface (no files involved)."""

    resumable = False

    def __init__(self, info: VolumeInfo):
        self.info = info
        self.path = None
        self.done_slices = 0
        self.array = np.zeros(info.shape, info.dtype)

    def write_slab(self, z0: int, slab: np.ndarray) -> None:
        self.array[z0:z0 + slab.shape[0]] = slab

    def mark_done(self, z_end: int) -> None:
        self.done_slices = max(self.done_slices, z_end)

    def commit(self) -> Volume:
        return Volume(self.array, self.info)

    def abort(self) -> None:
        self.array = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
