"""Shared by the napari tests: the offscreen Qt platform (set on import), skipping where napari is not
installed, pressing a dock's Run and running the CLI in this process."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

import pytest  # noqa: E402

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
try:  # a Qt that loads (its system libraries, such as libEGL, present)
    importlib.import_module("qtpy.QtWidgets")
except ImportError as exc:
    pytest.skip(f"Qt cannot load here: {exc}", allow_module_level=True)

from bone_avizo.standalone.__main__ import main as cli_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_MS = 120_000


def press(qtbot, widget) -> None:
    """Press the widget's Run button and wait until its job has finished and been shown."""
    widget.jobs.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.jobs._timer.isActive(), timeout=JOB_TIMEOUT_MS)


def cli(*args: str, capsys=None) -> str:
    """Run ``bone-avizo ARGS`` in this process; its stderr when it fails (capsys given), else ''."""
    code = cli_main(["-q", *map(str, args)])
    err = capsys.readouterr().err if capsys is not None else ""
    if capsys is None:
        assert code == 0, f"bone-avizo {' '.join(map(str, args))} failed with {code}"
    return err
