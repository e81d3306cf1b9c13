"""Segmentation losses by name, and weighted sums of them ("jaccard+0.5*ce").

Every loss maps logits (B, K, H, W) and integer labels (B, H, W) to a scalar. The soft region
losses come from segmentation_models_pytorch in multiclass mode (from logits):
jaccard, dice, lovasz, focal, tversky (alpha=0.3 false positives, beta=0.7 false negatives),
focal_tversky (the same with exponent 0.75 on 1 - Tversky index, Abraham & Khan 2019); ce is
torch's cross-entropy.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

from bone_avizo.config import FIT_LOSS_TERMS
from bone_avizo.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z_\-]+)\s*$")
_ALIASES = {"iou": "jaccard", "cross_entropy": "ce", "crossentropy": "ce", "focal-tversky": "focal_tversky",
            "focaltversky": "focal_tversky"}


def _make(name: str) -> LossFn:
    from segmentation_models_pytorch import losses as L

    mode = "multiclass"
    if name == "jaccard":
        return L.JaccardLoss(mode, from_logits=True)
    if name == "dice":
        return L.DiceLoss(mode, from_logits=True)
    if name == "lovasz":
        return L.LovaszLoss(mode)
    if name == "focal":
        return L.FocalLoss(mode)
    if name == "tversky":
        return L.TverskyLoss(mode, from_logits=True, alpha=0.3, beta=0.7)
    if name == "focal_tversky":
        return L.TverskyLoss(mode, from_logits=True, alpha=0.3, beta=0.7, gamma=0.75)
    return torch.nn.CrossEntropyLoss()


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """[(weight, term), ...] from 'jaccard', 'dice+ce', '0.7*dice+0.3*focal'; ConfigError otherwise."""
    terms = []
    for part in str(spec).lower().split("+"):
        match = _TERM.match(part)
        name = _ALIASES.get(match.group(2), match.group(2)) if match else None
        if name not in FIT_LOSS_TERMS:
            raise ConfigError(f"loss (--loss): {part.strip()!r} in {spec!r} is not a loss; use "
                              f"{', '.join(FIT_LOSS_TERMS)}, or a sum like 'jaccard+ce' or 'dice+0.5*focal'")
        weight = float(match.group(1)) if match.group(1) else 1.0
        terms.append((weight, name))
    return terms


class CombinedLoss(torch.nn.Module):
    """sum(weight * loss(logits, labels)) over the parsed terms."""

    def __init__(self, spec: str):
        super().__init__()
        self.terms = parse_loss(spec)
        self.fns = torch.nn.ModuleList([_make(name) for _, name in self.terms])

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        total = None
        for (weight, _), fn in zip(self.terms, self.fns):
            value = weight * fn(logits, labels)
            total = value if total is None else total + value
        return total


def build_loss(spec: str) -> CombinedLoss:
    return CombinedLoss(spec)
