"""Which epoch's weights a study task keeps, and so which scans validate its training."""
from __future__ import annotations

from typing import Sequence

from bone_avizo._compat import StrEnum
from bone_avizo.config import FitConfig
from bone_avizo.data.scans import ScanSpec
from bone_avizo.errors import ConfigError


class Selection(StrEnum):
    """Which epoch's weights a task keeps (and so which scans choose them)."""

    HELDOUT = "heldout"
    INNER = "inner"
    LAST = "last"


SELECTION_HELP = ("which epoch a task keeps: heldout = the best validation score on the task's own test "
                  "scans (BONe's cross-validation; the test scans choose the epoch, so the score is "
                  "optimistic), inner = the best score on a scan-level split of the training scans "
                  "(val_fraction; the test scans stay unseen), last = the last epoch (unseen, no "
                  "validation cost)")


def selection_inputs(config: FitConfig, selection: str, tests: Sequence[ScanSpec]
                     ) -> tuple[FitConfig, list[ScanSpec]]:
    """The fit options and validation scans of a task under ``selection``."""
    selection = Selection(selection)
    if selection is Selection.HELDOUT:
        return config.with_(folds=0, fold=0), list(tests)
    if selection is Selection.INNER:
        if config.val_fraction <= 0:
            raise ConfigError("selection 'inner' splits the training scans by val_fraction, which is 0; give "
                              "--val-fraction > 0 or another --selection")
        return config.with_(folds=0, fold=0), []
    return config.with_(folds=0, fold=0, val_fraction=0.0, early_stopping=0), []


def check_inner_split(n_train: int, selection: str, where: str) -> None:
    """ConfigError when selection 'inner' leaves a task fewer than 2 training scans to split."""
    if Selection(selection) is Selection.INNER and n_train < 2:
        raise ConfigError(f"selection 'inner' needs at least 2 training scans per task to hold one out, but "
                          f"{where} has {n_train}; add scans, use fewer folds, or --selection heldout/last")
