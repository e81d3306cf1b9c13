"""Test doubles: a pointwise network (output depends only on the same pixel) wrapped like a
loaded model file, so tiling, planes, TTA and 2.5D stacking can be checked exactly."""
from __future__ import annotations

import types

import numpy as np
import torch

from bone_avizo.data.context import context_indices
from bone_avizo.data.normalize import normalize, scan_stats
from bone_avizo.io.base import ArraySource


class PointwiseNet(torch.nn.Module):
    """logits[b, k] = sum_c w[k, c] * x[b, c] + bias[k], pixel by pixel; (B, C, H, W) -> (B, K, H, W)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(num_classes, in_channels, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(num_classes, generator=g) * 0.1)

    def forward(self, x):
        return torch.einsum("kc,bchw->bkhw", self.weight, x) + self.bias[None, :, None, None]


def fake_loaded(in_channels: int = 1, num_classes: int = 3, patch_size: int = 32,
                normalization: str = "zscore", seed: int = 0):
    """An object shaped like bone_avizo.models.LoadedModel around a PointwiseNet."""
    meta = types.SimpleNamespace(
        in_channels=in_channels, context_slices=in_channels, num_classes=num_classes,
        class_names=tuple(["background", "bone", "pores", "c3", "c4"][:num_classes]),
        patch_size=patch_size, normalization=normalization, planes=("xy",))
    return types.SimpleNamespace(module=PointwiseNet(in_channels, num_classes, seed).eval(), metadata=meta)


def pointwise_reference(volume: np.ndarray, loaded) -> np.ndarray:
    """The exact labels (z, y, x) a PointwiseNet gives on xy slices with mirrored 2.5D stacks."""
    meta = loaded.metadata
    stats = scan_stats(ArraySource(volume))
    normed = normalize(volume, stats, meta.normalization)
    idx = context_indices(np.arange(volume.shape[0]), volume.shape[0], meta.context_slices)
    with torch.no_grad():
        logits = loaded.module(normed[torch.from_numpy(idx)])
    return logits.argmax(1).numpy().astype(np.uint8)
