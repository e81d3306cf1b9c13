"""A matplotlib figure inside a dock widget (Qt canvas), redrawn by the widget that owns it."""
from __future__ import annotations

from typing import Callable


class PlotCanvas:
    """A figure of one axes on a Qt canvas; ``draw(painter)`` clears the axes and calls ``painter(ax)``."""

    def __init__(self, *, height_inches: float = 2.6):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.5, height_inches), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(int(height_inches * 80))
        self.axes = self.figure.add_subplot(1, 1, 1)

    @property
    def native(self):
        return self.canvas

    def draw(self, painter: Callable) -> None:
        self.axes.clear()
        painter(self.axes)
        self.canvas.draw()  # now: a deferred draw could outlive a dock closed meanwhile
