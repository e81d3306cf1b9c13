"""Per-scan intensity normalisation, streamed.

z-score: (x - mean) / std, clipped to [-5, 5]; min-max: (x - min) / (max - min), clipped to
[0, 1]. Statistics come from the voxels of one scan that :class:`StatsMask` selects, gathered slab
by slab: BONe's rule is voxels > 0 (zero is "outside the scan", e.g. the corners of a reconstructed
cylinder), which on signed data (CT in Hounsfield units: air, fat and water are <= 0) throws away
most of the tissue; "nonzero" keeps them and is the same as "> 0" for unsigned scans.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from bone_avizo._compat import StrEnum

import numpy as np
import torch

from bone_avizo import kernels
from bone_avizo._memory import BufferPool
from bone_avizo.errors import InvalidVolumeError
from bone_avizo.io.threads import io_threads, parallel_map
from bone_avizo.streams import prefetched

log = logging.getLogger(__name__)

Z_CLIP = 5.0


class Normalization(StrEnum):
    ZSCORE = "zscore"
    MINMAX = "minmax"


class StatsMask(StrEnum):
    """Which voxels the statistics are taken over (the rest is padding)."""

    POSITIVE = "positive"  # voxels > 0: BONe's rule, and that of every model without a recorded rule
    NONZERO = "nonzero"    # voxels != 0: the same as > 0 for unsigned scans; keeps negative values
    ALL = "all"            # every voxel


MASK_WORDS = {StatsMask.POSITIVE: "voxels > 0", StatsMask.NONZERO: "voxels != 0", StatsMask.ALL: "all voxels"}


@dataclass(frozen=True)
class NormStats:
    """Intensity statistics of one scan over voxels > 0."""

    mean: float
    std: float
    minimum: float
    maximum: float
    count: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.minimum, "max": self.maximum,
                "count": self.count}


MOMENTS_PART = 1 << 20  # voxels: a slab is summed in parts of at least this size, one per I/O thread
LENT_SLAB_VOXELS = 1 << 26  # voxels per slab of a source that lends views (no copy: only calls to save)
MOMENTS_RUN = 1 << 19  # voxels per step (a few large numpy calls: small ones contend for the GIL in 2 threads)


@dataclass(frozen=True)
class _Moments:
    """Exact integer count, sum, sum of squares, minimum and maximum of selected voxels."""

    count: int = 0
    total: int = 0
    squares: int = 0
    minimum: int | None = None
    maximum: int | None = None

    def __add__(self, other: "_Moments") -> "_Moments":
        if not other.count:
            return self
        if not self.count:
            return other
        return _Moments(self.count + other.count, self.total + other.total, self.squares + other.squares,
                        min(self.minimum, other.minimum), max(self.maximum, other.maximum))


# the moments' uint32 scratch arrays, two per thread at work, reused: fresh ones (mapped afresh under
# the fixed mmap threshold) had every page faulted in and zeroed, which doubled the statistics pass
_SCRATCH = BufferPool(keep=64)
SUM_ROW = 1 << 16  # uint32 values < 2**16 summed per row: each row's sum fits in uint32


def _exact_sum(values: np.ndarray) -> int:
    """The exact sum of 1-D uint32 ``values`` < 2**16, in uint32 rows of SUM_ROW and one numpy call."""
    rows = values.size // SUM_ROW
    head = int(values[:rows * SUM_ROW].reshape(rows, SUM_ROW).sum(axis=1, dtype=np.uint32).sum(dtype=np.uint64))
    return head + int(values[rows * SUM_ROW:].sum(dtype=np.uint32))


def _unsigned_moments(flat: np.ndarray, *, skip_zeros: bool) -> _Moments:
    """Moments of a flat uint8/uint16 array (of its non-zero voxels when ``skip_zeros``), in runs, all in
    uint32 arithmetic that numpy vectorises (no casting reduction: a uint64 sum of uint16 voxels took 5x
    as long as a uint32 one): each square x*x < 2**32 is split into its high and low 16 bits, whose sums
    over rows of 2**16 voxels fit in uint32, and sum of squares = 65536 * high + low, exactly.
    No histogram (numpy's bincount widens every voxel to 8 bytes first) and no BLAS dot product (whose own
    threads, run from the I/O threads next to the reader and the network, tripled the statistics pass).
    Where numba is usable, one pass of :func:`bone_avizo.kernels.unsigned_moments` gives the same numbers."""
    found = kernels.unsigned_moments(flat, skip_zeros=skip_zeros)
    if found is not None:
        return _Moments(*found) if found[0] else _Moments()
    result = _Moments()
    wide, part = _SCRATCH.take((MOMENTS_RUN,), np.uint32), _SCRATCH.take((MOMENTS_RUN,), np.uint32)
    try:
        for i in range(0, flat.size, MOMENTS_RUN):
            result += _run_moments(flat[i:i + MOMENTS_RUN], wide, part, skip_zeros=skip_zeros)
    finally:
        _SCRATCH.give(wide)
        _SCRATCH.give(part)
    return result


def _run_moments(run: np.ndarray, wide: np.ndarray, part: np.ndarray, *, skip_zeros: bool) -> _Moments:
    """:func:`_unsigned_moments` of one run of at most MOMENTS_RUN voxels, with two uint32 scratch arrays."""
    count = int(np.count_nonzero(run)) if skip_zeros else run.size
    if not count:
        return _Moments()
    values, scratch = wide[:run.size], part[:run.size]
    np.copyto(values, run)
    total = _exact_sum(values)
    low = int(run.min())
    if low == 0 and skip_zeros:  # the smallest non-zero voxel: x - 1 wraps 0 round to the largest value
        low = int(np.subtract(values, np.uint32(1), out=scratch).min()) + 1
    squares = np.multiply(values, values, out=values)
    high_sum = _exact_sum(np.right_shift(squares, 16, out=scratch))
    low_sum = _exact_sum(np.bitwise_and(squares, np.uint32(0xFFFF), out=squares))
    return _Moments(count, total, (high_sum << 16) + low_sum, low, int(run.max()))


def parallel_moments(slab: np.ndarray, *, skip_zeros: bool, reader_busy: bool = True) -> _Moments:
    """:func:`_unsigned_moments` of a slab, in parts summed by the I/O threads (exact: the parts add up);
    while ``reader_busy``, all but one, which is left to the reader reading the next slab; all of them
    for slabs lent by the source, which nothing reads meanwhile (64 x 1024^2 uint16 in the engine on
    2 cores: 0.040-0.047 s, against 0.055 s in one thread)."""
    flat = slab.reshape(-1)
    parts = min(io_threads() - int(reader_busy), flat.size // MOMENTS_PART)
    if parts < 2:
        return _unsigned_moments(flat, skip_zeros=skip_zeros)
    bounds = np.linspace(0, flat.size, parts + 1).astype(np.int64)
    found = parallel_map(lambda ends: _unsigned_moments(flat[ends[0]:ends[1]], skip_zeros=skip_zeros),
                         zip(bounds[:-1], bounds[1:]))
    return sum(found, _Moments())


class StatsAccumulator:
    """Accumulates sum, sum of squares, min and max of the voxels ``mask`` selects (default: > 0)
    over slabs (exact integer sums for uint8/uint16 data, float64 otherwise)."""

    def __init__(self, mask: str = StatsMask.POSITIVE):
        self.mask = StatsMask(mask)
        self.seen = 0
        self.signed = False
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.minimum = np.inf
        self.maximum = -np.inf
        self._exact = _Moments()

    def add(self, slab: np.ndarray, *, reader_busy: bool = True, split: bool = True) -> None:
        """Count ``slab`` in; ``reader_busy``: a reader thread reads the next slab meanwhile; ``split``:
        the I/O threads may share the sums (False from inside one of them)."""
        self.seen += slab.size
        self.signed = self.signed or slab.dtype.kind in "if"
        if slab.dtype in (np.uint8, np.uint16):  # unsigned: > 0 and != 0 are the same
            skip_zeros = self.mask != StatsMask.ALL
            self._exact += (parallel_moments(slab, skip_zeros=skip_zeros, reader_busy=reader_busy) if split
                            else _unsigned_moments(slab.reshape(-1), skip_zeros=skip_zeros))
            return
        selected = {StatsMask.POSITIVE: lambda: slab[slab > 0], StatsMask.NONZERO: lambda: slab[slab != 0],
                    StatsMask.ALL: lambda: slab.reshape(-1)}[self.mask]()
        values = selected.astype(np.float64)
        if values.size:
            self.count += values.size
            self.total += float(values.sum())
            self.total_sq += float(np.square(values).sum())
            self.minimum = min(self.minimum, float(values.min()))
            self.maximum = max(self.maximum, float(values.max()))

    @classmethod
    def merged(cls, parts) -> "StatsAccumulator":
        """One accumulator holding what all ``parts`` (accumulators of one mask) counted."""
        parts = list(parts)
        out = cls(parts[0].mask if parts else StatsMask.POSITIVE)
        for part in parts:
            out.seen += part.seen
            out.signed = out.signed or part.signed
            out.count += part.count
            out.total += part.total
            out.total_sq += part.total_sq
            out.minimum = min(out.minimum, part.minimum)
            out.maximum = max(out.maximum, part.maximum)
            out._exact += part._exact
        return out

    def sums(self) -> tuple[float, float, float]:
        """(count, sum, sum of squares) of the selected voxels counted so far."""
        exact = self._exact
        return (float(self.count + exact.count), self.total + float(exact.total),
                self.total_sq + float(exact.squares))

    def estimate(self) -> NormStats | None:
        """The statistics of what was counted so far (None while nothing is selected); changes nothing."""
        exact = self._exact
        count = self.count + exact.count
        if not count:
            return None
        _, total, total_sq = self.sums()
        minimum, maximum = self.minimum, self.maximum
        if exact.count:
            minimum, maximum = min(minimum, float(exact.minimum)), max(maximum, float(exact.maximum))
        mean = total / count
        var = max(total_sq / count - mean * mean, 0.0)
        return NormStats(mean, float(np.sqrt(var)), float(minimum), float(maximum), count)

    def result(self) -> NormStats:
        stats = self.estimate()
        if stats is None:
            raise InvalidVolumeError(f"the scan has no {MASK_WORDS[self.mask]}, so it cannot be normalised; "
                                     "check that the right volume was given")
        if self.mask == StatsMask.POSITIVE and self.signed and stats.count < self.seen / 2:
            log.warning("only %.0f%% of the voxels of this signed scan are > 0, and the model's normalisation "
                        "takes its statistics over voxels > 0 only (BONe's rule): air, fat and water of CT in "
                        "Hounsfield units count as padding; train with --normalization-mask nonzero for such "
                        "data", 100 * stats.count / self.seen)
        return stats


def scan_stats(source, *, slab_slices: int = 32, progress=None, mask: str = StatsMask.POSITIVE) -> NormStats:
    """Statistics over the voxels ``mask`` selects (default > 0) of a whole source (any VolumeSource),
    read slab by slab (``slab_slices``; slabs of at least LENT_SLAB_VOXELS from a source that lends views)."""
    acc = StatsAccumulator(mask)
    nz = source.shape[0]
    lent = getattr(source, "view_slab", lambda *_: None)
    lends = bool(nz) and lent(0, 1) is not None  # voxels in memory or mapped: nothing to read ahead
    if lends:  # a view costs no memory: fewer, larger slabs (3-slice slabs of 64 x 1024^2: 10-12 ms, not 6.5)
        slab_slices = max(slab_slices, LENT_SLAB_VOXELS // max(1, int(np.prod(source.shape[1:]))))
    slabs = [(z0, min(z0 + slab_slices, nz)) for z0 in range(0, nz, slab_slices)]
    pairs = ((zs, lent(*zs)) for zs in slabs) if lends else prefetched(lambda zs: source.read_slab(*zs), slabs)
    for (z0, z1), slab in pairs:
        acc.add(slab, reader_busy=not lends)
        if progress is not None:
            progress.advance(z1 - z0)
    return acc.result()


def normalize(data: np.ndarray | torch.Tensor, stats: NormStats, mode: str) -> torch.Tensor:
    """Normalised float32 tensor of the same shape as ``data`` (any layout)."""
    offset, scale, low, high = affine(stats, mode)
    return torch.as_tensor(data).to(torch.float32).sub_(offset).mul_(scale).clamp_(low, high)


def affine(stats: NormStats, mode: str) -> tuple[float, float, float, float]:
    """(offset, scale, low, high): normalised = clip((x - offset) * scale, low, high)."""
    if Normalization(mode) == Normalization.ZSCORE:
        return stats.mean, 1.0 / stats.std if stats.std > 0 else 1.0, -Z_CLIP, Z_CLIP
    span = stats.maximum - stats.minimum
    return stats.minimum, 1.0 / span if span > 0 else 1.0, 0.0, 1.0


LOOKUP_DTYPES = {np.dtype(np.uint8): np.uint8, np.dtype(np.int8): np.uint8,
                 np.dtype(np.uint16): np.uint16, np.dtype(np.int16): np.uint16}


def lookup_table(stats: NormStats, mode: str, dtype) -> np.ndarray | None:
    """The normalised value of every possible voxel value of an 8/16-bit integer ``dtype`` as a float32
    table indexed by the voxels' unsigned bit pattern (``raw.view(index_dtype(dtype))``); None for other
    dtypes. ``table[raw]`` equals ``normalize(raw)`` exactly (the same float32 operations, done once per
    value instead of once per voxel)."""
    dtype = np.dtype(dtype)
    if dtype not in LOOKUP_DTYPES:
        return None
    patterns = np.arange(np.iinfo(LOOKUP_DTYPES[dtype]).max + 1, dtype=LOOKUP_DTYPES[dtype])
    return normalize(patterns.view(dtype), stats, mode).numpy()


def index_dtype(dtype) -> type | None:
    """The unsigned dtype whose values index :func:`lookup_table` for ``dtype`` (None: no table)."""
    return LOOKUP_DTYPES.get(np.dtype(dtype))
