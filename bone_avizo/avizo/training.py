"""What BONeDLFit reads and writes: training pairs from its ports, the model file put in place only
when training completes, a resumable training folder, and the training history as text and table.

Training pairs come from three places, in this order: the connected (scan, label field) pairs,
the chosen image and label files (paired in order), and BONe's folder layout (an image folder and
a mask folder). :func:`training_inputs` checks them all before any work.

Connected fields are read once (``get_array`` once per field) and trained on where they are, as
in-memory sources (:class:`~bone_avizo.data.scans.ScanSpec` takes them); files are read lazily.
The core writes the model, its checkpoint and its logs into the training folder
``<model file>.fitting`` beside the model file; :class:`FitStaging` moves them next to the chosen
model file only when training has completed. A run stopped early keeps that folder when it holds
a checkpoint (Resume continues it), so the previous model file, checkpoint and logs stay
untouched. Nothing here imports torch at import time.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bone_avizo.avizo.fields import field_to_volume, is_label_field
from bone_avizo.avizo.inputs import MissingInputError, chosen_file, connected_field, volume_stem
from bone_avizo.avizo.ports import toggle_checked
from bone_avizo.errors import ConfigError, OutputExistsError, ShapeMismatchError

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".fitting"


def _title(port: Any) -> str:
    return str(getattr(port, "label", "") or getattr(port, "name", "input"))


def _file_names(port: Any) -> list[str]:
    """The names an HxPortFilename holds: [] when empty, one or several (multi-file mode)."""
    names = port.filenames
    if names is None:
        return []
    names = [names] if isinstance(names, str) else list(names)
    return [os.path.expanduser(str(n).strip()) for n in names if str(n).strip()]


# ---------------------------------------------------------------------------------------------
# inputs
@dataclass
class TrainingInputs:
    """The pairs a DLFit run trains and validates on.

    ``field_pairs``: (scan, labels) Volumes (z, y, x) of each connected pair, in port order, each
    field's array read once (views of Avizo's memory where it allows); ``held_out``: for
    each of them, True when it is a validation scan. ``files`` / ``val_files``: ScanSpecs of the
    training / validation volumes chosen on disk.
    """

    field_pairs: list[tuple[Any, Any]] = field(default_factory=list)
    held_out: list[bool] = field(default_factory=list)
    files: list = field(default_factory=list)
    val_files: list = field(default_factory=list)


def _check_pair(scan: Any, labels: Any, label_port: Any) -> tuple[Any, Any]:
    """A scan field and its label field (a label field of the scan's dimensions) read as Volumes,
    each field's array once."""
    if not is_label_field(labels):
        raise MissingInputError(
            f"{labels.name} in the {_title(label_port)} port is not a label field; connect the label field made "
            f"for {scan.name} (a mask opened as a grey-value field: convert it to a label field, or choose its "
            "file in Label files)")
    scan_volume, label_volume = field_to_volume(scan), field_to_volume(labels)
    scan_shape, label_shape = scan_volume.shape[::-1], label_volume.shape[::-1]
    if scan_shape != label_shape:
        raise ShapeMismatchError(
            f"{scan.name} has {' x '.join(map(str, scan_shape))} voxels (x, y, z) but its label field "
            f"{labels.name} has {' x '.join(map(str, label_shape))}; connect the label field made for this scan")
    return scan_volume, label_volume


def _connected_pairs(pairs: Sequence[tuple[Any, Any]]) -> list[tuple[int, Any, Any]]:
    """(index, scan Volume, label Volume) of every connected pair of (scan port, label port).

    A scan without labels, labels without a scan, a label field as scan, a grey-value field as
    labels and differing dimensions are :class:`~bone_avizo.errors.BoneAvizoError` s naming the port.
    """
    found = []
    for index, (scan_port, label_port) in enumerate(pairs):
        scan, labels = scan_port.source(), label_port.source()
        if scan is None and labels is None:
            continue
        if labels is None:
            raise MissingInputError(f"no label field for {scan.name}: connect its label field to the "
                                    f"{_title(label_port)} port")
        if scan is None:
            raise MissingInputError(f"{labels.name} in the {_title(label_port)} port has no scan: connect the "
                                    f"scan it labels to the {_title(scan_port)} port")
        scan = connected_field(scan_port, "scan", label=False)
        found.append((index, *_check_pair(scan, labels, label_port)))
    return found


def show_pairs(pairs: Sequence[tuple[Any, Any]]) -> None:
    """Show the first pair of connection ports, and each further pair once the pair before it (or
    the pair itself) has a connection."""
    previous_used = True
    for ports in pairs:
        used = any(port.source() is not None for port in ports)
        visible = previous_used or used
        for port in ports:
            if port.visible != visible:
                port.visible = visible
        previous_used = used


def output_file(port: Any, what: str) -> Path:
    """The output file chosen in ``port`` (its folder must exist); MissingInputError when none is."""
    path = chosen_file(port, what, must_exist=False)
    if path is None:
        raise MissingInputError(f"no {what} chosen: choose where to save it in the {_title(port)} port")
    return path


def file_pairs(image_port: Any, label_port: Any) -> list:
    """ScanSpecs of the files chosen in two multi-file ports, paired in order ([] when both are empty)."""
    from bone_avizo.data.scans import pair_specs

    images, labels = _file_names(image_port), _file_names(label_port)
    if not images and not labels:
        return []
    return pair_specs(images, labels, flags=(_title(image_port), _title(label_port)))


def folder_pairs(image_root_port: Any, mask_root_port: Any) -> list:
    """ScanSpecs of BONe's layout (one folder of TIFF slices per scan below the image folder, its masks
    at the same place below the mask folder); [] when neither folder is chosen."""
    from bone_avizo.data.scans import discover_scan_folders

    roots = [next(iter(_file_names(port)), None) for port in (image_root_port, mask_root_port)]
    if roots == [None, None]:
        return []
    if None in roots:
        raise ConfigError(f"{_title(image_root_port)} and {_title(mask_root_port)} go together; choose both "
                          "folders, or neither")
    return discover_scan_folders(*roots)


def files_read(inputs: "TrainingInputs", config: Any) -> list[Path]:
    """The files a run reads: the scans and label volumes chosen on disk, and a model file as weights."""
    specs = [*inputs.files, *inputs.val_files]
    weights = Path(str(config.weights))
    return [p for s in specs for p in (s.image, s.labels)] + ([weights] if weights.is_file() else [])


def training_inputs(pairs: Sequence[tuple[Any, Any]], *, validation: Any = None, files: Sequence = (),
                    val_files: Sequence = ()) -> TrainingInputs:
    """Everything a run trains on: the connected ``pairs`` ((scan port, label port) each), the
    ``validation`` toggles (one per pair; ticked pairs validate) and ScanSpecs chosen on disk.

    Raises :class:`MissingInputError` when nothing is given or every scan would validate.
    """
    found = _connected_pairs(pairs)
    toggles = list(getattr(validation, "toggles", []) or [])
    held_out = [index < len(toggles) and toggle_checked(toggles[index]) for index, _, _ in found]
    inputs = TrainingInputs([(scan, labels) for _, scan, labels in found], held_out, list(files), list(val_files))
    if not inputs.field_pairs and not inputs.files:
        first_scan, first_labels = pairs[0]
        raise MissingInputError(
            f"no training scans: connect a scan to the {_title(first_scan)} port and its label field to the "
            f"{_title(first_labels)} port, or choose image and label files, or image and mask folders")
    if all(held_out) and not inputs.files:
        raise MissingInputError("every connected scan is ticked in Validation; leave at least one for training")
    return inputs


# ---------------------------------------------------------------------------------------------
# the staging folder
def _side_files(output: Path) -> list[Path]:
    """The files a run writes beside the model file ``output`` (checkpoint, then logs)."""
    from bone_avizo.fit.checkpoint import side_files

    return side_files(output)


class FitStaging:
    """The training folder ``<model file>.fitting`` beside the model file (a context manager).

    ``scans(inputs)`` returns (train, validation) ScanSpecs: connected fields as in-memory sources
    (read where they are, never copied to files) and the chosen files. The core writes the model,
    its checkpoint and its logs to ``self.output`` inside the folder; ``commit()`` moves them beside
    the chosen model file (the model last, replacing the previous run's files) and removes the folder.
    A run that stops early (Stop, an error, Avizo closed) keeps the folder when it holds a
    checkpoint, where the user sees it: ``resume=True`` continues that run; otherwise the folder is
    removed. The previous model file, checkpoint and logs are untouched until ``commit()``.
    """

    def __init__(self, output: str | os.PathLike, *, overwrite: bool, resume: bool = False,
                 reads: Sequence[Path] = ()):
        from bone_avizo.io.base import check_outputs_spare_inputs

        self.target = Path(output)
        check_outputs_spare_inputs({"model file": [self.target, *_side_files(self.target)]}, {"input": list(reads)})
        self.folder = self.target.with_name(self.target.name + STAGING_SUFFIX)
        self.resume = resume
        kept = _side_files(self.output)[0]
        if resume and not kept.exists():
            raise MissingInputError(f"nothing to resume: no interrupted training of {self.target.name} in "
                                    f"{self.folder}; untick Resume to start a new run")
        if not resume and kept.exists() and not overwrite:
            raise OutputExistsError(f"an interrupted training of {self.target.name} is kept in {self.folder}; tick "
                                    "Resume to continue it, or Overwrite to start again")
        existing = [p for p in (self.target, _side_files(self.target)[0]) if p.exists()]
        if existing and not overwrite and not resume:
            raise OutputExistsError(f"{existing[0]} already exists; tick Overwrite to replace the model file, its "
                                    "checkpoint and logs, or choose another model file")
        self._committed = False

    def __enter__(self) -> "FitStaging":
        from bone_avizo.errors import OutputWriteError

        try:
            if not self.resume and self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(exist_ok=self.resume)
        except OSError as exc:
            raise OutputWriteError(f"cannot write into {self.target.parent}: {exc.strerror or exc}; choose a "
                                   "model file in a writable folder") from exc
        return self

    def __exit__(self, *exc) -> None:
        if self._committed or not self.resumable:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            log.warning("training stopped early: its checkpoint is kept in %s; tick Resume and press Apply to "
                        "continue it", self.folder)

    @property
    def output(self) -> Path:
        """Where the core writes the model during the run."""
        return self.folder / self.target.name

    @property
    def resumable(self) -> bool:
        """True when the folder holds a checkpoint a later run can continue."""
        return _side_files(self.output)[0].exists()

    def scans(self, inputs: TrainingInputs) -> tuple[list, list]:
        """(train, validation) ScanSpecs: the connected fields in memory, then the files."""
        from bone_avizo.data.scans import ScanSpec, unique_names
        from bone_avizo.io.base import ArraySource

        train: list[ScanSpec] = []
        validation: list[ScanSpec] = []
        for k, ((scan, labels), held_out) in enumerate(zip(inputs.field_pairs, inputs.held_out)):
            spec = ScanSpec(ArraySource(scan), ArraySource(labels), volume_stem(scan.name) or f"scan{k + 1}")
            (validation if held_out else train).append(spec)
        specs = unique_names(train + list(inputs.files) + validation + list(inputs.val_files))
        n_train = len(train) + len(inputs.files)
        return specs[:n_train], specs[n_train:]

    def commit(self) -> Path:
        """Move the model, checkpoint and logs beside the chosen model file (the model last); old side
        files this run did not make (e.g. a plot no longer asked for) are removed."""
        from bone_avizo.io.base import remove_path, replace_path

        for made, final in zip(_side_files(self.output), _side_files(self.target)):
            if made.exists():
                replace_path(made, final)
            elif final.exists():
                remove_path(final)
        replace_path(self.output, self.target)
        self._committed = True
        return self.target


# ---------------------------------------------------------------------------------------------
# the history
HISTORY_TABLE = "history"


def _number(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def history_tables(history: Sequence[dict], class_names: Sequence[str]) -> dict[str, dict[str, list]]:
    """{"history": {column: values}}: one row per epoch with epoch, train_loss, lr, val_mean_iou,
    val_mean_iou_fg, val_iou_<class> (validation columns only when there was validation) and seconds."""
    columns: dict[str, list] = {"epoch": [int(r["epoch"]) for r in history],
                                "train_loss": [_number(r.get("train_loss")) for r in history],
                                "lr": [_number(r.get("lr")) for r in history]}
    if any(r.get("val_mean_iou") is not None for r in history):
        for key in ("val_mean_iou", "val_mean_iou_fg"):
            columns[key] = [_number(r.get(key)) for r in history]
        for k, name in enumerate(class_names):
            columns[f"val_iou_{name}"] = [_number((r.get("val_iou") or [None] * (k + 1))[k]) for r in history]
    columns["seconds"] = [_number(r.get("seconds")) for r in history]
    return {HISTORY_TABLE: columns}


def history_name(model_path: str | os.PathLike) -> str:
    """The spreadsheet name for the history of ``model_path``: ``bone.safetensors`` -> ``bone.history``."""
    return f"{Path(model_path).stem}.{HISTORY_TABLE}"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def history_text(result: Any, model_path: str | os.PathLike) -> str:
    """The history as a small text table (epoch, loss, validation mean IoU) and the best epoch."""
    lines = [f"{'epoch':>5}  {'loss':>8}  {'val mean IoU':>12}"]
    for row in result.history:
        lines.append(f"{row['epoch']:>5}  {_fmt(_number(row.get('train_loss'))):>8}  "
                     f"{_fmt(_number(row.get('val_mean_iou'))):>12}")
    best = "no validation scans" if result.best_score is None else f"val mean IoU {result.best_score:.4f}"
    lines.append(f"best epoch {result.best_epoch} ({best}); {result.seconds:.1f} s; model {model_path}")
    return "\n".join(lines)
