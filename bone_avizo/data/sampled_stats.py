"""Normalisation statistics from a sample of a scan's slices, read until the sample is precise enough.

Exact statistics read every voxel in a pass of their own before the prediction pass: the scan's I/O
twice. :func:`sampled_stats` reads whole slices in rounds. The first cuts the scan into at least
FIRST_SLICES strata of slices and reads one slice of each, at a position drawn from a fixed seed; each
following round halves the strata and reads one slice in each half that has none yet, doubling what has
been read (a nested stratified sample: a periodic pattern along z, such as odd and even slices that
differ, cannot line up with it as it can with a fixed stride). After each round the standard errors of
the sample's mean and standard deviation are estimated from the differences between neighbouring slices
read (a smooth trend along z, which the sample follows, hardly counts; the variation from slice to slice
does), with the finite-population correction; reading stops once SAFETY standard errors of each are
within TOLERANCE of it (relative). At strata of one slice every slice has been read and the statistics
are the exact ones.

The slices read depend on the scan alone (the positions on its shape, the rounds on its voxels), never on
its file format, chunks or machine: a scan in Avizo's memory, as a TIFF or as an HDF5 file gets the same
statistics, and so does every rank of a job and a resumed run. A chunked source (HDF5, Zarr) decodes each
chunk layer a sampled slice lies in once and counts all its slices: never more decoding than the exact pass.
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
FIRST_SLICES = 32  # slices read in the first round, or every slice of a smaller scan
SEED = 20261206  # positions of the slices read within their strata: the same on every machine


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


def first_stride(slices: int) -> int:
    """The strata of the first round: the largest power of two of slices that still makes FIRST_SLICES."""
    stride = 1
    while -(-slices // (stride * 2)) >= FIRST_SLICES:
        stride *= 2
    return stride


def sample_rounds(slices: int) -> Iterator[list[int]]:
    """The slices read after each round (sorted; each round's include the previous round's), from strata
    of :func:`first_stride` slices down to every slice; each round is drawn when it is asked for."""
    rng = np.random.default_rng(SEED)
    size = first_stride(slices)
    picks = {start: start + int(rng.integers(size)) for start in range(0, slices, size)}  # stratum -> slice
    yield sorted(z for z in picks.values() if z < slices)
    while size > 1:
        size //= 2
        halves = {}
        for start, z in picks.items():
            middle = start + size
            kept, empty = (start, middle) if z < middle else (middle, start)
            halves[kept], halves[empty] = z, empty + int(rng.integers(size))
        picks = halves
        yield sorted(z for z in picks.values() if z < slices)


def _relative_errors(parts: dict[int, StatsAccumulator], slices: int) -> tuple[float, float]:
    """Estimated relative standard errors of the mean and of the standard deviation of the slices read
    (``parts``: z -> its accumulator, a stratified sample of a scan of ``slices`` slices), from the
    successive differences of each slice's residuals (its linearised contribution to the error)."""
    sums = np.array([parts[z].sums() for z in sorted(parts)])  # (n, 3): count, sum, sum of squares
    count, total, squares = sums.sum(axis=0)
    n = len(sums)
    if n < 2 or count == 0:
        return np.inf, np.inf
    mean = total / count
    var = max(squares / count - mean * mean, 0.0)
    of_mean = sums[:, 1] - mean * sums[:, 0]  # sum of (x - mean) over each slice
    of_var = sums[:, 2] - 2 * mean * sums[:, 1] + (mean * mean - var) * sums[:, 0]  # sum of (x - mean)^2 - var

    def standard_error(residuals: np.ndarray) -> float:  # of sum(residuals) / count
        spread = np.sum(np.diff(residuals) ** 2) / (2 * (n - 1))
        return float(np.sqrt(max(1.0 - n / slices, 0.0) * spread * n)) / count

    error_mean = standard_error(of_mean) / abs(mean) if mean else np.inf
    error_std = standard_error(of_var) / (2 * var) if var else (0.0 if not of_var.any() else np.inf)
    return error_mean, error_std


