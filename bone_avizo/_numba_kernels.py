"""numba versions of :mod:`bone_avizo.kernels` (imported only through ``kernels.compiled()``).

Plain loops that LLVM vectorises; no fast-math, so every float32 operation is the one numpy does. The
running maximum follows ``numpy.maximum``: once it is NaN no later class wins, as in the numpy route.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True, boundscheck=False)


@njit(**_JIT)
def normalise(raw, out, offset, scale, low, high):  # pragma: no cover - compiled
    """(n, h, w) integer ``raw`` -> (n, h, w) float32 ``out``: clip((raw - offset) * scale, low, high)."""
    n, h, w = raw.shape
    for i in range(n):
        for y in range(h):
            src = raw[i, y]
            dst = out[i, y]
            for x in range(w):
                v = (np.float32(src[x]) - offset) * scale
                dst[x] = low if v < low else (high if v > high else v)


@njit(**_JIT)
def _running_max(best, v):  # pragma: no cover - compiled
    return v if (v > best or v != v) else best


@njit(**_JIT)
def labels2(scores, labels):  # pragma: no cover - compiled
    """(n, 2, p) float32 -> (n, p) uint8: 1 where class 1 is above class 0."""
    n, _, p = scores.shape
    for i in range(n):
        s0, s1, out = scores[i, 0], scores[i, 1], labels[i]
        for j in range(p):
            out[j] = np.uint8(1) if s1[j] > s0[j] else np.uint8(0)


@njit(**_JIT)
def labels3(scores, labels):  # pragma: no cover - compiled
    """(n, 3, p) float32 -> (n, p) uint8 argmax, ties to the lower class, in registers."""
    n, _, p = scores.shape
    for i in range(n):
        s0, s1, s2, out = scores[i, 0], scores[i, 1], scores[i, 2], labels[i]
        for j in range(p):
            best = s0[j]
            v = s1[j]
            label = np.int32(1) if v > best else np.int32(0)
            best = _running_max(best, v)
            label = np.int32(2) if s2[j] > best else label
            out[j] = np.uint8(label)


@njit(**_JIT)
def labels_many(scores, labels, block):  # pragma: no cover - compiled
    """(n, K, p) float32 -> (n, p) uint8 argmax for any K, ``block`` pixels at a time (their running
    maximum and labels stay in L1 while the K classes are compared)."""
    n, k, p = scores.shape
    best = np.empty(block, np.float32)
    label = np.empty(block, np.float32)  # float labels keep every lane of the loop the same width
    for i in range(n):
        for j0 in range(0, p, block):
            m = min(block, p - j0)
            first = scores[i, 0, j0:j0 + m]
            for j in range(m):
                best[j] = first[j]
                label[j] = 0.0
            for c in range(1, k):
                row = scores[i, c, j0:j0 + m]
                value = np.float32(c)
                for j in range(m):
                    v = row[j]
                    label[j] = value if v > best[j] else label[j]
                    best[j] = _running_max(best[j], v)
            out = labels[i, j0:j0 + m]
            for j in range(m):
                out[j] = np.uint8(label[j])


@njit(**_JIT)
def moments(flat, skip_zeros):  # pragma: no cover - compiled
    """(count, sum, sum of squares, minimum, maximum) of 1-D uint8/uint16 ``flat`` (of its non-zero voxels
    when ``skip_zeros``; a zero adds nothing to either sum), exact in uint64 for up to 2**31 voxels; the
    minimum of no voxel is 65536."""
    count = np.uint64(0)
    total = np.uint64(0)
    squares = np.uint64(0)
    low = np.uint32(65536)
    high = np.uint32(0)
    for i in range(flat.size):
        v = np.uint32(flat[i])
        count += np.uint64(1) if (v != 0 or not skip_zeros) else np.uint64(0)
        total += np.uint64(v)
        squares += np.uint64(v * v)
        low = min(low, v if (v != 0 or not skip_zeros) else np.uint32(65536))
        high = max(high, v)
    return count, total, squares, low, high
