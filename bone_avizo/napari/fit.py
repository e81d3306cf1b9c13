"""The Fit dock widget (DLFit): labelled scans (layer pairs or file pairs) -> a model file.

Pairs are added one by one (an Image layer or a file, a Labels layer or a file; optionally marked as a
validation scan). The scan-level split the run will use (which scans train, which validate) is shown
as the pairs and the split options change. Training runs in the background; the loss and validation
IoU curve is redrawn after every epoch from the run's ``<model>.history.json``. The model file holds
the best epoch so far from the first epoch on, so Cancel keeps it, with the checkpoint that Resume
continues from. The options are the CLI's (``bone-avizo fit --help``) but ``num_workers``: loader
processes would start copies of the viewer where Python spawns them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bone_avizo.config import FitConfig
from bone_avizo.errors import BoneAvizoError, Cancelled, ConfigError
from bone_avizo.napari.choosers import FROM_FILE, VolumeChooser, chosen_path, layer_file, output_path
from bone_avizo.napari.jobs import JobPanel
from bone_avizo.napari.layers import layer_source
from bone_avizo.napari.plots import PlotCanvas
from bone_avizo.napari.widgets import DockWidget, wrapping

WITHOUT_WIDGET = ("num_workers",)
SPLIT_OPTIONS = ("val_fraction", "folds", "fold", "seed")


@dataclass(frozen=True)
class Pair:
    """One labelled scan: each side a layer name or a file path; ``validation`` marks a validation scan;
    ``title`` names it where the image's name does not (BONe's ``_Scan`` folders)."""

    image: str | Path
    labels: str | Path
    validation: bool = False
    title: str = ""

    @property
    def name(self) -> str:
        return self.title or (self.image if isinstance(self.image, str) else self.image.stem)

    def describe(self) -> str:
        return f"{self.name}: {self.image} + {self.labels}" + ("  [validation]" if self.validation else "")


def _split_text(pairs: list[Pair], config: FitConfig) -> str:
    """Which scans train and which validate, as the run will split them (``make_split``)."""
    from bone_avizo.data.split import make_split

    train = [p for p in pairs if not p.validation]
    validation = [p for p in pairs if p.validation]
    if not train:
        return "split: add at least one training pair"
    scans = train + validation
    try:
        split = make_split(len(scans), n_explicit_val=len(validation), val_fraction=config.val_fraction,
                           folds=config.folds, fold=config.fold, seed=config.seed)
    except BoneAvizoError as exc:
        return f"split: {exc}"
    names = [scans[i].name for i in split.train], [scans[i].name for i in split.val]
    return f"train: {', '.join(names[0])}\nvalidate: {', '.join(names[1]) or 'none (no validation score)'}"


def history_rows(output: Path) -> list[dict[str, Any]]:
    """The epochs the run beside ``output`` has recorded so far ([] before its first)."""
    from bone_avizo.fit.logs import log_paths

    try:
        return json.loads(log_paths(output)["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []


def _draw_history(ax, rows: list[dict[str, Any]]) -> None:
    """Training loss and validation mean IoU against the epoch."""
    epochs = [row["epoch"] for row in rows]
    ax.plot(epochs, [row["train_loss"] for row in rows], "o-", label="training loss")
    scores = [row.get("val_mean_iou") for row in rows]
    if any(score is not None for score in scores):
        ax.plot(epochs, [float("nan") if s is None else s for s in scores], "s-", label="validation mean IoU")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8)


class FitWidget(DockWidget):
    """Pairs of scans and labels + the fit options -> a model file, with the live training curve."""

    TITLE = "fit"

    def __init__(self, napari_viewer: Any):
        from magicgui import widgets

        super().__init__(napari_viewer)
        self.image = VolumeChooser(napari_viewer, "image", "image", labels=False, tooltip="--images: a scan")
        self.labels = VolumeChooser(napari_viewer, "labels", "labels", labels=True,
                                    tooltip="--labels: the scan's label volume (classes 0..N-1)")
        self.validation = widgets.CheckBox(name="validation", label="validation scan",
                                           tooltip="--val-images/--val-labels: validate on this pair (otherwise "
                                                   "the scans are split at scan level, val fraction or folds)")
        self.add_button = widgets.PushButton(text="Add pair", name="add_pair")
        self.pair_list = widgets.Select(name="pairs", label="pairs", choices=[])
        self.image_folders = widgets.FileEdit(name="image_folders", label="image folders", mode="d",
                                              tooltip="--image-folders: BONe's layout, a folder holding one folder "
                                                      "of TIFF slices per scan")
        self.mask_folders = widgets.FileEdit(name="mask_folders", label="mask folders", mode="d",
                                             tooltip="--mask-folders: the parallel folder of mask folders")
        self.add_folders_button = widgets.PushButton(text="Add the folders' scans", name="add_folders")
        self.remove_button = widgets.PushButton(text="Remove selected", name="remove_pairs")
        self.split = wrapping(widgets.Label(value=_split_text([], FitConfig()), name="split"))
        self.output = widgets.FileEdit(name="output", label="model file", mode="w", filter="*.safetensors",
                                       tooltip="--output: the model file to write; checkpoint and logs go beside it")
        self.overwrite = widgets.CheckBox(name="overwrite", label="overwrite",
                                          tooltip="--overwrite: replace an existing model file and checkpoint")
        self.resume = widgets.CheckBox(name="resume", label="resume",
                                       tooltip="--resume: continue the run stopped early from the checkpoint beside "
                                               "the model file (with no pairs: the checkpoint's scans)")
        self.jobs = JobPanel(self.TITLE, "Train")
        self.curve = PlotCanvas()
        self.pairs: list[Pair] = []
        self._history_seen: tuple | None = None
        self.add_button.changed.connect(lambda *_: self.jobs.guard(self.add_chosen_pair))
        self.add_folders_button.changed.connect(lambda *_: self.jobs.guard(self.add_folder_pairs))
        self.remove_button.changed.connect(self.remove_selected)
        self.jobs.run_button.changed.connect(lambda *_: self.jobs.guard(self.run))
        self.jobs.polled.append(self.refresh_curve)
        self.build([*self.image.widgets, *self.labels.widgets, self.validation, self.add_button, self.image_folders,
                    self.mask_folders, self.add_folders_button, self.pair_list, self.remove_button, self.split,
                    self.output, self.overwrite, self.resume], FitConfig,
                   without=WITHOUT_WIDGET, expanded=("validation",), extras=[self.curve.native])
        for name in SPLIT_OPTIONS:
            self.options.widgets[name].changed.connect(self.show_split)

    # -- pairs and split -------------------------------------------------------------------------
    def _side(self, chooser: VolumeChooser) -> str | Path:
        if chooser.combo.value == FROM_FILE:
            path = chosen_path(chooser.file)
            if path is None or not path.exists():
                raise ConfigError(f"{chooser.what}: choose an existing file, or a layer")
            return path
        if chooser.layer() is None:
            raise ConfigError(f"{chooser.what}: choose a layer or a file")
        return chooser.layer().name

    def add_chosen_pair(self) -> Pair:
        return self.add_pair(Pair(self._side(self.image), self._side(self.labels), bool(self.validation.value)))

    def add_folder_pairs(self) -> list[Pair]:
        """Add the scans of BONe's folder layout (a folder of TIFF slices per scan, parallel mask folders)."""
        from bone_avizo.data.scans import discover_scan_folders

        images, masks = chosen_path(self.image_folders), chosen_path(self.mask_folders)
        if images is None or masks is None:
            raise ConfigError("image folders and mask folders go together; choose both")
        validation = bool(self.validation.value)
        return [self.add_pair(Pair(spec.image, spec.labels, validation, spec.name))
                for spec in discover_scan_folders(images, masks)]

    def add_pair(self, pair: Pair) -> Pair:
        self.pairs.append(pair)
        self._show_pairs()
        return pair

    def remove_selected(self, *_: Any) -> None:
        chosen = set(self.pair_list.value)
        self.pairs = [p for p in self.pairs if p.describe() not in chosen]
        self._show_pairs()

    def _show_pairs(self) -> None:
        self.pair_list.choices = [p.describe() for p in self.pairs]
        self.show_split()

    def show_split(self, *_: Any) -> None:
        try:
            config = self.options.config()
        except BoneAvizoError as exc:
            self.split.value = f"split: {exc}"
            return
        self.split.value = _split_text(self.pairs, config)

    # -- training ----------------------------------------------------------------------------------
    def _spec(self, pair: Pair):
        from bone_avizo.data.scans import ScanSpec

        if isinstance(pair.image, Path) and isinstance(pair.labels, Path):
            return ScanSpec(pair.image, pair.labels, pair.title)
        image, labels = (self._source(side, labels=kind) for side, kind in ((pair.image, False), (pair.labels, True)))
        return ScanSpec(image, labels, name=pair.name)

    def _source(self, side: str | Path, *, labels: bool):
        from bone_avizo.io import open_volume

        if isinstance(side, Path):
            return open_volume(side)
        if side not in self.viewer.layers:
            raise ConfigError(f"layer {side!r} of a pair is no longer in the viewer; remove the pair or add the layer")
        return layer_source(self.viewer.layers[side], labels=labels)

    def run(self):
        """Start training on the pairs (errors in the inputs raise before anything starts)."""
        from bone_avizo.fit import checkpoint_path, resume_inputs

        config = self.options.config()
        output = output_path(self.output, "model file")
        if output is None:
            raise ConfigError("model file: choose where to write the model (.safetensors)")
        self._spare_inputs(output, config)
        resume, overwrite = bool(self.resume.value), bool(self.overwrite.value)
        train = [self._spec(p) for p in self.pairs if not p.validation]
        validation = [self._spec(p) for p in self.pairs if p.validation]
        if resume and not train and checkpoint_path(output).exists():
            train, validation, _ = resume_inputs(output)
        if not train:
            raise ConfigError("no training scans: add a pair of a scan and its labels (layers or files)")
        self._history_seen = None
        self.curve.draw(lambda ax: _draw_history(ax, []))

        def task(progress):
            from bone_avizo.fit import fit_model

            return fit_model(train, config, output=output, validation=validation, resume=resume,
                             overwrite=overwrite, progress=progress)

        return self.jobs.start(task, self.show_result, on_failed=lambda exc: self.kept_after(exc, output))

    def _file_of(self, side: str | Path) -> Path | None:
        if isinstance(side, Path):
            return side
        return layer_file(self.viewer.layers[side]) if side in self.viewer.layers else None

    def _spare_inputs(self, output: Path, config: FitConfig) -> None:
        """Refuse a model file, checkpoint or log that would replace a scan's file or the initial weights."""
        from bone_avizo.fit.checkpoint import side_files
        from bone_avizo.io.base import check_outputs_spare_inputs

        weights = Path(str(config.weights))
        check_outputs_spare_inputs(
            {"model file": [output, *side_files(output)]},
            {"scan": [self._file_of(p.image) for p in self.pairs],
             "labels": [self._file_of(p.labels) for p in self.pairs],
             "weights": weights if weights.exists() else None})

    def refresh_curve(self) -> None:
        """Redraw the curve when the run's history file has changed (once per epoch)."""
        output = chosen_path(self.output)
        if output is None:
            return
        from bone_avizo.fit.logs import log_paths

        path = log_paths(output)["json"]
        try:
            stat = path.stat()
        except OSError:
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._history_seen:
            self._history_seen = seen
            rows = history_rows(output)
            self.curve.draw(lambda ax: _draw_history(ax, rows))

    def show_result(self, result) -> None:
        from napari.utils.notifications import show_info

        self.refresh_curve()
        score = f"{result.best_score:.4f}" if result.best_score is not None else "n/a (no validation scans)"
        show_info(f"bone-avizo fit: wrote {result.model_path} (best epoch {result.best_epoch}, validation mean IoU "
                  f"{score}, {result.seconds:.1f} s)")

    def kept_after(self, exc: BaseException, output: Path) -> None:
        """After a cancel: say which model the run keeps (its best epoch so far) and how to continue."""
        from napari.utils.notifications import show_info

        self.refresh_curve()
        if isinstance(exc, Cancelled) and output.is_file():
            rows = history_rows(output)
            show_info(f"bone-avizo fit: {output} keeps the best of the {len(rows)} finished epoch(s); tick resume "
                      "and press Train to continue the run")
