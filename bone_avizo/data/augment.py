"""Seeded augmentation of training patches: BONe's set plus optional micro-CT extras.

A patch is ``image`` (C, P, P) float32 normalised intensities (C = 2.5D context slices) and
``labels`` (P, P) int64. Every random decision comes from the numpy Generator passed in, so a
patch's augmentation depends only on the seed of its sample, not on workers or processes.

BONe's set, in this order: horizontal flip (p=0.166), vertical flip (p=0.166), a rotation by
90, 180 or 270 degrees (p=0.5, the angle uniform), intensity shift x + U(-0.15, 0.15) (p=0.4),
intensity scale x * U(0.75, 1.25) (p=0.4), then clipping to the normalisation's range
([-5, 5] z-score, [0, 1] min-max).

Extras (each opt-in, applied between the geometric and the intensity steps):
``scale`` zoom by U(0.85, 1.15) about the centre (p=0.2; bilinear image, nearest labels,
mirrored borders); ``blur`` Gaussian, sigma U(0.5, 1.5) px (p=0.2); ``gamma`` on the patch
rescaled to its own [min, max], gamma = exp(U(ln 0.7, ln 1.5)) (p=0.3); ``noise`` Gaussian with
sigma U(0, 0.1) x the patch's standard deviation (p=0.3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F

from bone_avizo.data.normalize import Z_CLIP, Normalization

P_FLIP = 0.166
P_ROT = 0.5
P_INTENSITY = 0.4
SHIFT = 0.15
SCALE = (0.75, 1.25)
P_EXTRA = {"scale": 0.2, "blur": 0.2, "gamma": 0.3, "noise": 0.3}


def clip_range(normalization: str) -> tuple[float, float]:
    """The value range of normalised intensities: (-5, 5) z-score, (0, 1) min-max."""
    return (-Z_CLIP, Z_CLIP) if Normalization(normalization) == Normalization.ZSCORE else (0.0, 1.0)


@dataclass(frozen=True)
class Augmenter:
    """Applies BONe's augmentations (when ``bone``) and the named ``extras`` to one patch."""

    normalization: str = "zscore"
    bone: bool = True
    extras: tuple[str, ...] = ()

    def __call__(self, image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bone:
            image, labels = _geometric(image, labels, rng)
        if "scale" in self.extras and rng.random() < P_EXTRA["scale"]:
            image, labels = _zoom(image, labels, float(rng.uniform(0.85, 1.15)))
        if "blur" in self.extras and rng.random() < P_EXTRA["blur"]:
            image = _gaussian_blur(image, float(rng.uniform(0.5, 1.5)))
        if "gamma" in self.extras and rng.random() < P_EXTRA["gamma"]:
            image = _gamma(image, math.exp(rng.uniform(math.log(0.7), math.log(1.5))))
        if "noise" in self.extras and rng.random() < P_EXTRA["noise"]:
            image = _noise(image, float(rng.uniform(0.0, 0.1)), int(rng.integers(2**62)))
        if self.bone:
            image = _intensity(image, rng)
        lo, hi = clip_range(self.normalization)
        return image.clamp_(lo, hi), labels

    def describe(self) -> dict:
        """JSON-ready description (for the model metadata's ``augmentations``)."""
        out: dict = {}
        if self.bone:
            out.update(hflip=P_FLIP, vflip=P_FLIP, rot90=P_ROT, intensity_shift=[P_INTENSITY, -SHIFT, SHIFT],
                       intensity_scale=[P_INTENSITY, *SCALE])
        out.update({name: P_EXTRA[name] for name in self.extras})
        out["clip"] = list(clip_range(self.normalization))
        return out


def _geometric(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
    if rng.random() < P_FLIP:
        image, labels = image.flip(-1), labels.flip(-1)
    if rng.random() < P_FLIP:
        image, labels = image.flip(-2), labels.flip(-2)
    if rng.random() < P_ROT:
        k = int(rng.integers(1, 4))
        image, labels = torch.rot90(image, k, (-2, -1)), torch.rot90(labels, k, (-2, -1))
    return image.contiguous(), labels.contiguous()


def _intensity(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < P_INTENSITY:
        image = image + float(rng.uniform(-SHIFT, SHIFT))
    if rng.random() < P_INTENSITY:
        image = image * float(rng.uniform(*SCALE))
    return image


def _zoom(image: torch.Tensor, labels: torch.Tensor, factor: float):
    """Zoom both about the centre by ``factor`` (> 1 enlarges); borders mirrored."""
    theta = torch.tensor([[1.0 / factor, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
    image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    lab = F.grid_sample(labels[None, None].float(), grid, mode="nearest", padding_mode="reflection",
                        align_corners=False)[0, 0]
    return image, lab.round().to(labels.dtype)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel of (C, H, W), mirrored borders."""
    k = _gaussian_kernel(sigma)
    r = k.numel() // 2
    x = F.pad(image[:, None], (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def _gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return image
    return lo + (hi - lo) * ((image - lo) / (hi - lo)).pow(gamma)


def _noise(image: torch.Tensor, relative_sigma: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    sigma = relative_sigma * float(image.std()) if image.numel() > 1 else 0.0
    return image + sigma * torch.randn(image.shape, generator=generator, dtype=image.dtype)
