"""A lazy source that bounds the memory-mapped pages a long pass keeps resident.

Memory-mapped formats (.npy, uncompressed TIFF) count every page read so far in the process's
resident set until the map is closed. :class:`BoundedSource` wraps any format's source and
closes and reopens it after every ``reopen_bytes`` read, so a streamed pass over a 25 GB scan, or
an epoch of random slices, keeps at most about that much of the file resident. Reads return
copies that never point into a map.
"""
from __future__ import annotations

import os

import numpy as np

from bone_avizo.io import open_volume
from bone_avizo.io.base import VolumeSource

REOPEN_BYTES = 64 << 20


class BoundedSource(VolumeSource):
    """``open_volume(path, **options)``, reopened after every ``reopen_bytes`` read."""

    def __init__(self, path: str | os.PathLike, *, reopen_bytes: int = REOPEN_BYTES, **options):
        self.path = path
        self.options = options
        self.reopen_bytes = reopen_bytes
        self._inner = open_volume(path, **options)
        self.info = self._inner.info
        self._read = 0

    def _source(self, nbytes: int) -> VolumeSource:
        if self._inner is None:
            self._inner = open_volume(self.path, **self.options)
        elif self._read + nbytes > self.reopen_bytes and self._read:
            self._inner.close()
            self._inner = open_volume(self.path, **self.options)
            self._read = 0
        self._read += nbytes
        return self._inner

    def _bytes(self, *counts: int) -> int:
        return int(np.prod(counts)) * self.dtype.itemsize

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        out = self._source(self._bytes(z1 - z0, *self.shape[1:])).read_slab(z0, z1)
        return np.array(out, copy=True)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        counts = [len(range(*s.indices(n))) for s, n in zip((z, y, x), self.shape)]
        return np.array(self._source(self._bytes(*counts)).read_region(z, y, x), copy=True)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
