"""A PNG plot of per-slice IoU along z (one panel per scan), to find failing slices.

matplotlib is optional: :func:`require_matplotlib` raises a clear error when it is missing, so a
caller can check before a long computation. The figure is drawn without pyplot (no global state,
no display needed) and written through a temporary name.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bone_avizo.errors import BoneAvizoError, ConfigError, OutputWriteError
from bone_avizo.io.base import partial_path, replace_path
from bone_avizo.metrics.iou import IoUResult

MAX_PANELS = 12


def require_matplotlib() -> None:
    """Raise ConfigError with an install hint when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("the per-slice IoU plot (--plot) needs matplotlib, which is not installed; "
                          "pip install matplotlib, or leave out --plot") from None


def draw_slice_iou(ax, result: IoUResult, title: str) -> None:
    """Draw per-slice IoU against z (each class and the mean) of one scan on matplotlib axes ``ax``."""
    iou = result.slice_scores["iou"]
    z = np.arange(iou.shape[0])
    for c, name in enumerate(result.class_names):
        if not np.all(np.isnan(iou[:, c])):
            ax.plot(z, iou[:, c], lw=0.8, label=f"{c} {name}")
    ax.plot(z, result.slice_mean_iou(), color="black", lw=1.5, label="mean (scored classes)")
    absent = [f"{c} {result.class_names[c]}" for c in np.flatnonzero(result.absent_from_reference)
              if result.scores["voxels_prediction"][c] > 0]
    if absent:  # predicted but absent from the reference: not scored, so not drawn; say so
        ax.text(0.99, 0.02, "not scored (absent from the reference): " + ", ".join(absent),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, max(iou.shape[0] - 1, 1))
    ax.set_ylabel("IoU")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def plot_slice_iou(result: IoUResult, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write a PNG of per-slice IoU (each class and the mean) against z; one panel per scan (max 12)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scans = [s for s in (result.scans or (result,)) if s.per_slice is not None][:MAX_PANELS]
    if not scans:
        raise BoneAvizoError("no per-slice IoU to plot: it was switched off; use --per-slice")
    fig = Figure(figsize=(9, 2.6 * len(scans) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(scans), 1, squeeze=False)[:, 0]
    for i, (ax, scan) in enumerate(zip(axes, scans)):
        mean = scan.mean_iou if scan.mean_iou is not None else float("nan")
        draw_slice_iou(ax, scan, f"scan {i}: {scan.inputs.get('prediction')}  (mean IoU {mean:.4f})")
    axes[-1].set_xlabel("slice z")
    axes[0].legend(fontsize=7, loc="lower left", ncol=4)
    return save_png(fig, path, dpi=dpi)


def save_png(fig, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG through a temporary name; OutputWriteError on failure."""
    path = Path(path)
    temp = partial_path(path)
    try:
        fig.savefig(temp, format="png", dpi=dpi)
        replace_path(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}; check the folder") from exc
    return path
