"""Slices and crops: which slices an epoch visits, where the crops go, and reading them lazily.

A *slice* is one 2-D image of a scan along a plane: ``SliceRef(scan, axis, index)`` with axis 0
(xy, slices along z), 1 (xz, along y) or 2 (yz, along x). Its 2.5D stack is the slices
``context_indices(index, n, C)`` along the same axis (mirrored at the edges), exactly as DLPred
builds them.

:class:`SliceReader` reads planes straight from the lazy sources (only the planes needed; a small
LRU cache keeps recently read planes, which 2.5D neighbours and repeated crops reuse).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bone_avizo.data.context import context_indices

AXIS_OF_PLANE = {"xy": 0, "xz": 1, "yz": 2}
MAX_TRIES = 50


@dataclass(frozen=True, order=True)
class SliceRef:
    """One slice: scan index, axis (0 z / 1 y / 2 x) and index along that axis."""

    scan: int
    axis: int
    index: int


def slices_of(scan_index: int, shape: Sequence[int], axes: Sequence[int]) -> list[SliceRef]:
    """Every slice of a scan along each of ``axes``."""
    return [SliceRef(scan_index, a, i) for a in axes for i in range(int(shape[a]))]


def evenly_spaced(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over 0..n-1 (all of them when count is 0 or >= n)."""
    if count <= 0 or count >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, count)})


def _read_plane(source, axis: int, index: int) -> np.ndarray:
    if axis == 0:
        return source.read_slab(index, index + 1)[0]
    return source.read_plane(axis, index)


class SliceReader:
    """Reads image stacks and label planes of the scans' lazy sources, with an LRU plane cache.

    ``images[i]``, ``labels[i]``: VolumeSources of scan i. ``cache_slices``: planes kept (0: none).
    """

    def __init__(self, images: Sequence, labels: Sequence, *, context: int, cache_slices: int = 64):
        self.images = list(images)
        self.labels = list(labels)
        self.context = context
        self.cache_slices = cache_slices
        self._cache: OrderedDict = OrderedDict()
        self.reads = 0

    def _plane(self, kind: int, scan: int, axis: int, index: int) -> np.ndarray:
        key = (kind, scan, axis, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        source = (self.images if kind == 0 else self.labels)[scan]
        plane = _read_plane(source, axis, index)
        self.reads += 1
        if self.cache_slices:
            self._cache[key] = plane
            while len(self._cache) > self.cache_slices:
                self._cache.popitem(last=False)
        return plane

    def image_stack(self, ref: SliceRef) -> np.ndarray:
        """(C, h, w) raw intensities: the 2.5D stack centred on ``ref`` (C = context)."""
        n = self.images[ref.scan].shape[ref.axis]
        idx = context_indices(ref.index, n, self.context)
        return np.stack([self._plane(0, ref.scan, ref.axis, int(i)) for i in idx])

    def label_plane(self, ref: SliceRef) -> np.ndarray:
        """(h, w) labels of ``ref``."""
        return self._plane(1, ref.scan, ref.axis, ref.index)


def _overlap(a: tuple[int, int], b: tuple[int, int], patch: int) -> float:
    dy = max(0, patch - abs(a[0] - b[0]))
    dx = max(0, patch - abs(a[1] - b[1]))
    return dy * dx / float(patch * patch)


def _centred(point: np.ndarray, h: int, w: int, patch: int) -> tuple[int, int]:
    y = int(np.clip(point[0] - patch // 2, 0, h - patch))
    x = int(np.clip(point[1] - patch // 2, 0, w - patch))
    return y, x


def crop_positions(height: int, width: int, patch: int, count: int, rng: np.random.Generator, *,
                   max_overlap: float = 0.3, foreground: np.ndarray | None = None,
                   foreground_crops: float = 0.0) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of ``count`` crops of a (height, width) slice.

    Each crop is uniformly placed, or (with probability ``foreground_crops``, when ``foreground``
    (k, 2) pixel coordinates are given) centred on a random foreground pixel. A crop is redrawn up
    to 50 times while it shares more than ``max_overlap`` of its area with an earlier crop of the
    slice; if no placement satisfies that (a small slice), the least overlapping one is kept.
    """
    chosen: list[tuple[int, int]] = []
    has_fg = foreground is not None and len(foreground) > 0
    for _ in range(count):
        best, best_overlap = None, 2.0
        for _ in range(MAX_TRIES):
            if has_fg and rng.random() < foreground_crops:
                pos = _centred(foreground[int(rng.integers(len(foreground)))], height, width, patch)
            else:
                pos = (int(rng.integers(0, height - patch + 1)), int(rng.integers(0, width - patch + 1)))
            worst = max((_overlap(pos, c, patch) for c in chosen), default=0.0)
            if worst < best_overlap:
                best, best_overlap = pos, worst
            if worst <= max_overlap:
                break
        chosen.append(best)  # type: ignore[arg-type]
    return chosen


def epoch_order(refs: Sequence[SliceRef], *, seed: int, epoch: int, count: int) -> list[SliceRef]:
    """The slices of one epoch: ``count`` slices from a seeded shuffle of ``refs`` (reshuffled and
    repeated as often as needed)."""
    out: list[SliceRef] = []
    rnd = 0
    while len(out) < count:
        order = np.random.default_rng([seed, 0xE90C, epoch, rnd]).permutation(len(refs))
        out.extend(refs[int(i)] for i in order[: count - len(out)])
        rnd += 1
    return out
