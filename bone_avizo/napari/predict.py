"""The Predict dock widget (DLPred): a model file and a scan (a layer or a file) -> a Labels layer.

The labels are named by the model's classes and coloured by them; with ``probabilities`` one uint8
Image layer per class follows. A scan whose labels fit in memory is predicted into memory; a larger
one needs an output file, which the prediction streams to and the viewer then reads lazily. The
options are the CLI's (``bone-avizo predict --help``), from the same parameter spec.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bone_avizo.config import PredictConfig
from bone_avizo.errors import ConfigError
from bone_avizo.metrics.iou import default_class_names
from bone_avizo.models.cache import ModelCache, describe_model
from bone_avizo.models.metadata import label_count
from bone_avizo.napari.choosers import VolumeChooser, chosen_path, output_path
from bone_avizo.napari.files import source_layer
from bone_avizo.napari.jobs import JobPanel
from bone_avizo.napari import layers
from bone_avizo.napari.widgets import DockWidget, remove_layers, replace_layer, wrapping

MODEL_FILTER = "*.safetensors *.pth *.pt"
NO_MODEL = "choose a model file (.safetensors from fit, or a BONe .pth checkpoint)"


def _in_memory_bytes(shape: tuple[int, int, int], labels: int, probabilities: bool) -> int:
    """Bytes of an in-memory prediction: uint8 labels, and a uint8 map per label with probabilities."""
    return math.prod(shape) * (1 + (labels if probabilities else 0))


def _labels_name(scan_name: str) -> str:
    return f"{scan_name} labels"


def _probability_name(scan_name: str, class_name: str) -> str:
    return f"{scan_name} prob {class_name}"


class PredictWidget(DockWidget):
    """Model + scan + the predict options -> labels (and probability maps) as layers."""

    TITLE = "predict"

    def __init__(self, napari_viewer: Any):
        from magicgui import widgets

        super().__init__(napari_viewer)
        self.models = ModelCache()
        self.model = widgets.FileEdit(name="model", label="model", mode="r", filter=MODEL_FILTER,
                                      tooltip="--model: " + NO_MODEL)
        self.model_info = wrapping(widgets.Label(value=NO_MODEL, name="model_info"))
        self.scan = VolumeChooser(napari_viewer, "scan", "scan", labels=False, tooltip="--input: the scan to segment")
        self.output = widgets.FileEdit(name="output", label="output file", mode="w",
                                       tooltip="--output: optional; the labels are streamed to this file (any "
                                               "supported format) and shown from it. Needed for scans whose labels "
                                               f"exceed {layers.IN_MEMORY_LIMIT_BYTES / 2**30:g} GB")
        self.overwrite = widgets.CheckBox(name="overwrite", label="overwrite", tooltip="--overwrite: replace an "
                                          "existing output file")
        self.jobs = JobPanel(self.TITLE, "Predict")
        self.model.changed.connect(self._show_model)
        self.jobs.run_button.changed.connect(lambda *_: self.jobs.guard(self.run))
        self.build([self.model, self.model_info, *self.scan.widgets, self.output, self.overwrite],
                   PredictConfig, expanded=("tiling",))

    def _show_model(self, *_: Any) -> None:
        path = chosen_path(self.model)
        if path is None:
            self.model_info.value = NO_MODEL
            return
        try:
            self.model_info.value = describe_model(self.models.load(path))
        except Exception as exc:  # noqa: BLE001 - shown beside the chooser; Predict reports it again
            self.model_info.value = f"cannot use this model: {exc}"

    def run(self):
        """Start the prediction the widgets describe (errors in the inputs raise before anything starts)."""
        config = self.options.config()
        path = chosen_path(self.model)
        if path is None:
            raise ConfigError(f"model: {NO_MODEL}")
        loaded = self.models.load(path)
        labels = label_count(loaded.metadata.num_classes)
        names = default_class_names(labels, loaded.metadata.class_names)
        output = output_path(self.output, "output file")
        if output is not None:
            self._spare_inputs(output, names if config.probabilities else (), path)
        source = self.scan.source()
        name = source.info.name if self.scan.layer() is None else self.scan.layer().name
        in_memory = _in_memory_bytes(source.info.shape, labels, config.probabilities)
        if output is None and in_memory > layers.IN_MEMORY_LIMIT_BYTES:
            source.close()
            raise ConfigError(f"the labels of {name} would take {in_memory / 2**30:.1f} GB in memory, more than "
                              f"{layers.IN_MEMORY_LIMIT_BYTES / 2**30:g} GB: choose an output file to stream them to")
        overwrite = bool(self.overwrite.value)

        def task(progress):
            from bone_avizo.predict import predict_volume

            with source:
                return predict_volume(source, loaded, config, output=output, overwrite=overwrite, progress=progress)

        return self.jobs.start(task, lambda result: self.show_result(result, name, names))

    def _spare_inputs(self, output: Path, probability_classes: tuple[str, ...], model: Path) -> None:
        """Refuse an output (labels or a probability map) that would replace the scan's file or the model."""
        from bone_avizo.io.base import check_outputs_spare_inputs
        from bone_avizo.predict.engine import probability_path

        maps = [probability_path(output, name) for name in probability_classes]
        check_outputs_spare_inputs({"output file": [output, *maps]}, {"scan": self.scan.path(), "model": model})

    def show_result(self, result, scan_name: str, class_names: tuple[str, ...]) -> None:
        """Add (or replace) the labels layer and the probability layers of a finished prediction; the
        probability layers of an earlier run on this scan go."""
        from bone_avizo.io import open_volume

        if result.output is None:
            labels = (result.labels.array, layers.layer_kwargs(result.labels.info, labels=True), "labels")
            maps = [(p.array, layers.layer_kwargs(p.info, labels=False), "image") for p in result.probabilities]
        else:
            labels = source_layer(open_volume(result.output), class_names=class_names)
            maps = [source_layer(open_volume(path)) for path in result.probability_outputs]
        labels[1]["name"] = _labels_name(scan_name)
        replace_layer(self.viewer, *labels)
        remove_layers(self.viewer, _probability_name(scan_name, ""))
        for (data, kwargs, _), class_name in zip(maps, class_names):
            kwargs.update(name=_probability_name(scan_name, class_name), colormap="magma", blending="additive",
                          contrast_limits=(0, 255), visible=False)
            replace_layer(self.viewer, data, kwargs, "image")
