"""What the three dock widgets share: their layout and how they put results into the viewer."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from qtpy.QtWidgets import QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from bone_avizo.napari.options import OptionsPanel

if TYPE_CHECKING:
    from bone_avizo.napari.jobs import JobPanel


def wrapping(label: Any) -> Any:
    """A magicgui Label whose text wraps to the dock's width (magicgui fixes a label to its text's width, so a
    long line would widen the dock)."""
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    return label


def replace_layer(viewer: Any, data: Any, kwargs: dict, layer_type: str) -> Any:
    """Add a layer, replacing one of the same name (a rerun's result takes the place of the last one)."""
    name = kwargs.get("name")
    if name in viewer.layers:
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{layer_type}")(data, **kwargs)


def remove_layers(viewer: Any, prefix: str) -> None:
    """Remove the layers whose name starts with ``prefix``."""
    for layer in [layer for layer in viewer.layers if layer.name.startswith(prefix)]:
        viewer.layers.remove(layer)


class DockWidget(QWidget):
    """A scrolling column: the task's inputs, Run/Cancel and the progress bar (``self.jobs``, a JobPanel),
    the task's results (``extras``), then its options (one collapsible section per spec group)."""

    TITLE = "task"
    jobs: "JobPanel"  # made by each dock before build()
    MIN_WIDTH = 440  # pixels: the labels and fields of the options side by side

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.setMinimumWidth(self.MIN_WIDTH)
        self.viewer = napari_viewer
        self.options: OptionsPanel | None = None

    def build(self, inputs: list, config_cls: type, *, without: Iterable[str] = (), expanded: Iterable[str] = (),
              extras: Iterable[QWidget] = ()) -> None:
        from magicgui.widgets import Container

        self.options = OptionsPanel(config_cls, without=without)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.addWidget(Container(widgets=inputs, labels=True).native)
        layout.addWidget(self.jobs.container.native)
        for extra in extras:
            layout.addWidget(extra)
        layout.addWidget(self.options.qt_widget(expanded=expanded))
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(column)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
