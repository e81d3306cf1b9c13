"""Widgets that choose a task's inputs and outputs: a layer of the viewer or a file, a file to write."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bone_avizo.errors import InputFileError, OutputWriteError
from bone_avizo.io import open_volume
from bone_avizo.io.base import VolumeSource
from bone_avizo.napari.layers import layer_source

FROM_FILE = "(a file)"
NOTHING = "(none)"


def chosen_path(edit: Any) -> Path | None:
    """The path a magicgui FileEdit holds, or None when it is empty."""
    text = str(edit.line_edit.value).strip()
    return Path(text).expanduser() if text and text != "." else None


def output_path(edit: Any, what: str) -> Path | None:
    """The output path chosen in ``edit`` (None when empty); its folder must exist."""
    path = chosen_path(edit)
    if path is not None and not path.resolve().parent.is_dir():
        raise OutputWriteError(f"{what}: folder {path.parent} does not exist; create it first")
    return path


def layer_file(layer: Any) -> Path | None:
    """The file napari opened ``layer`` from, if any (a lazy layer still reads it)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return Path(path) if path else None


class VolumeChooser:
    """A layer of one kind (napari ``Image`` or ``Labels``) or a file: a combo box of the viewer's
    layers plus a file field used when the combo box says "(a file)". ``optional``: "(none)" may be
    chosen (the default), and :meth:`source` then returns None."""

    def __init__(self, viewer: Any, name: str, label: str, *, labels: bool, tooltip: str = "",
                 optional: bool = False):
        from magicgui import widgets

        self.viewer, self.labels, self.what, self.optional = viewer, labels, label, optional
        self.combo = widgets.ComboBox(name=name, label=label, choices=self._choices, tooltip=tooltip)
        self.file = widgets.FileEdit(name=f"{name}_file", label=f"{label} file", mode="r", visible=False,
                                     tooltip="any supported volume file (.tif, .h5, .am, .nii.gz, ...); a folder "
                                             "of slices: type its path")
        self.combo.changed.connect(self._toggle_file)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self._toggle_file()

    @property
    def widgets(self) -> list:
        return [self.combo, self.file]

    def _kind(self):
        from napari.layers import Image, Labels

        return Labels if self.labels else Image

    def _choices(self, *_: Any) -> list[str]:
        kind = self._kind()
        layers = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
        return ([NOTHING] if self.optional else []) + layers + [FROM_FILE]

    def refresh(self, *_: Any) -> None:
        """Follow the viewer's layers; while no file is chosen, a layer of the kind is chosen."""
        self.combo.reset_choices()
        layers = [name for name in self.combo.choices if name not in (FROM_FILE, NOTHING)]
        if not self.optional and self.combo.value == FROM_FILE and chosen_path(self.file) is None and layers:
            self.combo.value = layers[0]
        self._toggle_file()

    def _toggle_file(self, *_: Any) -> None:
        self.file.visible = self.combo.value == FROM_FILE

    def choose(self, value: str | Path) -> None:
        """Choose a layer by name, or a file by path."""
        if isinstance(value, Path):
            self.combo.value = FROM_FILE
            self.file.value = value
        else:
            self.combo.value = value
        self._toggle_file()

    def layer(self) -> Any | None:
        name = self.combo.value
        return self.viewer.layers[name] if name not in (None, FROM_FILE) and name in self.viewer.layers else None

    def path(self) -> Path | None:
        """The file behind the choice (outputs must spare it): the chosen file, or the file the chosen
        layer was opened from."""
        layer = self.layer()
        if layer is not None:
            return layer_file(layer)
        return chosen_path(self.file) if self.combo.value == FROM_FILE else None

    def describe(self) -> str:
        """What is chosen, for the run's record and layer names: the layer name or the file's path."""
        layer = self.layer()
        return layer.name if layer is not None else str(self.path() or "")

    def source(self) -> VolumeSource | None:
        """The chosen volume as a source (z, y, x); None when "(none)" is chosen, InputFileError when nothing
        is chosen where something must be."""
        if self.optional and self.combo.value == NOTHING:
            return None
        layer = self.layer()
        if layer is not None:
            return layer_source(layer, labels=self.labels)
        path = chosen_path(self.file) if self.combo.value == FROM_FILE else None
        if path is None:
            kind = "Labels" if self.labels else "Image"
            raise InputFileError(f"{self.what}: choose a {kind} layer or a file")
        return open_volume(path)
