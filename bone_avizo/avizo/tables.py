"""IoU results as tables (for an Avizo spreadsheet) and as a one-line summary (for an info port).

The columns are those of the CSV reports (:mod:`bone_avizo.metrics.report`): undefined scores are
None (NaN in a spreadsheet), see :data:`bone_avizo.metrics.UNDEFINED_POLICY`.
"""
from __future__ import annotations

from typing import Any

from bone_avizo.metrics import IoUResult
from bone_avizo.metrics.iou import nan_to_none
from bone_avizo.metrics.report import CLASS_COLUMNS, class_rows, iou_summary

__all__ = ["PER_CLASS", "PER_SLICE", "iou_summary", "iou_tables"]

PER_CLASS = "per class"
PER_SLICE = "per slice"


def iou_tables(result: IoUResult) -> dict[str, dict[str, list[Any]]]:
    """{"per class": {column: values}, "per slice": {...}} (the second only with per-slice counts).

    per class: index, name and :data:`~bone_avizo.metrics.report.CLASS_COLUMNS`, one row per class;
    per slice: z, mean_iou, mean_iou_foreground and iou_<class name>, one row per z slice.
    """
    rows = class_rows(result)
    tables = {PER_CLASS: {column: [row[column] for row in rows] for column in ("index", "name", *CLASS_COLUMNS)}}
    if result.slice_scores is not None:
        tables[PER_SLICE] = _slice_columns(result)
    return tables


def _slice_columns(result: IoUResult) -> dict[str, list[Any]]:
    iou = result.slice_scores["iou"]
    columns: dict[str, list[Any]] = {"z": list(range(iou.shape[0]))}
    for key, foreground in (("mean_iou", False), ("mean_iou_foreground", True)):
        columns[key] = [nan_to_none(float(v)) for v in result.slice_mean_iou(foreground=foreground)]
    for k, name in enumerate(result.class_names):
        columns[f"iou_{name}"] = [nan_to_none(float(v)) for v in iou[:, k]]
    return columns
