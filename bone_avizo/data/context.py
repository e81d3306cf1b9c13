"""2.5D context: which neighbouring slices become the channels of one slice.

A model with ``context_slices = c`` (odd) sees slices z - c//2 .. z + c//2 as channels.
At the volume edges the missing neighbours are mirrored (z = -1 -> 1), as in training.
"""
from __future__ import annotations

import numpy as np

from bone_avizo.errors import InvalidVolumeError


def check_context(num_slices: int, context_slices: int) -> None:
    if context_slices < 1 or context_slices % 2 == 0:
        raise InvalidVolumeError(f"context_slices must be odd and >= 1, got {context_slices}")
    if num_slices < context_slices:
        raise InvalidVolumeError(f"the volume has {num_slices} slices along the slicing axis but the "
                                 f"2.5D model needs stacks of {context_slices}; use a larger volume "
                                 "or a 2D model")


def context_indices(z: np.ndarray | int, num_slices: int, context_slices: int) -> np.ndarray:
    """Slice indices (..., context_slices) for centre slices ``z``, mirrored at the edges."""
    half = context_slices // 2
    idx = np.asarray(z)[..., None] + np.arange(-half, half + 1)
    period = 2 * (num_slices - 1) if num_slices > 1 else 1
    idx = np.abs(idx) % period if num_slices > 1 else np.zeros_like(idx)
    return np.where(idx >= num_slices, period - idx, idx)


def halo(context_slices: int) -> int:
    """Extra slices needed on each side of a slab to build its 2.5D stacks."""
    return context_slices // 2
