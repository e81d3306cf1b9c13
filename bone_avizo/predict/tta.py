"""Test-time augmentation: flips and 90-degree rotations of (N, C, H, W) images, and inverses."""
from __future__ import annotations

from typing import Callable

import torch

from bone_avizo.config import TTA

Transform = tuple[int, bool]  # (quarter turns, flip along W before turning)


def transforms(mode: str) -> list[Transform]:
    """none: identity; flips: identity + 3 flips; rot90: 4 rotations; d4: all 8 symmetries."""
    mode = TTA(mode)
    if mode == TTA.NONE:
        return [(0, False)]
    if mode == TTA.FLIPS:  # identity, flip W, flip H (= rot180 of flip W), flip both (= rot180)
        return [(0, False), (0, True), (2, True), (2, False)]
    if mode == TTA.ROT90:
        return [(k, False) for k in range(4)]
    return [(k, f) for f in (False, True) for k in range(4)]


def apply(images: torch.Tensor, t: Transform) -> torch.Tensor:
    turns, flip = t
    if flip:
        images = images.flip(-1)
    return torch.rot90(images, turns, dims=(-2, -1)) if turns else images


def _invert(outputs: torch.Tensor, t: Transform) -> torch.Tensor:
    turns, flip = t
    if turns:
        outputs = torch.rot90(outputs, -turns, dims=(-2, -1))
    return outputs.flip(-1) if flip else outputs


def averaged(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
             mode: str) -> torch.Tensor:
    """Mean of predict(T(images)) mapped back by T^-1 over the transforms of ``mode``."""
    ts = transforms(mode)
    total = _invert(predict(apply(images, ts[0])), ts[0])
    for t in ts[1:]:
        total.add_(_invert(predict(apply(images, t)), t))
    return total / len(ts) if len(ts) > 1 else total
