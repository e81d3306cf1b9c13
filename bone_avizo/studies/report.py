"""Study outputs: statistics over folds and scans, CSV and text/Markdown tables, and the PNG figures
(a box plot of per-class IoU over folds, the IoU versus prediction-cost scatter of a benchmark).

Figures are drawn without pyplot (no global state, no display) and written through a temporary name.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bone_avizo.metrics.plot import save_png
from bone_avizo.metrics.report import write_text_atomic


def describe(values: Iterable[float | None]) -> dict[str, Any]:
    """mean, sample standard deviation (ddof=1; None for fewer than 2 values), min, max and n of the
    defined (not None, not NaN) values."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    array = np.asarray(clean)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else None,
            "min": float(array.min()), "max": float(array.max()), "n": int(array.size)}


def flat_scores(scores: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'mean_iou', 'mean_iou_fg', 'iou': {class: v}} -> flat columns mean_iou, mean_iou_fg, iou_<class>."""
    out = {f"{prefix}mean_iou": scores.get("mean_iou"), f"{prefix}mean_iou_fg": scores.get("mean_iou_fg")}
    out.update({f"{prefix}iou_{name}": value for name, value in (scores.get("iou") or {}).items()})
    return out


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return value


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows (dicts) as CSV; columns default to the keys in first-seen order; None is empty."""
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    return write_text_atomic(path, csv_text(rows, columns))


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, digits: int = 4,
               markdown: bool = False) -> str:
    """An aligned plain-text table, or a Markdown table with ``markdown``."""
    cells = [[_fmt(r.get(c), digits) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# figures
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def boxplot_png(path: str | os.PathLike, groups: dict[str, Sequence[float | None]],
                points: dict[str, Sequence[float | None]], *, title: str, ylabel: str = "IoU") -> Path:
    """Boxes of ``groups`` (label -> values, e.g. IoU of each fold) with ``points`` (e.g. each scan's
    IoU) drawn over them, jittered; undefined values are left out."""
    fig = _figure(1.6 + 1.3 * len(groups), 4.2)
    ax = fig.subplots()
    labels = list(groups)
    data = [[v for v in groups[k] if v is not None] or [float("nan")] for k in labels]
    ax.boxplot(data, showmeans=True, widths=0.5)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    jitter = np.random.default_rng(0)
    for i, label in enumerate(labels, start=1):
        values = [v for v in points.get(label, ()) if v is not None]
        if values:
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.6, color="tab:red",
                       zorder=3, label="scans" if i == 1 else None)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=9)
    if any(points.values()):
        ax.legend(fontsize=7, loc="lower left")
    return save_png(fig, path)


def _scatter_panel(ax, rows: Sequence[dict[str, Any]], x_key: str, xlabel: str) -> None:
    markers = "osD^v<>ph*"
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    for r in rows:
        x, y = r.get(x_key), r.get("mean_iou")
        if x is None or y is None or x <= 0:
            continue
        ax.scatter(x, y, marker=markers[archs.index(r["arch"]) % len(markers)], s=36,
                   color=f"C{archs.index(r['arch']) % 10}")
        ax.annotate(f"{r['encoder']} p{r['patch_size']}", (x, y), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    for i, arch in enumerate(archs):
        ax.scatter([], [], marker=markers[i % len(markers)], color=f"C{i % 10}", label=arch)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean IoU (test scans, pooled)")
    ax.grid(alpha=0.3, which="both")


def tradeoff_png(path: str | os.PathLike, rows: Sequence[dict[str, Any]], *, title: str) -> Path:
    """The performance-efficiency figure: mean IoU against the theoretical cost (GFLOPs per million
    voxels) and against the measured prediction time (seconds per million voxels), one point per cell."""
    done = [r for r in rows if r.get("status") == "done"]
    fig = _figure(11, 4.4)
    left, right = fig.subplots(1, 2)
    _scatter_panel(left, done, "gflops_per_mvoxel", "GFLOPs per million voxels (network, one pass)")
    _scatter_panel(right, done, "predict_s_per_mvoxel", "prediction time, s per million voxels (measured)")
    left.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