def _precise_enough(parts: dict[int, StatsAccumulator], slices: int) -> bool:
    """Whether SAFETY estimated standard errors of the sample's mean and standard deviation are within
    TOLERANCE of each."""
    return all(SAFETY * error <= TOLERANCE for error in _relative_errors(parts, slices))


def sampled_stats(source, *, mask: str = StatsMask.POSITIVE, progress=None) -> tuple[NormStats, SampleReport]:
    """Statistics of ``source`` (any VolumeSource) over the voxels ``mask`` selects, from as few whole
    slices as pin them down (module docstring); ``progress`` advances by slices counted, up to the scan's.
    A chunked source (``read_depth`` > 1) decodes each chunk layer a sampled slice lies in once and counts
    all its slices, so a later round finds its slices counted: never more decoding than the exact pass."""
    nz = source.shape[0]
    counted: dict[int, StatsAccumulator] = {}  # every slice counted so far
    parts: dict[int, StatsAccumulator] = {}  # the sampled ones
    rounds = 0
    for level in sample_rounds(nz):
        for z, accumulator in _read_slices(source, [z for z in level if z not in counted], mask):
            counted[z] = accumulator
            if progress is not None:
                progress.advance(1)
        parts.update((z, counted[z]) for z in level)
        rounds += 1
        if len(parts) == nz or _precise_enough(parts, nz):
            break
    if progress is not None and len(counted) < nz:
        progress.advance(nz - len(counted))
    return StatsAccumulator.merged(parts.values()).result(), SampleReport(len(parts), nz, rounds)


LAYER_BYTES = 128 << 20  # the most of a chunk layer read at once (two in flight: the next is read ahead)


def _read_slices(source, slices: list[int], mask: str):
    """(z, accumulator of slice z) for each of ``slices`` (and, for a chunked source, every other slice of
    the chunk layers they lie in), in order: lent views summed by the I/O threads (slices of MOMENTS_PART
    voxels or more; smaller ones in this thread) where the source lends them, else read one slab ahead in
    a background thread."""
    lent = getattr(source, "view_slab", lambda *_: None)
    if slices and lent(slices[0], slices[0] + 1) is not None:
        def counted(z):
            return z, _accumulated(lent(z, z + 1), mask)
        if source.shape[1] * source.shape[2] < MOMENTS_PART:  # small slices: threads would wait on the
            yield from map(counted, slices)                     # GIL between short numpy calls
        else:
            yield from parallel_imap(counted, slices)
        return
    for (z0, _), slab in prefetched(lambda span: source.read_slab(*span), _slabs(source, slices)):
        for i in range(len(slab)):
            yield z0 + i, _accumulated(slab[i:i + 1], mask, split=True)


def _slabs(source, slices: list[int]) -> list[tuple[int, int]]:
    """The (z0, z1) reads that cover ``slices``: one slice each, or the chunk layers they lie in (in parts
    of at most LAYER_BYTES) for a source that decodes layers of ``read_depth`` slices."""
    nz = source.shape[0]
    depth = max(1, int(getattr(source, "read_depth", 1)))
    if depth == 1:
        return [(z, z + 1) for z in slices]
    part = max(1, min(depth, LAYER_BYTES // max(1, source.shape[1] * source.shape[2] * source.dtype.itemsize)))
    layers = sorted({z // depth for z in slices})
    return [(z0, min(z0 + part, (layer + 1) * depth, nz)) for layer in layers
            for z0 in range(layer * depth, min((layer + 1) * depth, nz), part)]


def _accumulated(slab: np.ndarray, mask: str, *, split: bool = False) -> StatsAccumulator:
    """An accumulator that has counted ``slab``; ``split``: the I/O threads may share the sums (not from
    inside one of them)."""
    accumulator = StatsAccumulator(mask)
    accumulator.add(slab, split=split)
    return accumulator
