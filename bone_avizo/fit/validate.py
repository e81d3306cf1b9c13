"""Validation: a confusion matrix over validation slices, per-class IoU and its means.

``slices`` mode (default) segments whole validation slices as DLPred does: the slice's 2.5D
stack, normalised with its scan's statistics, predicted tile by tile with the training patch
size, 25 % overlap and Gaussian blending (:class:`bone_avizo.predict.tiling.Tiler`), then
argmax. ``patches`` mode scores fixed, seeded crops of the validation slices (the same every
epoch; cheaper, but blind to tile borders). Under DDP each rank scores every w-th slice and the
confusion matrices are summed over ranks.

Scores: IoU per class = TP / (TP + FP + FN) over all validation voxels; ``mean_iou`` is the mean
over all classes including background (BONe's validation score), ``mean_iou_fg`` leaves out
class 0. A class absent from both prediction and reference is left out of the means.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bone_avizo.data.datasets import SliceSet
from bone_avizo.data.sampling import SliceRef
from bone_avizo.metrics.iou import mean_defined, scores_from_confusion
from bone_avizo.predict.tiling import Tiler

VAL_OVERLAP = 0.25


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts, rows = reference class, columns = predicted class."""
    codes = target.reshape(-1).to(torch.int64) * num_classes + pred.reshape(-1).to(torch.int64)
    return torch.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def scores(cm: np.ndarray) -> dict:
    """Per-class IoU (NaN -> None), mean_iou (all classes) and mean_iou_fg (without class 0)."""
    iou = scores_from_confusion(np.asarray(cm, np.float64))["iou"]
    as_float = lambda v: None if np.isnan(v) else float(v)  # noqa: E731
    return {"iou": [as_float(v) for v in iou], "mean_iou": as_float(mean_defined(iou)),
            "mean_iou_fg": as_float(mean_defined(iou, foreground=True))}


def _groups(refs: Sequence[SliceRef], size: int):
    """Runs of at most ``size`` consecutive refs of the same scan and axis (same slice shape)."""
    run: list[SliceRef] = []
    for ref in refs:
        if run and (len(run) == size or (ref.scan, ref.axis) != (run[0].scan, run[0].axis)):
            yield run
            run = []
        run.append(ref)
    if run:
        yield run


class Validator:
    """Scores a model on this rank's share of the validation slices."""

    def __init__(self, slices: SliceSet, refs: Sequence[SliceRef], *, num_classes: int, patch_size: int,
                 mode: str, batch_size: int, device: torch.device, autocast=None):
        self.slices = slices
        self.refs = list(refs)
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.mode = mode
        self.batch_size = max(1, batch_size)
        self.device = device
        self.autocast = autocast

    def _predictor(self, model: torch.nn.Module):
        def run(tiles: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return model(tiles.to(self.device)).float()
        return run

    @torch.no_grad()
    def confusion(self, model: torch.nn.Module) -> torch.Tensor:
        """The (K, K) confusion matrix of this rank's validation slices (model in eval mode)."""
        was_training = model.training
        model.eval()
        cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        predictor = self._predictor(model)
        try:
            if self.mode == "patches":
                for position, ref in enumerate(self.refs):
                    images, labels = self.slices.patches(ref, position)
                    pred = torch.cat([predictor(images[i:i + self.batch_size]).argmax(1).cpu()
                                      for i in range(0, len(images), self.batch_size)])
                    cm += confusion(pred, labels, self.num_classes)
            else:
                tiler = Tiler(predictor, tile=self.patch_size, overlap=VAL_OVERLAP, blend="gaussian",
                              batch_size=self.batch_size, num_classes=self.num_classes)
                for group in _groups(self.refs, 8):
                    items = [self.slices.get(ref) for ref in group]
                    images = torch.stack([i for i, _ in items]).to(self.device)
                    pred = tiler(images).argmax(1).cpu()
                    cm += confusion(pred, torch.stack([t for _, t in items]), self.num_classes)
        finally:
            model.train(was_training)
        return cm
