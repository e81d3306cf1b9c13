"""The checked plan of a training run: which scans train and validate, classes, slices, statistics.

Everything here runs before any training and raises a BoneAvizoError for bad input: mismatched
shapes, bad or inconsistent labels, a split that needs more scans, a patch larger than the slices.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from bone_avizo.data.normalize import NormStats
from bone_avizo.data.sampling import AXIS_OF_PLANE, SliceRef, evenly_spaced, slices_of
from bone_avizo.data.scans import (Scan, ScanSpec, check_patch_fits, close_scans, describe, open_scans,
                                   resolve_num_classes)
from bone_avizo.data.split import make_split

log = logging.getLogger(__name__)


@dataclass
class FitPlan:
    """Training and validation scans (specs and statistics, indexed as in ``train_refs`` /
    ``val_refs``), the classes, and the slices each side visits."""

    train_specs: list[ScanSpec]
    train_stats: list[NormStats]
    val_specs: list[ScanSpec]
    val_stats: list[NormStats]
    num_classes: int
    class_names: tuple[str, ...]
    axes: tuple[int, ...]
    train_refs: list[SliceRef]
    val_refs: list[SliceRef]
    scans: list[dict]

    def describe(self) -> dict:
        return {"train_scans": [s.name for s in self.train_specs], "val_scans": [s.name for s in self.val_specs],
                "scans": self.scans}


def _class_names(config, num_classes: int, scans: Sequence[Scan]) -> tuple[str, ...]:
    if config.class_names:
        return tuple(config.class_names)
    for scan in scans:
        names = scan.labels.info.class_names
        if names and len(names) == num_classes:
            return tuple(names)
    return tuple(f"class_{i}" for i in range(num_classes))


def _val_refs(scans: Sequence[Scan], axes: Sequence[int], per_axis: int) -> list[SliceRef]:
    return [SliceRef(k, a, i) for k, scan in enumerate(scans) for a in axes
            for i in evenly_spaced(scan.shape[a], per_axis)]


def make_plan(train: Sequence[ScanSpec], validation: Sequence[ScanSpec], config) -> FitPlan:
    """Open and check all scans, split them, and list the slices (scans are closed again)."""
    specs = list(train) + list(validation)
    scans = open_scans(specs, mask=config.normalization_mask)
    try:
        num_classes = resolve_num_classes(scans, num_classes=config.num_classes, class_names=config.class_names)
        split = make_split(len(scans), n_explicit_val=len(validation), val_fraction=config.val_fraction,
                           folds=config.folds, fold=config.fold, seed=config.seed)
        axes = tuple(AXIS_OF_PLANE[p] for p in config.planes)
        train_scans = [scans[i] for i in split.train]
        val_scans = [scans[i] for i in split.val]
        check_patch_fits(train_scans, config.patch_size, axes)
        if config.val_mode == "patches":
            check_patch_fits(val_scans, config.patch_size, axes)
        train_refs = [r for k, scan in enumerate(train_scans) for r in slices_of(k, scan.shape, axes)]
        plan = FitPlan(
            train_specs=[s.spec for s in train_scans], train_stats=[s.stats for s in train_scans],
            val_specs=[s.spec for s in val_scans], val_stats=[s.stats for s in val_scans],
            num_classes=num_classes, class_names=_class_names(config, num_classes, scans), axes=axes,
            train_refs=train_refs, val_refs=_val_refs(val_scans, axes, config.val_slices),
            scans=describe(scans))
    finally:
        close_scans(scans)
    log.info("training on %d scan(s) (%s), validating on %d (%s); %d classes %s",
             len(plan.train_specs), ", ".join(s.name for s in plan.train_specs), len(plan.val_specs),
             ", ".join(s.name for s in plan.val_specs) or "none", num_classes, plan.class_names)
    return plan
