"""What the NIfTI, NRRD and DICOM modules share: axis-aligned geometry from direction vectors, and
writers that fill an uncompressed scratch file and encode it into the final file on commit.

Files of these formats list axes fastest first (x, y, z, the "file order"); arrays here are (z, y, x).
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from bone_avizo.errors import ConfigError, CorruptFileError, FormatError
from bone_avizo.io.base import VolumeWriter, remove_path, reserve_space

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # bytes decompressed per call when filling an array from a compressed stream
OBLIQUE_TOLERANCE = 1e-3  # a direction component below this fraction of the vector's length counts as 0


def axis_aligned(directions, origin, *, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Spacing and origin per array axis, in file order, from the world-space direction vector of each
    axis (its length is the spacing) and the world position of the first voxel.

    Each vector must point along one world axis (sign flips and axis swaps are fine); an oblique one
    raises FormatError. The origin of an axis is the world coordinate along the world axis it follows."""
    directions = np.asarray(directions, dtype=float)
    origin = np.zeros(directions.shape[1]) if origin is None else np.asarray(origin, dtype=float)
    spacing, start, used = [], [], set()
    for axis, vector in enumerate(directions):
        length = float(np.linalg.norm(vector))
        along = np.flatnonzero(np.abs(vector) > OBLIQUE_TOLERANCE * length)
        if not length > 0 or len(along) != 1 or int(along[0]) in used:
            shown = "(" + ",".join(f"{v:.6g}" for v in vector) + ")"
            raise FormatError(f"{where} has a non-axis-aligned space direction {shown} for axis {axis}; resample "
                              "it onto an axis-aligned grid first (e.g. 3D Slicer: harden the transform and "
                              "resample)")
        used.add(int(along[0]))
        spacing.append(length)
        start.append(float(origin[along[0]]) if along[0] < len(origin) else 0.0)
    return tuple(spacing), tuple(start)


class ScratchWriter(VolumeWriter):
    """A writer that collects slabs (any order) in an uncompressed memory-mapped scratch file
    ``<name>.partial.scratch`` and, on commit, encodes it into ``<name>.partial`` with :meth:`_encode`
    (disk: about twice the volume while writing; memory: what ``_encode`` holds at once)."""

    def _open(self) -> None:
        self._scratch = self.temp_path.with_name(self.temp_path.name + ".scratch")
        self._array = np.memmap(self._scratch, dtype=self.info.dtype, mode="w+", shape=self.info.shape)
        reserve_space(self._scratch)
        self._aborting = False

    def _write(self, z0: int, slab: np.ndarray) -> None:
        self._array[z0:z0 + slab.shape[0]] = slab

    def _encode(self, array: np.ndarray, path: Path) -> None:
        """Write the (z, y, x) ``array`` as the complete output file ``path``."""
        raise NotImplementedError

    def _close(self) -> None:
        array, self._array = getattr(self, "_array", None), None
        if array is None:
            return
        try:
            array.flush()
            if not self._aborting:
                self._encode(array, self.temp_path)
        finally:
            del array
            remove_path(self._scratch)

    def abort(self) -> None:
        self._aborting = True
        super().abort()


def rescaled_dtype(stored: np.dtype, slopes, intercepts, stored_range=None) -> np.dtype:
    """The dtype of ``stored * slope + intercept`` (one pair per slice or frame): the stored dtype when every
    pair is (1, 0); int16 when all are whole numbers and the stored range (``stored_range`` (min, max), else
    the dtype's) maps into int16 (Hounsfield units); float32 otherwise."""
    slopes, intercepts = np.asarray(slopes, dtype=float), np.asarray(intercepts, dtype=float)
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return np.dtype(stored)
    if stored.kind in "iub" and np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts)):
        info = np.iinfo(stored) if stored.kind in "iu" else np.iinfo(np.uint8)
        low, high = stored_range or (info.min, info.max)
        ends = np.concatenate([slopes * low + intercepts, slopes * high + intercepts])
        if ends.min() >= np.iinfo(np.int16).min and ends.max() <= np.iinfo(np.int16).max:
            return np.dtype(np.int16)
    return np.dtype(np.float32)


class ReadOnlyWriter(VolumeWriter):
    """The writer of formats that are only read (DICOM, Scanco ISQ): constructing it raises ConfigError."""

    def __init__(self, path, info, **options):
        raise ConfigError(f"{path}: {Path(path).suffix or 'this'} files are read, not written; write the volume as "
                          ".nii.gz, .nrrd, .seg.nrrd, .tif or a PNG folder")

    def _open(self) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError

    def _write(self, z0: int, slab: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _close(self) -> None:  # pragma: no cover
        raise NotImplementedError


def read_stream_into(stream, dtype: np.dtype, shape: tuple[int, ...], *, where: str) -> np.ndarray:
    """A ``shape`` array of ``dtype`` (C order) filled from the binary ``stream`` (a gzip/bz2 reader, say)
    in place: memory is the array only, not the stream's bytes as well. CorruptFileError when the stream
    ends early or cannot be decoded."""
    out = np.empty(shape, dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    filled = 0
    try:
        while filled < len(view):
            count = stream.readinto(view[filled:filled + READ_CHUNK])  # decoders allocate what is asked
            if not count:
                break
            filled += count
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"{where}: the compressed data cannot be decoded ({exc}); the file is damaged") from exc
    if filled < len(view):
        raise CorruptFileError(f"{where} holds {filled} bytes of data, its header declares {len(view)}; the file "
                               "is truncated")
    return out
