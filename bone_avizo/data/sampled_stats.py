"""Normalisation statistics from a sample of a scan's slices, read until the sample is precise enough.

Exact statistics read every voxel in a pass of their own before the prediction pass: the scan's I/O
twice. :func:`sampled_stats` reads whole read units (the format's slices per read: a TIFF page, an
HDF5/Zarr chunk layer) in rounds. The first cuts the scan into at least FIRST_UNITS strata and reads one
unit of each, at a position drawn from a fixed seed; each following round halves the strata and reads
one unit in each half that has none yet, doubling what has been read (a nested stratified sample: a
periodic pattern along z, such as odd and even slices that differ, cannot line up with it as it can
with a fixed stride). After each round the standard errors of the sample's mean and standard deviation
are estimated from the differences between neighbouring units read (a smooth trend along z, which the
sample follows, hardly counts; the variation from unit to unit does), with the finite-population
correction; reading stops once SAFETY standard errors of each are within TOLERANCE of it (relative).
At strata of one unit every unit has been read and the statistics are the exact ones. The positions
depend only on the scan's shape and the rounds read only on its voxels: every machine, every rank of a
job and a resumed run get the same statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from bone_avizo.data.normalize import MOMENTS_PART, NormStats, StatsAccumulator, StatsMask
from bone_avizo.io.threads import parallel_imap
from bone_avizo.streams import prefetched

TOLERANCE = 1e-3  # relative error allowed in the mean and in the standard deviation
SAFETY = 3.0  # standard errors that must fit within the tolerance
FIRST_UNITS = 32  # units read in the first round, or every unit of a smaller scan
SEED = 20261206  # positions of the units read within their strata: the same on every machine


@dataclass(frozen=True)
class SampleReport:
    """How the statistics were taken: slices read of the scan's, and rounds of reading."""

    slices_read: int
    slices: int
    rounds: int

    @property
    def exact(self) -> bool:
        return self.slices_read == self.slices

    def describe(self) -> str:
        if self.exact:  # a sample was asked for and could not serve
            return ("exact (every slice: no smaller sample pinned the statistics to 0.1 %)" if self.rounds > 1
                    else "exact (every slice: too few to sample)")
        rounds = f"{self.rounds} round{'s' if self.rounds > 1 else ''}"
        return f"sampled ({self.slices_read} of {self.slices} slices, {rounds})"


