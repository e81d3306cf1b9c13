"""Screenshots of the three napari docks, each beside a phantom, for docs/napari.md.

    xvfb-run -a python docs/screenshots/napari_screenshots.py      # Linux without a display
    python docs/screenshots/napari_screenshots.py                  # with a display

Predict runs the shipped model on a seeded phantom, Fit trains a tiny network for three epochs on two
phantoms (its curve is what the dock draws live), IoU scores the prediction against the phantom's
exact labels. The PNGs go beside this script. Needs the napari extra (``pip install "bone-avizo[napari]"``)
and an OpenGL context (Qt's offscreen platform has none: use a display or Xvfb).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from bone_avizo.config import FitConfig, IoUConfig, PredictConfig  # noqa: E402
from bone_avizo.demo import default_model_path  # noqa: E402
from bone_avizo.napari.files import read_layers  # noqa: E402
from bone_avizo.napari.fit import FitWidget  # noqa: E402
from bone_avizo.napari.iou import IoUWidget  # noqa: E402
from bone_avizo.napari.predict import PredictWidget  # noqa: E402
from bone_avizo.phantom import PhantomConfig, write_phantom  # noqa: E402

WINDOW = (1500, 950)
SHAPE = (48, 192, 224)
TINY_FIT = FitConfig(encoder_depth=3, decoder_channels=(16, 8, 4), patch_size=64, patches_per_slice=2, batch_size=4,
                     steps_per_epoch=4, epochs=3, val_slices=4, device="cpu", plot=False)


def phantom(folder: Path, seed: int) -> tuple[Path, Path]:
    scan, labels = folder / f"phantom{seed}.tif", folder / f"phantom{seed}_labels.tif"
    write_phantom(PhantomConfig(shape=SHAPE, seed=seed), scan, labels)
    return scan, labels


def add_file(viewer, path: Path, name: str):
    data, kwargs, kind = read_layers(str(path))[0]
    return getattr(viewer, f"add_{kind}")(data, **{**kwargs, "name": name})


def finish(widget) -> None:
    """Process Qt events until the dock's job has finished and been shown."""
    while widget.jobs.running or widget.jobs._timer.isActive():
        QApplication.processEvents()
        time.sleep(0.02)
    if widget.jobs.last_error:
        raise SystemExit(widget.jobs.last_error)


def shoot(viewer, widget, name: str, path: Path) -> None:
    dock = viewer.window.add_dock_widget(widget, name=name, area="right")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    viewer.window.remove_dock_widget(dock)
    print(f"wrote {path}")


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bone_avizo_napari_"))
    (scan, reference), second = phantom(folder, 1), phantom(folder, 2)
    viewer = napari.Viewer(title="bone_avizo in napari")
    viewer.window._qt_window.resize(*WINDOW)
    add_file(viewer, scan, "phantom")
    add_file(viewer, reference, "reference").visible = False
    viewer.dims.set_point(0, SHAPE[0] // 2 * viewer.layers["phantom"].scale[0])

    predict = PredictWidget(viewer)
    predict.model.value = default_model_path()
    predict.scan.choose("phantom")
    predict.options.show(PredictConfig(probabilities=True))
    predict.jobs.run_button.clicked.emit()
    finish(predict)
    shoot(viewer, predict, "Predict", HERE / "napari_predict.png")

    fit = FitWidget(viewer)
    add_file(viewer, second[0], "phantom 2").visible = False
    add_file(viewer, second[1], "phantom 2 labels").visible = False
    for image, labels in (("phantom", "reference"), ("phantom 2", "phantom 2 labels")):
        fit.image.choose(image)
        fit.labels.choose(labels)
        fit.add_chosen_pair()
    fit.options.show(TINY_FIT.with_(val_fraction=0.5))
    fit.output.value = folder / "tiny.safetensors"
    fit.jobs.run_button.clicked.emit()
    finish(fit)
    shoot(viewer, fit, "Fit", HERE / "napari_fit.png")

    iou = IoUWidget(viewer)
    iou.prediction.choose("phantom labels")
    iou.reference.choose("reference")
    iou.options.show(IoUConfig())
    iou.jobs.run_button.clicked.emit()
    finish(iou)
    shoot(viewer, iou, "IoU", HERE / "napari_iou.png")
    viewer.close()


if __name__ == "__main__":
    main()
