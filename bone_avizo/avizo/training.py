"""What BONeDLFit reads and writes: training pairs from its ports, fields staged as files, the model
file put in place only when training completes, and the training history as text and table.

Training pairs come from three places, in this order: the connected (scan, label field) pairs,
the chosen image and label files (paired in order), and BONe's folder layout (an image folder and
a mask folder). :func:`training_inputs` checks them all before any work.

The core trains from files (:class:`~bone_avizo.data.scans.ScanSpec`), reading slices lazily;
connected fields are therefore written as ``.npy`` volumes (with their class names in the
``.npy.json`` sidecar) into a staging folder beside the model file, where the core also writes
the model, its checkpoint and its logs. :class:`FitStaging` moves those next to the chosen model
file only when training has completed, and removes the staging folder in every case, so a
cancelled or failed run leaves nothing behind and the previous model file, checkpoint and logs
untouched. Nothing here imports torch at import time.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bone_avizo.avizo.fields import field_to_volume, is_label_field
from bone_avizo.avizo.inputs import MissingInputError, chosen_file, connected_field, volume_stem
from bone_avizo.avizo.ports import toggle_checked
from bone_avizo.errors import ConfigError, OutputExistsError, ShapeMismatchError

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".fitting"
SCANS_FOLDER = "scans"


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

    ``field_pairs``: (scan field, label field) per connected pair, in port order; ``held_out``: for
    each of them, True when it is a validation scan. ``files`` / ``val_files``: ScanSpecs of the
    training / validation volumes chosen on disk.
    """

    field_pairs: list[tuple[Any, Any]] = field(default_factory=list)
    held_out: list[bool] = field(default_factory=list)
    files: list = field(default_factory=list)
    val_files: list = field(default_factory=list)


def check_pair(scan: Any, labels: Any, label_port: Any) -> None:
    """A scan field and its label field: a label field of the scan's dimensions."""
    if not is_label_field(labels):
        raise MissingInputError(
            f"{labels.name} in the {_title(label_port)} port is not a label field; connect the label field made "
            f"for {scan.name} (a mask opened as a grey-value field: convert it to a label field, or choose its "
            "file in Label files)")
    scan_shape, label_shape = tuple(scan.get_array().shape), tuple(labels.get_array().shape)
    if scan_shape != label_shape:
        raise ShapeMismatchError(
            f"{scan.name} has {' x '.join(map(str, scan_shape))} voxels (x, y, z) but its label field "
            f"{labels.name} has {' x '.join(map(str, label_shape))}; connect the label field made for this scan")


def connected_pairs(pairs: Sequence[tuple[Any, Any]]) -> list[tuple[int, Any, Any]]:
    """(index, scan field, label field) of every connected pair of (scan port, label port).

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
        check_pair(scan, labels, label_port)
        found.append((index, scan, labels))
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

    roots = [(_file_names(port) or [None])[0] for port in (image_root_port, mask_root_port)]
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
    found = connected_pairs(pairs)
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
def side_files(output: Path) -> list[Path]:
    """The files a run writes beside the model file ``output`` (checkpoint and logs)."""
    from bone_avizo.fit import checkpoint_path
    from bone_avizo.fit.logs import log_paths

    return [checkpoint_path(output), *log_paths(output).values()]


class FitStaging:
    """A staging folder beside the model file ``output`` for one training run (a context manager).

    ``scans(inputs)`` writes the connected fields there and returns (train, validation) ScanSpecs;
    the core writes its model, checkpoint and logs to ``self.output`` inside the folder;
    ``commit()`` moves them beside ``output`` (the model last, replacing the previous run's files).
    The folder is removed on exit, whatever happened.
    """

    def __init__(self, output: str | os.PathLike, *, overwrite: bool, reads: Sequence[Path] = ()):
        from bone_avizo.io.base import check_outputs_spare_inputs

        self.target = Path(output)
        check_outputs_spare_inputs({"model file": [self.target, *side_files(self.target)]}, {"input": list(reads)})
        existing = [p for p in (self.target, side_files(self.target)[0]) if p.exists()]
        if existing and not overwrite:
            raise OutputExistsError(f"{existing[0]} already exists; tick Overwrite to replace the model file, its "
                                    "checkpoint and logs, or choose another model file")
        self.folder: Path | None = None

    def __enter__(self) -> "FitStaging":
        from bone_avizo.errors import OutputWriteError

        try:
            self.folder = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=STAGING_SUFFIX,
                                                dir=self.target.parent))
        except OSError as exc:
            raise OutputWriteError(f"cannot write into {self.target.parent}: {exc.strerror or exc}; choose a "
                                   "model file in a writable folder") from exc
        return self

    def __exit__(self, *exc) -> bool:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        return False

    @property
    def output(self) -> Path:
        """Where the core writes the model during the run."""
        return self.folder / self.target.name

    def scans(self, inputs: TrainingInputs) -> tuple[list, list]:
        """(train, validation) ScanSpecs: the connected fields written as .npy files, then the files."""
        from bone_avizo.data.scans import ScanSpec, unique_names
        from bone_avizo.io import save_volume

        folder = self.folder / SCANS_FOLDER
        folder.mkdir()
        train, validation = [], []
        for k, ((scan, labels), held_out) in enumerate(zip(inputs.field_pairs, inputs.held_out)):
            image = save_volume(field_to_volume(scan), folder / f"{k}_image.npy")
            label = save_volume(field_to_volume(labels), folder / f"{k}_labels.npy")
            spec = ScanSpec(image, label, volume_stem(scan.name) or f"scan{k + 1}")
            (validation if held_out else train).append(spec)
        specs = unique_names(train + list(inputs.files) + validation + list(inputs.val_files))
        n_train = len(train) + len(inputs.files)
        return specs[:n_train], specs[n_train:]

    def commit(self) -> Path:
        """Move the model, checkpoint and logs beside the chosen model file (the model last); old side
        files this run did not make (e.g. a plot no longer asked for) are removed."""
        from bone_avizo.io.base import remove_path, replace_path

        for made, final in zip(side_files(self.output), side_files(self.target)):
            if made.exists():
                replace_path(made, final)
            elif final.exists():
                remove_path(final)
        replace_path(self.output, self.target)
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