def first_stride(units: int) -> int:
    """The stride of the first round: the largest power of two that still reads FIRST_UNITS units."""
    stride = 1
    while -(-units // (stride * 2)) >= FIRST_UNITS:
        stride *= 2
    return stride


def sample_rounds(units: int) -> Iterator[list[int]]:
    """The units read after each round (sorted; each round's include the previous round's), from strata
    of :func:`first_stride` units down to every unit; each round is drawn when it is asked for."""
    rng = np.random.default_rng(SEED)
    size = first_stride(units)
    picks = {start: start + int(rng.integers(size)) for start in range(0, units, size)}  # stratum -> unit
    yield sorted(u for u in picks.values() if u < units)
    while size > 1:
        size //= 2
        halves = {}
        for start, unit in picks.items():
            middle = start + size
            kept, empty = (start, middle) if unit < middle else (middle, start)
            halves[kept], halves[empty] = unit, empty + int(rng.integers(size))
        picks = halves
        yield sorted(u for u in picks.values() if u < units)


def _relative_errors(parts: dict[int, StatsAccumulator], units: int) -> tuple[float, float]:
    """Estimated relative standard errors of the mean and of the standard deviation of the units read
    (``parts``: unit index -> its accumulator, a stratified sample of ``units`` units), from the
    successive differences of each unit's residuals (its linearised contribution to the error)."""
    sums = np.array([parts[u].sums() for u in sorted(parts)])  # (n, 3): count, sum, sum of squares
    count, total, squares = sums.sum(axis=0)
    n = len(sums)
    if n < 2 or count == 0:
        return np.inf, np.inf
    mean = total / count
    var = max(squares / count - mean * mean, 0.0)
    of_mean = sums[:, 1] - mean * sums[:, 0]  # sum of (x - mean) over each unit
    of_var = sums[:, 2] - 2 * mean * sums[:, 1] + (mean * mean - var) * sums[:, 0]  # sum of (x - mean)^2 - var

    def standard_error(residuals: np.ndarray) -> float:  # of sum(residuals) / count
        spread = np.sum(np.diff(residuals) ** 2) / (2 * (n - 1))
        return float(np.sqrt(max(1.0 - n / units, 0.0) * spread * n)) / count

    error_mean = standard_error(of_mean) / abs(mean) if mean else np.inf
    error_std = standard_error(of_var) / (2 * var) if var else (0.0 if not of_var.any() else np.inf)
    return error_mean, error_std


def _precise_enough(parts: dict[int, StatsAccumulator], units: int) -> bool:
    """Whether SAFETY estimated standard errors of the sample's mean and standard deviation are within
    TOLERANCE of each."""
    return all(SAFETY * error <= TOLERANCE for error in _relative_errors(parts, units))


def sampled_stats(source, *, mask: str = StatsMask.POSITIVE, progress=None,
                  slab_slices: int | None = None) -> tuple[NormStats, SampleReport]:
    """Statistics of ``source`` (any VolumeSource) over the voxels ``mask`` selects, from as few whole
    read units as pin them down (module docstring); ``progress`` advances by slices up to the scan's;
    ``slab_slices``: the most slices read at once (a deep unit is read in parts), default a whole unit."""
    nz = source.shape[0]
    depth = max(1, int(getattr(source, "read_depth", 1)))
    slab = max(1, min(slab_slices or depth, depth))
    units = -(-nz // depth)
    parts: dict[int, StatsAccumulator] = {}
    rounds = advanced = 0  # advanced: progress steps given so far
    for level in sample_rounds(units):
        new = [u for u in level if u not in parts]
        for unit, accumulator in _read_units(source, new, depth, mask, slab):
            parts[unit] = accumulator
            if progress is not None:
                steps = min((unit + 1) * depth, nz) - unit * depth
                progress.advance(steps)
                advanced += steps
        rounds += 1
        if len(parts) == units or _precise_enough(parts, units):
            break
    if progress is not None and advanced < nz:
        progress.advance(nz - advanced)
    report = SampleReport(sum(min((u + 1) * depth, nz) - u * depth for u in parts), nz, rounds)
    stats = StatsAccumulator.merged(parts.values()).result()
    return stats, report


def _read_units(source, units: list[int], depth: int, mask: str, slab: int):
    """(unit, accumulator of its voxels) for each unit, in order: lent views summed by the I/O threads
    (units of MOMENTS_PART voxels or more; smaller ones in this thread) where the source lends them,
    else read in parts of at most ``slab`` slices, one part ahead in a background thread."""
    nz = source.shape[0]
    spans = [(u, u * depth, min((u + 1) * depth, nz)) for u in units]
    lent = getattr(source, "view_slab", lambda *_: None)
    if spans and lent(spans[0][1], spans[0][1] + 1) is not None:
        def counted(span):
            return span[0], _accumulated(lent(span[1], span[2]), mask)
        if depth * source.shape[1] * source.shape[2] < MOMENTS_PART:  # small units: threads would wait on
            yield from map(counted, spans)                              # the GIL between short numpy calls
        else:
            yield from parallel_imap(counted, spans)
        return
    parts = [(u, z0, min(z0 + slab, end)) for u, start, end in spans for z0 in range(start, end, slab)]
    current, accumulator = None, None
    for (unit, _, _), voxels in prefetched(lambda part: source.read_slab(part[1], part[2]), parts):
        if unit != current:
            if accumulator is not None:
                yield current, accumulator
            current, accumulator = unit, StatsAccumulator(mask)
        accumulator.add(voxels)
    if accumulator is not None:
        yield current, accumulator


def _accumulated(slab: np.ndarray, mask: str) -> StatsAccumulator:
    """An accumulator that has counted ``slab`` in this thread (one of the I/O threads)."""
    accumulator = StatsAccumulator(mask)
    accumulator.add(slab, split=False)
    return accumulator
