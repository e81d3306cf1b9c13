"""One-pass CPU kernels of the prediction pipeline, compiled by numba, with numpy fallbacks.

The CPU path spends most of its own time in memory-bound steps around the network: the statistics of
8/16-bit voxels (numpy: about eight passes in exact uint32 arithmetic), normalising them to float32
(numpy: a conversion and three passes) and taking the argmax over the K class scores (numpy: 2K - 1
passes). Each kernel here reads its input once and writes its output once.
Both give exactly the numpy results (the same float32 operations in the same order, no fast-math;
ties to the lower class, NaN as numpy's running maximum treats it), so the labels do not depend on
whether numba is installed, nor on the machine.

numba compiles each kernel on first use (about a second; cached on disk, so later processes load it
in milliseconds). Where numba is missing or fails to load, or ``BONE_AVIZO_NUMBA=0`` is set, the
numpy versions run (logged once).
"""
from __future__ import annotations

import functools
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

NORMALISED_DTYPES = (np.uint8, np.int8, np.uint16, np.int16)  # exact in float32
BLOCK = 2048  # pixels per step of the many-class kernel: its running maximum and labels stay in L1


@functools.lru_cache(maxsize=1)
def compiled():
    """The numba kernels (a namespace), or None where numba cannot be used here."""
    if os.environ.get("BONE_AVIZO_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        log.info("BONE_AVIZO_NUMBA=0: the CPU pipeline runs its numpy kernels")
        return None
    try:
        from bone_avizo import _numba_kernels
    except Exception as exc:  # noqa: BLE001 - ImportError, or numba failing against this numpy/LLVM
        log.info("numba is not usable here (%s); the CPU pipeline runs its numpy kernels (slower, same results)",
                 str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return _numba_kernels


def normalise_into(raw: np.ndarray, out: np.ndarray, affine: tuple[float, float, float, float]) -> np.ndarray:
    """``out = clip((float32(raw) - offset) * scale, low, high)`` for 8/16-bit integer ``raw`` of any shape
    (a view will do) into float32 ``out`` of the same shape; ``affine`` is (offset, scale, low, high)."""
    offset, scale, low, high = (np.float32(v) for v in affine)
    kernels = compiled()
    if kernels is not None and raw.dtype in NORMALISED_DTYPES and out.flags.c_contiguous:
        images = raw.reshape(-1, *raw.shape[-2:]) if raw.ndim >= 2 else raw.reshape(1, 1, -1)
        kernels.normalise(images, out.reshape(images.shape), offset, scale, low, high)
        return out
    for image, normed in zip(raw.reshape(-1, *raw.shape[-2:]), out.reshape(-1, *raw.shape[-2:])):
        normed[...] = image  # one image at a time: its four passes stay in cache
        np.subtract(normed, offset, out=normed)
        np.multiply(normed, scale, out=normed)
        np.clip(normed, low, high, out=normed)
    return out


def labels_into(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """argmax over K of (n, K, p) float32 ``scores`` into uint8 (n, p) ``labels``, ties to the lower class;
    K = 1: 1 where the score is > 0. Other score dtypes take the numpy route."""
    kernels = compiled()
    k = scores.shape[1]
    if kernels is None or k == 1 or k > 255 or scores.dtype != np.float32 or not scores.flags.c_contiguous:
        return _numpy_labels_into(scores, labels)  # K = 1 is one numpy comparison on either route
    if k == 2:
        kernels.labels2(scores, labels)
    elif k == 3:
        kernels.labels3(scores, labels)
    else:
        kernels.labels_many(scores, labels, BLOCK)
    return labels


MOMENTS_RUN = 1 << 30  # voxels per call of the moments kernel: its uint64 sums stay exact


def unsigned_moments(flat: np.ndarray, *, skip_zeros: bool) -> tuple[int, int, int, int, int] | None:
    """(count, sum, sum of squares, minimum, maximum) of 1-D uint8/uint16 ``flat`` (of its non-zero voxels
    when ``skip_zeros``), exact, in one pass; (0, 0, 0, 0, 0) for no voxel; None where numba is not
    usable (the caller's numpy route gives the same numbers)."""
    kernels = compiled()
    if kernels is None or flat.dtype not in (np.uint8, np.uint16) or flat.ndim != 1:
        return None
    count = total = squares = maximum = 0
    minimum = 1 << 16
    for i in range(0, flat.size, MOMENTS_RUN):
        n, s, q, low, high = kernels.moments(flat[i:i + MOMENTS_RUN], skip_zeros)
        count, total, squares = count + int(n), total + int(s), squares + int(q)
        minimum, maximum = min(minimum, int(low)), max(maximum, int(high))
    return (count, total, squares, minimum, maximum) if count else (0, 0, 0, 0, 0)


LABEL_CHUNK_PIXELS = 1 << 17  # pixels of one image per step of the numpy argmax (fewer, larger calls)


def _numpy_labels_into(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """:func:`labels_into` with numpy: a running maximum over K, in runs of pixels that stay in cache."""
    n, k, p = scores.shape
    if k == 1:
        np.greater(scores[:, 0], 0, out=labels.view(bool))
        return labels
    step = LABEL_CHUNK_PIXELS
    for i in range(n):
        for r0 in range(0, p, step):
            _numpy_run(scores[i, :, r0:r0 + step], labels[i, r0:r0 + step])
    return labels


def _numpy_run(s: np.ndarray, out: np.ndarray) -> None:
    """Labels of (K, m) scores ``s`` into (m,) uint8 ``out``."""
    np.greater(s[1], s[0], out=out.view(bool))  # classes 0 and 1 in one pass
    if len(s) > 2:
        best = np.maximum(s[0], s[1])
        higher = np.empty(best.shape, dtype=np.uint8)
        for c in range(2, len(s)):
            np.greater(s[c], best, out=higher.view(bool))
            # class c beats every earlier class: c is above every label so far, so a maximum sets it
            np.maximum(out, np.multiply(higher, np.uint8(c), out=higher), out=out)
            if c + 1 < len(s):
                np.maximum(best, s[c], out=best)
