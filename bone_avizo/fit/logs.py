"""Per-epoch training logs beside the model file: CSV, JSON, optional TensorBoard, PNG curves.

For a model ``bone.safetensors`` the run writes ``bone.safetensors.history.csv`` and
``.history.json`` (rewritten atomically after every epoch), ``.curves.png`` (loss and IoU per
epoch; skipped with a log message when matplotlib is missing) and, with ``tensorboard``, event
files in ``.tensorboard/`` (skipped with a message when the tensorboard package is missing).
"""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from bone_avizo.io.base import partial_path, replace_path

log = logging.getLogger(__name__)


def log_paths(model_path: Path) -> dict[str, Path]:
    base = model_path.name
    return {key: model_path.with_name(f"{base}.{suffix}") for key, suffix in
            (("csv", "history.csv"), ("json", "history.json"), ("png", "curves.png"),
             ("tensorboard", "tensorboard"))}


def _write_text(path: Path, text: str) -> None:
    temp = partial_path(path)
    temp.write_text(text, encoding="utf-8")
    replace_path(temp, path)


def _flat(row: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if not isinstance(v, (list, dict))}
    for name, value in zip(class_names, row.get("val_iou") or []):
        flat[f"val_iou_{name}"] = value
    return flat


def _history_csv(history: Sequence[dict[str, Any]], class_names: Sequence[str]) -> str:
    rows = [_flat(r, class_names) for r in history]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return out.getvalue()


class RunLog:
    """Writes the logs of one run (rank 0 only)."""

    def __init__(self, model_path: Path, class_names: Sequence[str], *, tensorboard: bool, plot: bool):
        self.paths = log_paths(Path(model_path))
        self.class_names = tuple(class_names)
        self.plot = plot
        self._tb = self._open_tensorboard() if tensorboard else None

    def _open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("TensorBoard logs skipped: the tensorboard package is not installed "
                        "(pip install tensorboard)")
            return None
        return SummaryWriter(str(self.paths["tensorboard"]))

    def start(self) -> None:
        """Mark a fresh run as started: empty history files (see :func:`started_without_epochs`)."""
        self.epoch([])

    def epoch(self, history: Sequence[dict[str, Any]]) -> None:
        """Record the history up to the epoch just finished."""
        _write_text(self.paths["csv"], _history_csv(history, self.class_names))
        _write_text(self.paths["json"], json.dumps(list(history), indent=1) + "\n")
        if self._tb is not None and history:
            row = history[-1]
            for key, value in _flat(row, self.class_names).items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._tb.add_scalar(key, value, row["epoch"])
            self._tb.flush()

    def finish(self, history: Sequence[dict[str, Any]]) -> Path | None:
        if self._tb is not None:
            self._tb.close()
        if self.plot and history:
            return _plot_curves(history, self.paths["png"], self.class_names)
        return None


def started_without_epochs(model_path: Path) -> bool:
    """True when a run writing ``model_path`` started but finished no epoch (its JSON history is an
    empty list): such a run, killed before its first checkpoint, can be started afresh."""
    path = log_paths(Path(model_path))["json"]
    try:
        return path.is_file() and json.loads(path.read_text(encoding="utf-8")) == []
    except (OSError, ValueError):
        return False


def _plot_curves(history: Sequence[dict[str, Any]], path: Path, class_names: Sequence[str]) -> Path | None:
    """PNG with the training/validation loss (left) and validation IoU (right) per epoch."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("curve plot skipped: matplotlib is not installed (pip install matplotlib)")
        return None
    fig = curves_figure(plt, history, class_names)
    temp = partial_path(path)
    fig.savefig(temp, format="png", dpi=100)
    plt.close(fig)
    replace_path(temp, path)
    return path


def curves_figure(plt, history: Sequence[dict[str, Any]], class_names: Sequence[str]):
    """The figure of :func:`_plot_curves` (x axis: whole epochs only, also for a single epoch)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    if any(r.get("val_mean_iou") is not None for r in history):
        ax_iou.plot(epochs, [r.get("val_mean_iou") for r in history], marker="o", label="mean IoU (all classes)")
        ax_iou.plot(epochs, [r.get("val_mean_iou_fg") for r in history], marker="o", label="mean IoU (no background)")
        for k, name in enumerate(class_names):
            ax_iou.plot(epochs, [(r.get("val_iou") or [None] * len(class_names))[k] for r in history],
                        linestyle="--", label=f"IoU {name}")
        ax_iou.legend(fontsize="small")
    else:
        ax_iou.text(0.5, 0.5, "no validation scans", ha="center", va="center", transform=ax_iou.transAxes)
    ax_iou.set_xlabel("epoch")
    ax_iou.set_ylabel("validation IoU")
    for ax in (ax_loss, ax_iou):
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        # min_n_ticks=1: with fewer than two whole epochs in view MaxNLocator would fall back to fractions
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.tight_layout()
    return fig
