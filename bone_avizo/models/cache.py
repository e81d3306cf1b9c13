"""A model file loaded once per version, and a few lines describing it, for the faces' model choosers.

Nothing here imports torch at import time (a face shows its options before any model is chosen).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bone_avizo.errors import InputFileError


class ModelCache:
    """The model named by a file chooser (a port, a widget), loaded once per version of the file (path, size, time).

    ``load(path)`` returns a :class:`~bone_avizo.models.LoadedModel`; the same object is returned
    until the file changes, so choosing a model (to see its metadata) and pressing Apply read it once.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._model = None

    def load(self, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"model file {path} does not exist; choose an existing file")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key != self._key:
            from bone_avizo.models import load_model

            self._model = self._key = None  # let the previous model go before the next one is read
            self._model = load_model(path)
            self._key = key
        return self._model


def describe_model(loaded: Any) -> str:
    """A few lines on a loaded model for a face to show: network, classes, input, training."""
    from bone_avizo.models import model_summary

    s = model_summary(loaded)
    kind = "2D" if s["context_slices"] == 1 else f"2.5D, {s['context_slices']} slices"
    lines = [f"{s['arch']} / {s['encoder']} ({s['format']}, {s['parameters']:,} parameters)",
             f"{_classes(s['num_classes'])}: {', '.join(s['class_names'])}",
             f"input: {kind}, patch {s['patch_size']} px, {s['normalization']} normalisation, "
             f"trained on planes {', '.join(s['planes'])}"]
    training = []
    for key, label in (("train_scans", "training scans"), ("val_scans", "validation scans")):
        value = s.get(key)
        if value:
            training.append(f"{label}: {len(value) if isinstance(value, (list, tuple)) else value}")
    if s.get("best_val_score") is not None:
        training.append(f"best validation IoU {float(s['best_val_score']):.4f}"
                        + (f" (epoch {s['best_epoch']})" if s.get("best_epoch") is not None else ""))
    if training:
        lines.append("; ".join(training))
    return "\n".join(lines)


def _classes(num_classes: int) -> str:
    """How a face names the model's outputs: '3 classes', or binary for one sigmoid output."""
    return "binary (one sigmoid output), 2 labels" if num_classes == 1 else f"{num_classes} classes"
