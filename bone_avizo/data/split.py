"""Scan-level train/validation splits: a shuffled fraction or k folds over scans, seeded.

Splitting whole scans (never slices) keeps every slice of a validation scan out of training:
neighbouring slices of one scan are nearly identical, so a slice-level split would leak.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bone_avizo.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Indices (into the list of scans) of the training and of the validation scans."""

    train: tuple[int, ...]
    val: tuple[int, ...]

    def __post_init__(self):
        if set(self.train) & set(self.val):
            raise ConfigError(f"scans {sorted(set(self.train) & set(self.val))} are both training and "
                              "validation scans; a scan belongs to one side only")


def _shuffled(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x5B17]).permutation(n)


def fraction_split(n_scans: int, *, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Shuffle scans with ``seed`` and hold out round(val_fraction * n) of them (at least one when
    val_fraction > 0, BONe's rule); needs at least two scans then."""
    if val_fraction <= 0:
        return Split(tuple(range(n_scans)), ())
    if n_scans < 2:
        raise ConfigError(f"a scan-level split needs at least 2 scans, got {n_scans}; give more scans, "
                          "give validation scans explicitly (--val-images/--val-labels), or set "
                          "--val-fraction 0 to train without validation")
    n_val = min(n_scans - 1, max(1, int(round(val_fraction * n_scans))))
    order = _shuffled(n_scans, seed)
    return Split(tuple(sorted(int(i) for i in order[n_val:])), tuple(sorted(int(i) for i in order[:n_val])))


def kfold_splits(n_scans: int, *, folds: int, seed: int = 0) -> list[Split]:
    """``folds`` splits over shuffled scans; fold k validates on the k-th of ``folds`` near-equal parts."""
    if folds < 2 or folds > n_scans:
        raise ConfigError(f"{folds}-fold cross-validation needs between 2 and {n_scans} folds for "
                          f"{n_scans} scans; lower --folds or add scans")
    order = _shuffled(n_scans, seed)
    bounds = [math.floor(k * n_scans / folds) for k in range(folds + 1)]
    splits = []
    for k in range(folds):
        val = set(int(i) for i in order[bounds[k]:bounds[k + 1]])
        splits.append(Split(tuple(i for i in range(n_scans) if i not in val), tuple(sorted(val))))
    return splits


def _explicit_split(n_train: int, n_val: int) -> Split:
    """Scans 0..n_train-1 train, the next n_val validate (validation scans given separately)."""
    return Split(tuple(range(n_train)), tuple(range(n_train, n_train + n_val)))


def make_split(n_scans: int, *, n_explicit_val: int = 0, val_fraction: float = 0.2, folds: int = 0,
               fold: int = 0, seed: int = 0) -> Split:
    """The split a run uses: explicit validation scans (the last ``n_explicit_val``), else k-fold when
    ``folds`` is set, else a fraction split."""
    if n_explicit_val:
        if folds:
            raise ConfigError("--folds and explicit validation scans exclude each other; give one of them")
        if n_scans - n_explicit_val < 1:
            raise ConfigError("no training scans left: every scan is a validation scan")
        return _explicit_split(n_scans - n_explicit_val, n_explicit_val)
    if folds:
        return kfold_splits(n_scans, folds=folds, seed=seed)[fold]
    return fraction_split(n_scans, val_fraction=val_fraction, seed=seed)


def names(split_part: Sequence[int], scan_names: Sequence[str]) -> list[str]:
    return [scan_names[i] for i in split_part]
