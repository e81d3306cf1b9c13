"""Reports of IoU results: a JSON document (a stable contract), CSV tables and a printed table.

JSON keys (top level): ``mean_iou`` (all defined classes, background included),
``mean_iou_foreground``, ``mean_dice``, ``mean_dice_foreground``, ``num_classes``, ``class_names``,
``per_class`` (objects with ``index``, ``name``, ``iou``, ``dice``, ``precision``, ``recall``,
``voxels_reference``, ``voxels_prediction``, ``true_positive``, ``false_positive``,
``false_negative``, ``volume_fraction`` and ``volume_mm3`` as {reference, prediction}),
``undefined_policy``, ``absent_from_reference`` and ``never_predicted`` (class names, see the policy),
``label_maps`` ({prediction, reference}: {source label: target label}), ``confusion_matrix`` (rows = reference, columns = prediction),
``per_slice`` (one object per z slice, or null), ``surface`` (or null), ``inputs``, ``shape``,
``voxel_size``, ``unit``, ``ignore_label``, ``voxels_counted``, ``options``. Undefined values are null.
Several scans: the top level is the pooled result (confusion matrices summed) and adds
``scans`` (one such object per scan) and ``mean_of_scan_means``.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bone_avizo import __version__
from bone_avizo.config import parse_label_map
from bone_avizo.errors import OutputWriteError
from bone_avizo.io.base import partial_path, replace_path
from bone_avizo.metrics.iou import UNDEFINED_POLICY, IoUResult, nan_to_none

FORMAT = "bone_avizo.iou"
FORMAT_VERSION = 1
CLASS_COLUMNS = ("iou", "dice", "precision", "recall", "voxels_reference", "voxels_prediction",
                 "true_positive", "false_positive", "false_negative", "volume_fraction_reference",
                 "volume_fraction_prediction", "volume_mm3_reference", "volume_mm3_prediction")


def _values(array: np.ndarray | None, n: int) -> list[Any]:
    if array is None:
        return [None] * n
    return [nan_to_none(v) for v in np.asarray(array).tolist()]


def class_rows(result: IoUResult) -> list[dict[str, Any]]:
    """One flat dict per class with the keys ``index``, ``name`` and :data:`CLASS_COLUMNS`."""
    n, s = result.num_classes, result.scores
    columns = {"iou": s["iou"], "dice": s["dice"], "precision": s["precision"], "recall": s["recall"],
               "voxels_reference": s["voxels_reference"], "voxels_prediction": s["voxels_prediction"],
               "true_positive": s["tp"], "false_positive": s["fp"], "false_negative": s["fn"]}
    for which in ("reference", "prediction"):
        columns[f"volume_fraction_{which}"] = result.volume_fraction(which)
        columns[f"volume_mm3_{which}"] = result.volume_mm3(which)
    lists = {key: _values(values, n) for key, values in columns.items()}
    return [{"index": i, "name": result.class_names[i], **{k: lists[k][i] for k in CLASS_COLUMNS}}
            for i in range(n)]


def _per_class(result: IoUResult) -> list[dict[str, Any]]:
    out = []
    for row in class_rows(result):
        item = {k: v for k, v in row.items() if not k.startswith("volume_")}
        item["volume_fraction"] = {w: row[f"volume_fraction_{w}"] for w in ("reference", "prediction")}
        item["volume_mm3"] = {w: row[f"volume_mm3_{w}"] for w in ("reference", "prediction")}
        out.append(item)
    return out


def _per_slice(result: IoUResult) -> list[dict[str, Any]] | None:
    if result.slice_scores is None:
        return None
    means = _values(result.slice_mean_iou(), result.per_slice.shape[0])
    means_fg = _values(result.slice_mean_iou(foreground=True), result.per_slice.shape[0])
    iou = result.slice_scores["iou"]
    return [{"z": z, "mean_iou": means[z], "mean_iou_foreground": means_fg[z],
             "iou": _values(iou[z], result.num_classes)} for z in range(iou.shape[0])]


def _names(result: IoUResult, mask: np.ndarray) -> list[str]:
    return [result.class_names[i] for i in np.flatnonzero(mask)]


def result_to_dict(result: IoUResult) -> dict[str, Any]:
    """The JSON-able report of one result (pooled results include their scans)."""
    out: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "bone_avizo_version": __version__,
        "mean_iou": result.mean_iou, "mean_iou_foreground": result.mean_iou_foreground,
        "mean_dice": result.mean_dice, "mean_dice_foreground": result.mean_dice_foreground,
        "num_classes": result.num_classes, "class_names": list(result.class_names),
        "per_class": _per_class(result), "undefined_policy": UNDEFINED_POLICY,
        "absent_from_reference": _names(result, result.absent_from_reference),
        "never_predicted": _names(result, result.never_predicted),
        "label_maps": {role: {str(k): v for k, v in parse_label_map(result.options.get(f"map_{role}", ()),
                                                                     f"map_{role}").items()}
                       for role in ("prediction", "reference")},
        "confusion_matrix": result.confusion.tolist(),
        "confusion_matrix_layout": "rows: reference class, columns: predicted class (voxel counts)",
        "voxels_counted": result.voxels_counted, "ignore_label": result.ignore_label,
        "inputs": dict(result.inputs), "shape": list(result.shape) if result.shape else None,
        "voxel_size": list(result.voxel_size) if result.voxel_size else None, "unit": result.unit,
        "per_slice": _per_slice(result), "surface": result.surface, "options": dict(result.options),
    }
    if result.scans:
        out["pooled"] = "confusion matrices of all scans summed, then scored"
        out["mean_of_scan_means"] = result.scan_means()
        out["scans"] = [result_to_dict(scan) for scan in result.scans]
    return out


# ---------------------------------------------------------------------------------------------
# writing
def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``<path>.partial`` and rename it to ``path`` (replacing an older file)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputWriteError(f"cannot write {path}: folder {folder} does not exist; create it first")
    temp = partial_path(path)
    try:
        temp.write_text(text, encoding="utf-8", newline="")
        replace_path(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}; check permissions and free "
                               "space") from exc
    return path


def to_json(result: IoUResult) -> str:
    """The report as JSON text (NaN never appears: undefined values are null)."""
    return json.dumps(result_to_dict(result), indent=2, allow_nan=False) + "\n"


def write_json(result: IoUResult, path: str | os.PathLike) -> Path:
    """Write :func:`to_json` to ``path`` atomically; returns the path."""
    return write_text_atomic(path, to_json(result))


def _scan_label(result: IoUResult) -> str:
    return str(result.inputs.get("prediction") or result.inputs.get("scans") or "")


def _results(result: IoUResult) -> Iterable[tuple[str, IoUResult]]:
    for scan in result.scans:
        yield _scan_label(scan), scan
    yield ("pooled" if result.scans else _scan_label(result)), result


def _csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def to_csv(result: IoUResult) -> str:
    """Per-class rows (``scan`` = prediction name, or 'pooled'); empty cells are undefined values."""
    rows = ([label, *row.values()] for label, r in _results(result) for row in class_rows(r))
    return _csv_text(["scan", "index", "name", *CLASS_COLUMNS], rows)


def write_csv(result: IoUResult, path: str | os.PathLike) -> Path:
    """Write :func:`to_csv` (per-class rows) to ``path`` atomically; returns the path."""
    return write_text_atomic(path, to_csv(result))


def to_slice_csv(result: IoUResult) -> str:
    """Per-slice rows: scan, z, mean IoU (all classes, foreground) and the IoU of each class."""
    header = ["scan", "z", "mean_iou", "mean_iou_foreground", *[f"iou_{name}" for name in result.class_names]]
    rows = []
    for label, r in _results(result):
        for item in _per_slice(r) or []:
            iou = item["iou"] + [None] * (result.num_classes - r.num_classes)
            rows.append([label, item["z"], item["mean_iou"], item["mean_iou_foreground"], *iou])
    return _csv_text(header, rows)


def write_slice_csv(result: IoUResult, path: str | os.PathLike) -> Path:
    """Write the per-slice IoU table (one row per slice and class) to ``path`` atomically; returns the path."""
    return write_text_atomic(path, to_slice_csv(result))


# ---------------------------------------------------------------------------------------------
# printed table
def _fmt(value: Any, digits: int = 4, style: str = "f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}{style}}"
    return str(value)


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            .rstrip() for row in rows]


def _class_table(result: IoUResult) -> str:
    """Aligned plain-text table of the per-class scores and both means."""
    head = ["class", "name", "IoU", "Dice", "precision", "recall", "ref voxels", "pred voxels", "ref mm^3",
            "pred mm^3"]
    rows = [head] + [[str(r["index"]), r["name"], _fmt(r["iou"]), _fmt(r["dice"]), _fmt(r["precision"]),
                      _fmt(r["recall"]), str(r["voxels_reference"]), str(r["voxels_prediction"]),
                      _fmt(r["volume_mm3_reference"], 6, "g"), _fmt(r["volume_mm3_prediction"], 6, "g")]
                     for r in class_rows(result)]
    lines = _align(rows)
    lines.append(f"mean IoU (all classes, incl. background): {_fmt(result.mean_iou)}   "
                 f"foreground: {_fmt(result.mean_iou_foreground)}   "
                 f"mean Dice: {_fmt(result.mean_dice)} / {_fmt(result.mean_dice_foreground)}")
    lines += class_notes(result)
    return "\n".join(lines)


def class_notes(result: IoUResult) -> list[str]:
    """Lines naming the classes one side lacks and the other undefined classes (see UNDEFINED_POLICY)."""
    predicted = result.scores["voxels_prediction"]
    absent = result.absent_from_reference & (predicted > 0)
    notes = []
    if absent.any():
        items = [f"{i} {result.class_names[i]} ({predicted[i]} predicted voxels)" for i in np.flatnonzero(absent)]
        notes.append(f"absent from the reference, not scored and left out of the means: {', '.join(items)}; "
                     "its voxels count as errors of the classes they cover (--map-prediction SRC:DST counts them "
                     "as class DST)")
    missed = _names(result, result.never_predicted)
    if missed:
        notes.append(f"never predicted, IoU 0 counted in the means: {', '.join(missed)} (if the model has no such "
                     "class, relabel the reference with --map-reference SRC:DST)")
    undefined = _names(result, np.isnan(result.iou) & ~absent)
    if undefined:
        notes.append(f"undefined (left out of the means): {', '.join(undefined)}")
    return notes


def _surface_lines(result: IoUResult) -> list[str]:
    s = result.surface
    if not s:
        return []
    line = (f"surface distances of class {s['class']} ({s.get('name')}), {s['computed_on']}: "
            f"mean {_fmt(s['mean_surface_distance'], 6, 'g')} {s['unit']}, HD95 {_fmt(s['hd95'], 6, 'g')} {s['unit']}, "
            f"Hausdorff {_fmt(s['hausdorff'], 6, 'g')} {s['unit']}")
    return [line + (f" ({s['note']})" if s.get("note") else "")]


def format_table(result: IoUResult) -> str:
    """The printed report: per-scan summaries (several scans), then the per-class table."""
    lines = []
    if result.scans:
        rows = [["scan", "prediction", "mean IoU", "foreground"]] + [
            [str(i), _scan_label(s), _fmt(s.mean_iou), _fmt(s.mean_iou_foreground)]
            for i, s in enumerate(result.scans)]
        lines += _align(rows) + [""]
        means = result.scan_means()
        lines.append(f"pooled over {len(result.scans)} scans (confusion matrices summed); mean of per-scan means: "
                     f"{_fmt(means['mean_iou'])}, foreground {_fmt(means['mean_iou_foreground'])}")
        for scan in result.scans:
            lines += _surface_lines(scan)
    else:
        lines.append(f"prediction: {result.inputs.get('prediction')}   reference: {result.inputs.get('reference')}"
                     + (f"   roi: {result.inputs['roi']}" if result.inputs.get("roi") else ""))
        lines.append(f"shape (z, y, x): {result.shape}   voxels counted: {result.voxels_counted}")
        lines += _surface_lines(result)
    lines.append(_class_table(result))
    return "\n".join(lines)


def iou_summary(result: IoUResult) -> str:
    """One line for a face's status: ``mean IoU 0.8123 (all classes), foreground 0.7541; mean Dice 0.88 / 0.85``."""
    return (f"mean IoU {_fmt(result.mean_iou)} (all classes), foreground {_fmt(result.mean_iou_foreground)}; "
            f"mean Dice {_fmt(result.mean_dice)} / {_fmt(result.mean_dice_foreground)}")
