"""Streaming confusion matrices of two label volumes, slab by slab, slice by slice.

A confusion matrix ``cm`` is an (n, n) int64 array: ``cm[r, p]`` counts the voxels whose
reference label is ``r`` and predicted label is ``p`` (rows = reference, columns = prediction).
Per-slice matrices are a (z, n, n) int64 array, one matrix per slice along z.

Volumes are (z, y, x). Voxels outside the region of interest (``roi == 0``) and voxels whose
reference label is the ignore label are left out of every count. Labels may be any integer or
bool dtype, or floats that hold whole numbers; they must be 0..n-1 where they are counted.

Speed: groups of slices run in parallel threads. Each is validated, cast to uint8, encoded as one
combined code ``ref * n + pred`` (uint8 when n*n+1 <= 256) in a cache-sized buffer (numpy ufuncs
release the GIL) and counted. ``np.bincount`` holds the GIL, so several codes are packed into each
counted element (4 for n <= 3, 2 for n <= 15; see :class:`CountPlan`) to keep that part short.
``torch.bincount`` releases the GIL but was not used: importing torch costs ~0.6 GB of resident
memory, its parallel min/max reductions leave OpenMP threads spinning that slow the other threads
on a small machine, and its histogram is slow on long runs of one value (see docs/iou.md).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from bone_avizo.errors import InvalidVolumeError, LabelError, ShapeMismatchError, UnsupportedDtypeError
from bone_avizo.io.base import ArraySource, VolumeSource
from bone_avizo.labels import DEFAULT_MAX_CLASSES, not_a_label_volume
from bone_avizo.progress import ProgressCallback, ProgressTracker
from bone_avizo.volume import Volume, VolumeInfo

log = logging.getLogger(__name__)

GROUP_VOXELS = 1 << 20        # voxels per counting task (one task = whole slices, at least one)
SMALL_SLICE = 1 << 14         # slices smaller than this are counted all at once with offsets
PER_SLICE_MAX_BYTES = 1 << 30

VolumeLike = VolumeSource | Volume | np.ndarray


class ViewSource(ArraySource):
    """A source over an in-memory array whose slabs are views, not copies (read them, never write)."""

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return self.array[z0:z1]


def as_source(data: VolumeLike, role: str) -> VolumeSource:
    """``data`` as a VolumeSource: sources pass through, arrays and Volumes are wrapped without a copy."""
    if isinstance(data, VolumeSource):
        source = data
    elif isinstance(data, Volume):
        source = ViewSource(data)
    elif isinstance(data, np.ndarray):
        if data.ndim != 3 or 0 in data.shape:
            raise InvalidVolumeError(f"{role} must be a non-empty 3-D (z, y, x) array, got shape {data.shape}")
        source = ViewSource(data, VolumeInfo(data.shape, data.dtype, name=role))
    else:
        raise InvalidVolumeError(f"{role} must be a volume source, a Volume or a numpy array, "
                                 f"got {type(data).__name__}")
    if source.dtype.kind not in "biuf":
        raise UnsupportedDtypeError(f"{role} has dtype {source.dtype}; a label volume must hold integers "
                                    "(or floats with whole-number values)")
    return source


def check_same_shape(sources: dict[str, VolumeSource]) -> tuple[int, int, int]:
    """The common shape of the sources; ShapeMismatchError naming both shapes otherwise."""
    (first, src), *others = sources.items()
    for role, other in others:
        if other.shape != src.shape:
            raise ShapeMismatchError(f"{role} has shape {other.shape} (z, y, x) but {first} has shape "
                                     f"{src.shape}; both must cover the same voxels (crop or resample one)")
    return src.shape


# ---------------------------------------------------------------------------------------------
# label checks
def _first_voxel(mask: np.ndarray, origin: tuple[int, int]) -> str:
    z, y, x = (int(v) for v in np.argwhere(mask)[0])
    return f"z={z + origin[0]}, y={y + origin[1]}, x={x}"


def _excluded_mask(ref: np.ndarray, ignore_label: int, roi: np.ndarray | None) -> np.ndarray | None:
    """Bool mask (k, y, x) of the voxels left out of the counts, or None when all count."""
    excluded = None
    if ignore_label >= 0:
        excluded = ref == ignore_label
    if roi is not None:
        outside = roi == 0
        excluded = outside if excluded is None else (excluded | outside)
    return excluded


def _check_labels(labels: np.ndarray, role: str, *, num_classes: int, excluded: np.ndarray | None,
                 origin: tuple[int, int] = (0, 0), max_classes: int = DEFAULT_MAX_CLASSES) -> int:
    """Check the counted labels of (k, y, x) ``labels``; return the classes they need (max + 1).

    ``num_classes`` 0 means "inferred": then at most ``max_classes`` classes (more suggest a grey-value
    scan). Raises LabelError with the offending value and voxel for negative, non-integral or too large
    labels.
    """
    if labels.dtype.kind == "b":
        return 2 if labels.any() else 1
    bound = num_classes or max_classes
    lo, hi = (0 if labels.dtype.kind == "u" else labels.min()), labels.max()
    integral = labels.dtype.kind != "f" or bool(np.all(labels == np.rint(labels)))
    if lo >= 0 and hi < bound and integral:
        return int(hi) + 1
    counted = np.ones(labels.shape, bool) if excluded is None else ~excluded
    if not counted.any():
        return 1
    if not integral:
        bad = counted & (labels != np.rint(labels))
        if bad.any():
            raise LabelError(f"{role} holds non-integer values (e.g. {labels[bad][0]} at "
                             f"{_first_voxel(bad, origin)}); a label volume holds whole numbers 0..N-1: "
                             "threshold or argmax the probabilities first")
    values = labels[counted]
    lo, hi = values.min(), values.max()
    if lo < 0:
        where = _first_voxel(counted & (labels == lo), origin)
        raise LabelError(f"{role} holds the negative label {lo:g} (at {where}); labels must be 0..N-1: relabel, "
                         "or mark unknown voxels with a non-negative --ignore-label")
    if hi >= bound:
        where = _first_voxel(counted & (labels == hi), origin)
        found = f"{role} holds labels up to {hi:g} (the largest, first at {where})"
        if num_classes:
            raise LabelError(f"{found} but num_classes is {num_classes} (labels 0..{num_classes - 1}); "
                             f"set --num-classes {int(hi) + 1} or fix the labels")
        raise not_a_label_volume(role, dtype=labels.dtype, distinct=np.unique(values).size, largest=hi,
                                 limit=max_classes, at_least=True, where=where)
    return int(hi) + 1


def _as_uint8(labels: np.ndarray) -> np.ndarray:
    """Checked labels as uint8 (values outside 0..255 only occur at excluded voxels, where they wrap)."""
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype.kind == "b":
        return labels.view(np.uint8)
    if labels.dtype.kind == "f":
        labels = np.nan_to_num(labels, nan=0.0, posinf=0.0, neginf=0.0)
    return labels.astype(np.uint8, casting="unsafe")


# ---------------------------------------------------------------------------------------------
# counting
@dataclass(frozen=True)
class CountPlan:
    """How the codes of one slice are counted: ``bins`` = n*n + 1 (the last code collects excluded
    voxels); ``pack`` codes per histogram element: 4 (codes < 16: two 4-bit codes per byte, two
    bytes per uint16), 2 (two uint8 codes per uint16) or 1."""

    bins: int
    dtype: type
    pack: int = 1


def count_plan(n: int, slice_voxels: int) -> CountPlan:
    """The counting plan for n classes and slices of ``slice_voxels`` voxels."""
    bins = n * n + 1
    dtype = np.uint8 if bins <= 256 else (np.int16 if bins <= 32767 else np.int32)
    if slice_voxels < SMALL_SLICE or dtype is not np.uint8:
        return CountPlan(bins, dtype)
    return CountPlan(bins, dtype, pack=4 if bins <= 16 else 2)


def _fold_bytes(hist: np.ndarray, width: int) -> np.ndarray:
    """Counts of each byte value of a histogram of uint16 values (low byte + 256 * high byte)."""
    both = np.zeros(256 * 256, np.int64)
    both[:hist.size] = hist
    both = both.reshape(256, 256)
    return (both.sum(0) + both.sum(1))[:width]


def _bincount_row(row: np.ndarray, plan: CountPlan) -> np.ndarray:
    """Counts of the codes 0..bins-1 in the 1-D array ``row`` (int64, length bins)."""
    if plan.pack == 4:  # byte j holds the codes j and j + m/2 (4 bits each)
        half = row.size // 2
        packed = np.multiply(row[half:], np.uint8(16))  # (a shift is not vectorised for uint8)
        np.add(packed, row[:half], out=packed)
        nibbles = _fold_bytes(np.bincount(packed.view(np.uint16)), 256).reshape(16, 16)
        return (nibbles.sum(0) + nibbles.sum(1))[:plan.bins]
    if plan.pack == 2:
        return _fold_bytes(np.bincount(row.view(np.uint16)), plan.bins)
    return np.bincount(row, minlength=plan.bins)[:plan.bins]


def _bincount_rows(codes: np.ndarray, plan: CountPlan) -> np.ndarray:
    """Row-wise counts of (k, m) ``codes``: a (k, bins) int64 array."""
    k, m = codes.shape
    if m < SMALL_SLICE:
        offsets = (np.arange(k, dtype=np.intp) * plan.bins)[:, None]
        flat = (codes.astype(np.intp) + offsets).ravel()
        return np.bincount(flat, minlength=k * plan.bins).reshape(k, plan.bins)
    return np.stack([_bincount_row(codes[i], plan) for i in range(k)])


def _encode(pred8: np.ndarray, ref8: np.ndarray, n: int, excluded: np.ndarray | None,
            plan: CountPlan) -> np.ndarray:
    """(k, m') codes ``ref * n + pred``; excluded voxels and the padding of each row to a multiple
    of ``pack`` get the code n*n."""
    k = ref8.shape[0]
    m = ref8[0].size
    dtype = plan.dtype
    codes = np.empty((k, -(-m // plan.pack) * plan.pack), dtype)
    view = codes[:, :m]
    np.multiply(ref8.reshape(k, m), dtype(n), out=view, dtype=dtype)
    np.add(view, pred8.reshape(k, m), out=view, dtype=dtype)
    if excluded is not None:
        np.copyto(view, dtype(plan.bins - 1), where=excluded.reshape(k, m))
    codes[:, m:] = plan.bins - 1
    return codes


def count_slices(pred: np.ndarray, ref: np.ndarray, *, num_classes: int = 0, ignore_label: int = -1,
                 roi: np.ndarray | None = None, origin: tuple[int, int] = (0, 0),
                 max_classes: int = DEFAULT_MAX_CLASSES) -> np.ndarray:
    """Per-slice confusion matrices of (k, y, x) label arrays: a (k, n, n) int64 array.

    ``n`` is ``num_classes``, or (when 0) the largest counted label + 1 (at most ``max_classes``).
    ``origin`` only locates errors.
    """
    excluded = _excluded_mask(ref, ignore_label, roi)
    check = dict(num_classes=num_classes, excluded=excluded, origin=origin, max_classes=max_classes)
    needed = max(_check_labels(ref, "reference", **check), _check_labels(pred, "prediction", **check))
    n = num_classes or needed
    plan = count_plan(n, ref[0].size)
    codes = _encode(_as_uint8(pred), _as_uint8(ref), n, excluded, plan)
    return _bincount_rows(codes, plan)[:, :n * n].reshape(ref.shape[0], n, n)


class ConfusionAccumulator:
    """Sums per-slice confusion matrices of a volume of ``depth`` slices; grows n when inferred."""

    def __init__(self, depth: int, num_classes: int, *, keep_slices: bool):
        self.depth = depth
        self.n = max(num_classes, 1)
        self.keep_slices = keep_slices
        if keep_slices:
            self._check_size(self.n)
        self.per_slice = np.zeros((depth, self.n, self.n), np.int64) if keep_slices else None
        self.total = np.zeros((self.n, self.n), np.int64)

    def _check_size(self, n: int) -> None:
        need = self.depth * n * n * 8
        if need > PER_SLICE_MAX_BYTES:
            raise InvalidVolumeError(f"per-slice confusion matrices of {self.depth} slices x {n}^2 classes would "
                                     f"need {need / 2**30:.1f} GiB; use --no-per-slice")

    def grow(self, n: int) -> None:
        """Pad the matrices to n classes."""
        pad = n - self.n
        self.total = np.pad(self.total, ((0, pad), (0, pad)))
        if self.per_slice is not None:
            self._check_size(n)
            self.per_slice = np.pad(self.per_slice, ((0, 0), (0, pad), (0, pad)))
        self.n = n

    def add(self, z0: int, counts: np.ndarray) -> None:
        """Add (k, m, m) counts of slices z0..z0+k-1 (m <= n, or n grows to m)."""
        m = counts.shape[1]
        if m > self.n:
            self.grow(m)
        self.total[:m, :m] += counts.sum(0)
        if self.per_slice is not None:
            self.per_slice[z0:z0 + counts.shape[0], :m, :m] += counts


# ---------------------------------------------------------------------------------------------
# streaming driver
def slab_size(sources: list[VolumeSource], *, slab_slices: int, memory_limit_gb: float) -> int:
    """Slices per slab: ``slab_slices`` or fewer, so that two slabs of all sources fit the budget."""
    bytes_per_slice = sum(s.shape[1] * s.shape[2] * s.dtype.itemsize for s in sources)
    fit = int(memory_limit_gb * 2**30 // (2 * bytes_per_slice))
    if fit < slab_slices:
        log.debug("slab of %d slices instead of %d to stay within %.2f GB", max(fit, 1), slab_slices,
                  memory_limit_gb)
    return max(1, min(slab_slices, fit))


def _tasks(k: int, ny: int, nx: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Counting tasks of about GROUP_VOXELS voxels over a slab of k slices: (z0, z1, y0, y1, slices
    completed). Small slices are grouped; large slices are cut into bands of rows."""
    if ny * nx <= GROUP_VOXELS:
        step = GROUP_VOXELS // (ny * nx)
        for a in range(0, k, step):
            yield a, min(a + step, k), 0, ny, min(a + step, k) - a
        return
    rows = max(1, GROUP_VOXELS // nx)
    for a in range(k):
        for y0 in range(0, ny, rows):
            yield a, a + 1, y0, min(y0 + rows, ny), int(y0 + rows >= ny)


def resolve_threads(threads: int) -> int:
    """Worker threads: ``threads``, or (0) the CPUs this process may use."""
    if threads:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def stream_confusion(pred: VolumeSource, ref: VolumeSource, *, num_classes: int, ignore_label: int,
                     roi: VolumeSource | None, slab_slices: int, memory_limit_gb: float, threads: int,
                     keep_slices: bool, progress: ProgressCallback | None = None,
                     max_classes: int = DEFAULT_MAX_CLASSES) -> ConfusionAccumulator:
    """Count every slab of the two sources (and ROI); the next slab is read while one is counted."""
    sources = [s for s in (pred, ref, roi) if s is not None]
    depth, ny, nx = ref.shape
    step = slab_size(sources, slab_slices=slab_slices, memory_limit_gb=memory_limit_gb)
    acc = ConfusionAccumulator(depth, num_classes, keep_slices=keep_slices)
    tracker = ProgressTracker(depth, "IoU: counting slices", progress)
    pool = ThreadPoolExecutor(resolve_threads(threads), thread_name_prefix="iou")
    pending: list[tuple[int, int, Future]] = []
    try:
        for z0 in range(0, depth, step):
            z1 = min(z0 + step, depth)
            p, r = pred.read_slab(z0, z1), ref.read_slab(z0, z1)
            m = roi.read_slab(z0, z1) if roi is not None else None
            _collect(pending, acc, tracker)
            pending = [(z0 + a, done, pool.submit(count_slices, p[a:b, y0:y1], r[a:b, y0:y1],
                                                  num_classes=num_classes, ignore_label=ignore_label,
                                                  roi=None if m is None else m[a:b, y0:y1], origin=(z0 + a, y0),
                                                  max_classes=max_classes))
                       for a, b, y0, y1, done in _tasks(z1 - z0, ny, nx)]
        _collect(pending, acc, tracker)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return acc


def _collect(pending: list[tuple[int, int, Future]], acc: ConfusionAccumulator, tracker: ProgressTracker) -> None:
    for z0, done, future in pending:
        acc.add(z0, future.result())
        if done:
            tracker.advance(done)
