"""Shared fixtures: the real scans in ../shared/data (skipped where absent) and seeded RNGs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))

REAL_SCANS = {
    "lhdl_3155": ("lhdl_3155_D_4_bc_trabecular_uct.tif", (200, 200, 200), 0.0195),
    "lhdl_ti_2923": ("lhdl_Ti_2923_D_1_trabecular_uct.tif", (495, 257, 257), 0.0195),
    "mouse_femur": ("simplect_mouse_femur_uct.tif", (103, 49, 63), 0.05),
}


def real_scan(key: str) -> Path:
    """Path of a real scan in ../shared/data; skips the test where the folder is absent."""
    path = SHARED_DATA / REAL_SCANS[key][0]
    if not path.is_file():
        pytest.skip(f"real scan {path} not available")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True, scope="session")
def use_leak_safe_log_records():
    """Keep logging's own record factory. napari's pytest plugin (autoloaded where napari is installed, for
    make_napari_viewer) replaces it for the whole run with one that turns every argument that is not an int or
    a float into text, which breaks '%d' messages with numpy integers; this fixture of the same name wins."""
    yield


@pytest.fixture
def viewer_model(qtbot):
    """napari's viewer model (layers and their events, no canvas: the Qt offscreen platform has no OpenGL for
    image layers), with a QApplication for dock widgets. Only the napari tests ask for it."""
    from napari.components import ViewerModel

    return ViewerModel()


@pytest.fixture
def notifications():
    """The (severity, message) lines napari shows as notifications during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def keep(notification):
        seen.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)
