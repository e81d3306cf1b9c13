"""Blending windows for overlapping tiles: weights (h, w), positive everywhere, peak 1."""
from __future__ import annotations

import functools

import numpy as np
import torch

from bone_avizo.config import Blend

GAUSSIAN_SIGMA_SCALE = 0.125  # sigma = 1/8 of the tile edge, as MONAI and nnU-Net use
MIN_WEIGHT = 1e-3  # keeps every pixel covered by a tile > 0 in the normaliser


def _profile(n: int, mode: Blend) -> np.ndarray:
    centre = (n - 1) / 2.0
    x = np.arange(n, dtype=np.float64)
    if mode == Blend.GAUSSIAN:
        sigma = GAUSSIAN_SIGMA_SCALE * n
        return np.exp(-0.5 * ((x - centre) / sigma) ** 2)
    if mode == Blend.COSINE:
        return np.sin(np.pi * (x + 0.5) / n) ** 2
    return np.ones(n)


@functools.lru_cache(maxsize=32)
def blend_window(height: int, width: int, mode: str) -> torch.Tensor:
    """Separable window (height, width), float32, max 1, min >= MIN_WEIGHT."""
    mode = Blend(mode)
    w = np.outer(_profile(height, mode), _profile(width, mode))
    w = np.maximum(w / w.max(), MIN_WEIGHT)
    return torch.from_numpy(w.astype(np.float32))
