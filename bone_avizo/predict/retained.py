"""The start of a scan kept in memory between the statistics pass and the prediction pass.

The statistics pass reads every slice once; the prediction pass reads them all again. A source whose
slices are costly to read (a compressed HDF5, Zarr or TIFF is decoded twice) spares the second read of
the slices that the statistics pass kept: the first ones, read in order from z = 0, up to a byte budget
(a share of the job's memory limit). The prediction pass of the xy plane reads forward, so each kept
slab is dropped once a read starts past it; reads outside the kept slices go to the source.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from bone_avizo.io.base import ArraySource, VolumeSource

log = logging.getLogger(__name__)


class RetainedSource(VolumeSource):
    """Reads through ``source``; keeps the slabs read in order from z = 0 while they fit ``budget`` bytes
    and serves later reads inside them from memory (as new arrays, like every source)."""

    def __init__(self, source: VolumeSource, budget: int):
        self.source, self.info = source, source.info
        self.budget = 0 if isinstance(source, ArraySource) else int(budget)  # in memory already
        self._slabs: list[tuple[int, np.ndarray]] = []  # (first slice, slab), consecutive
        self._end = 0  # slices [first kept, _end) are in memory
        self._retaining = self.budget > 0
        self._predicting = False  # after the statistics pass: reads go forward, passed slabs are dropped
        self._lock = threading.Lock()

    @property
    def kept_slices(self) -> tuple[int, int]:
        """The slices [z0, z1) held in memory."""
        with self._lock:
            return (self._slabs[0][0], self._end) if self._slabs else (self._end, self._end)

    def stop_retaining(self) -> None:
        """Keep no further slabs (the statistics pass is over)."""
        with self._lock:
            self._retaining, self._predicting = False, True
            kept = sum(slab.nbytes for _, slab in self._slabs)
        if kept:
            log.debug("kept slices 0..%d (%.0f MB) of %s in memory for the prediction pass", self._end, kept / 1e6,
                      self.name)

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        with self._lock:
            self._drop_before(z0)
            first = self._slabs[0][0] if self._slabs else self._end
            if first <= z0 and z1 <= self._end:
                return self._from_memory(z0, z1)
            if first <= z0 < self._end:
                head = self._from_memory(z0, self._end)
                return np.concatenate([head, self.source.read_slab(self._end, z1)])
            slab = self.source.read_slab(z0, z1)
            self._maybe_keep(z0, z1, slab)
            return slab

    @property
    def read_depth(self) -> int:
        return self.source.read_depth

    def view_slab(self, z0: int, z1: int) -> np.ndarray | None:
        return self.source.view_slab(z0, z1)  # lent views are read again for free: nothing is kept

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        z0, z1, _ = z.indices(self.shape[0])
        first, end = self.kept_slices
        if first <= z0 and z1 <= end and z1 > z0:
            with self._lock:
                return np.ascontiguousarray(self._from_memory(z0, z1, copy=False)[:, y, x])
        return self.source.read_region(z, y, x)

    def forget(self) -> None:
        """Drop every kept slab (the wrapped source stays open: its owner closes it)."""
        with self._lock:
            self._retaining = False
            self._slabs.clear()

    def _maybe_keep(self, z0: int, z1: int, slab: np.ndarray) -> None:
        if not self._retaining:
            return
        kept = sum(s.nbytes for _, s in self._slabs)
        if z0 == self._end and kept + slab.nbytes <= self.budget:
            self._slabs.append((z0, slab))  # the caller only reads it (the statistics pass)
            self._end = z1
        else:
            self._retaining = False

    def _drop_before(self, z: int) -> None:
        """Drop the kept slabs that end at or before ``z`` (reads go forward once prediction starts)."""
        if not self._predicting:
            return
        while self._slabs and self._slabs[0][0] + len(self._slabs[0][1]) <= z:
            self._slabs.pop(0)

    def _from_memory(self, z0: int, z1: int, *, copy: bool = True) -> np.ndarray:
        parts = [slab[max(z0 - start, 0):min(z1 - start, len(slab))] for start, slab in self._slabs
                 if start < z1 and start + len(slab) > z0]
        if len(parts) == 1:
            return parts[0].copy() if copy else parts[0]
        return np.concatenate(parts)
