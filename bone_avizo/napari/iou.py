"""The IoU dock widget: a prediction and a reference (Labels layers or files) -> the per-class table,
the per-slice plot, and the JSON/CSV reports of ``bone-avizo iou``.

The options are the CLI's (``bone-avizo iou --help``), from the same parameter spec, including the
class mapping (``map_prediction`` / ``map_reference``, SRC:DST) that scores a prediction whose classes
differ from the reference's; the mapping applied is shown under the table.
"""
from __future__ import annotations

from typing import Any

from bone_avizo.config import IoUConfig
from bone_avizo.errors import ConfigError
from bone_avizo.napari.choosers import VolumeChooser, output_path
from bone_avizo.napari.jobs import JobPanel
from bone_avizo.napari.widgets import DockWidget, wrapping

COLUMNS = (("index", "class"), ("name", "name"), ("iou", "IoU"), ("dice", "Dice"), ("precision", "precision"),
           ("recall", "recall"), ("voxels_reference", "ref voxels"), ("voxels_prediction", "pred voxels"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _mapping_text(result) -> str:
    """``class mapping: prediction 2->1; reference none`` (the relabelling scored, as the report's label_maps)."""
    from bone_avizo.config import parse_label_map

    parts = []
    for role in ("prediction", "reference"):
        mapping = parse_label_map(result.options.get(f"map_{role}", ()), f"map_{role}")
        parts.append(f"{role} " + (", ".join(f"{k}->{v}" for k, v in mapping.items()) or "none"))
    return "class mapping: " + "; ".join(parts)


class IoUWidget(DockWidget):
    """Prediction + reference + the IoU options -> table, per-slice plot, exported reports."""

    TITLE = "iou"

    def __init__(self, napari_viewer: Any):
        from magicgui import widgets
        from qtpy.QtWidgets import QSizePolicy, QTableWidget

        super().__init__(napari_viewer)
        self.prediction = VolumeChooser(napari_viewer, "prediction", "prediction", labels=True,
                                        tooltip="--prediction: the predicted label volume")
        self.reference = VolumeChooser(napari_viewer, "reference", "reference", labels=True,
                                       tooltip="--reference: the reference label volume")
        self.roi = VolumeChooser(napari_viewer, "roi", "roi", labels=True, optional=True,
                                 tooltip="--roi: a region-of-interest mask; only its non-zero voxels are counted")
        self.jobs = JobPanel(self.TITLE, "Score")
        self.summary = wrapping(widgets.Label(value="", name="summary"))
        self.notes = wrapping(widgets.Label(value="", name="notes"))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title in COLUMNS])
        self.table.setMinimumWidth(0)
        self.table.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # scrolls inside
        from bone_avizo.napari.plots import PlotCanvas

        self.plot = PlotCanvas()
        self.report = widgets.FileEdit(name="report", label="report (JSON)", mode="w", filter="*.json",
                                       tooltip="--report: the full report as JSON")
        self.csv = widgets.FileEdit(name="csv", label="table (CSV)", mode="w", filter="*.csv",
                                    tooltip="--csv: per-class rows as CSV")
        self.slice_csv = widgets.FileEdit(name="slice_csv", label="per slice (CSV)", mode="w", filter="*.csv",
                                          tooltip="--slice-csv: per-slice IoU rows as CSV")
        self.export_button = widgets.PushButton(text="Export", name="export", enabled=False)
        exports = widgets.Container(widgets=[self.report, self.csv, self.slice_csv, self.export_button])
        self.result = None
        self.jobs.run_button.changed.connect(lambda *_: self.jobs.guard(self.run))
        self.export_button.changed.connect(lambda *_: self.jobs.guard(self.export))
        self.build([*self.prediction.widgets, *self.reference.widgets, *self.roi.widgets], IoUConfig,
                   expanded=("classes",),
                   extras=[self.summary.native, self.table, self.notes.native, self.plot.native, exports.native])

    def run(self):
        """Start scoring the chosen volumes (errors in the inputs raise before anything starts)."""
        from bone_avizo.metrics import compute_iou

        config = self.options.config()
        prediction, reference, roi = self.prediction.source(), self.reference.source(), self.roi.source()
        inputs = {"prediction": self.prediction.describe(), "reference": self.reference.describe(),
                  "roi": self.roi.describe() if roi is not None else None}

        def task(progress):
            import dataclasses

            try:
                result = compute_iou(prediction, reference, config, roi=roi, progress=progress)
            finally:
                for source in (prediction, reference, roi):
                    if source is not None:
                        source.close()
            return dataclasses.replace(result, inputs=inputs)

        return self.jobs.start(task, self.show_result)

    def show_result(self, result) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        from bone_avizo.metrics.report import class_notes, class_rows, iou_summary

        self.result = result
        rows = class_rows(result)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (key, _) in enumerate(COLUMNS):
                self.table.setItem(r, c, QTableWidgetItem(_cell(row[key])))
        self.table.resizeColumnsToContents()
        self.summary.value = iou_summary(result)
        self.notes.value = "\n".join([_mapping_text(result), *class_notes(result)])
        if result.per_slice is not None:
            from bone_avizo.metrics.plot import draw_slice_iou

            def paint(ax) -> None:
                draw_slice_iou(ax, result, f"{result.inputs.get('prediction')} vs {result.inputs.get('reference')}")
                ax.legend(fontsize=7, loc="lower left", ncol=2)

            self.plot.draw(paint)
        self.export_button.enabled = True

    def export(self) -> list:
        """Write the reports chosen (JSON, per-class CSV, per-slice CSV) of the last result."""
        from bone_avizo.io.base import check_outputs_spare_inputs
        from bone_avizo.metrics.report import write_csv, write_json, write_slice_csv

        if self.result is None:
            raise ConfigError("nothing to export yet: press Score first")
        targets = [(output_path(edit, edit.label), write) for edit, write in
                   ((self.report, write_json), (self.csv, write_csv), (self.slice_csv, write_slice_csv))]
        targets = [(path, write) for path, write in targets if path is not None]
        check_outputs_spare_inputs({"export": [path for path, _ in targets]},
                                   {"prediction": self.prediction.path(), "reference": self.reference.path(),
                                    "roi": self.roi.path()})
        if not targets:
            raise ConfigError("choose where to export: a report (JSON), a table (CSV) or per-slice rows (CSV)")
        if self.result.per_slice is None and any(write is write_slice_csv for _, write in targets):
            raise ConfigError("per-slice rows need per-slice IoU; tick per slice and score again")
        written = [write(self.result, path) for path, write in targets]
        from napari.utils.notifications import show_info

        show_info("bone-avizo iou: wrote " + ", ".join(map(str, written)))
        return written
