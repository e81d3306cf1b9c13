"""Test doubles: a pointwise network (output depends only on the same pixel) wrapped like a
loaded model file, so tiling, planes, TTA and 2.5D stacking can be checked exactly. The reference
labels are built with plain numpy from the documented rules, not with the product's own functions."""
from __future__ import annotations

import types

import numpy as np
import torch

Z_CLIP = 5.0  # documented: z-scores are clipped to [-5, 5], min-max values to [0, 1]


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
                normalization: str = "zscore", seed: int = 0, module: torch.nn.Module | None = None):
    """An object shaped like bone_avizo.models.LoadedModel around a PointwiseNet (or ``module``)."""
    meta = types.SimpleNamespace(
        in_channels=in_channels, context_slices=in_channels, num_classes=num_classes,
        class_names=tuple(["background", "bone", "pores", "c3", "c4"][:max(num_classes, 2)]),  # 1: binary
        patch_size=patch_size, normalization=normalization, planes=("xy",))
    module = PointwiseNet(in_channels, num_classes, seed) if module is None else module
    return types.SimpleNamespace(module=module.eval(), metadata=meta)


def normalised_reference(volume: np.ndarray, normalization: str) -> np.ndarray:
    """float32 volume normalised with statistics over its voxels > 0 (BONe's rule): z-score
    (x - mean) / std clipped to [-5, 5], or min-max (x - min) / (max - min) clipped to [0, 1]."""
    kept = volume[volume > 0].astype(np.float64)
    x = volume.astype(np.float32)
    if normalization == "zscore":
        return np.clip((x - np.float32(kept.mean())) * np.float32(1.0 / kept.std()), -Z_CLIP, Z_CLIP)
    low, high = kept.min(), kept.max()
    return np.clip((x - np.float32(low)) * np.float32(1.0 / (high - low)), 0.0, 1.0)


def mirrored_stacks(volume: np.ndarray, context: int) -> np.ndarray:
    """(z, context, y, x): slice z with its neighbours z - context//2 .. z + context//2 as channels,
    missing ones mirrored at the volume edges without repeating the edge slice (z = -1 -> 1)."""
    half = context // 2
    padded = np.pad(volume, ((half, half), (0, 0), (0, 0)), mode="reflect")
    return np.stack([padded[z:z + context] for z in range(volume.shape[0])])


def pointwise_reference(volume: np.ndarray, loaded) -> np.ndarray:
    """The exact labels (z, y, x) a PointwiseNet gives on xy slices with mirrored 2.5D stacks."""
    meta = loaded.metadata
    stacks = mirrored_stacks(normalised_reference(volume, meta.normalization), meta.context_slices)
    with torch.no_grad():
        logits = loaded.module(torch.from_numpy(stacks))
    if logits.shape[1] == 1:  # a binary model: foreground where its one logit is > 0
        return (logits[:, 0] > 0).numpy().astype(np.uint8)
    return logits.argmax(1).numpy().astype(np.uint8)
