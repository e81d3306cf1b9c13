"""`predict`, `fit` and `iou` through the CLI's main take the scanner, medical and Slicer formats by path:
NIfTI, NRRD/NHDR, .seg.nrrd, folders of PNG/BMP/JPEG slices, DICOM series, Scanco ISQ, LZW TIFF.

Inputs are written with the formats' own libraries (nibabel, pynrrd, Pillow, pydicom, tifffile) where they
write them; volumes are tiny (z, y, x) so the whole module runs in seconds on one thread.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from bone_avizo.io import load_volume, save_volume
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.volume import Volume
from reliability.helpers import PREDICT_FLAGS, fit_argv, run_cli, scan_array, write_tiny_model
from test_io_nifti_nrrd import write_isq
from test_io_slices_dicom import write_ct_series

nibabel = pytest.importorskip("nibabel")
nrrd = pytest.importorskip("nrrd")
Image = pytest.importorskip("PIL.Image")


def write_nifti(path, zyx):
    nibabel.save(nibabel.Nifti1Image(zyx.T, np.diag([0.02, 0.02, 0.03, 1.0])), path)
    return path


def write_nrrd(path, zyx, **options):
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.02, 0.02, 0.03]),
              "encoding": "gzip"}
    nrrd.write(str(path), zyx, header, index_order="C", **options)
    return path


def write_slices(folder, zyx, pattern):
    folder.mkdir()
    for z, plane in enumerate(zyx):
        Image.fromarray(plane).save(folder / pattern.format(z))
    return folder


SCANS = {
    "nii.gz": lambda d, a: write_nifti(d / "scan.nii.gz", a),
    "nrrd": lambda d, a: write_nrrd(d / "scan.nrrd", a),
    "nhdr": lambda d, a: write_nrrd(d / "scan.nhdr", a, detached_header=True),
    "png": lambda d, a: write_slices(d / "png", a, "s{}.png"),
    "bmp": lambda d, a: write_slices(d / "rec", (a // 12).astype(np.uint8), "x_rec{:08d}.bmp"),
    "jpg": lambda d, a: write_slices(d / "jpg", (a // 12).astype(np.uint8), "s{}.jpg"),
    "dicom": lambda d, a: write_ct_series(d / "dicom", a),
    "isq": lambda d, a: write_isq(d / "scan.isq", a.astype(np.int16)),
    "tif-lzw": lambda d, a: tifffile.imwrite(d / "lzw.tif", a, compression="lzw", photometric="minisblack")
    or d / "lzw.tif",
}
OUTPUTS = [".seg.nrrd", ".nii.gz", ".nrrd", ".png", ".nii"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.mark.parametrize("kind", list(SCANS))
def test_predict_reads_the_format_and_iou_scores_it_against_another(tmp_path, model, kind):
    scan = SCANS[kind](tmp_path, scan_array())
    output = tmp_path / f"labels{OUTPUTS[list(SCANS).index(kind) % len(OUTPUTS)]}"
    code, out, err = run_cli(["-q", "predict", "--model", model, "--input", scan, "--output", output, *PREDICT_FLAGS])
    assert code == 0, err
    labels = load_volume(output)
    assert labels.shape == (7, 13, 29) and labels.class_names == ("background", "bone", "pores")
    # the same labels in another format: iou reads both and finds them identical
    other = save_volume(labels, tmp_path / ("copy.nii.gz" if output.suffix != ".gz" else "copy.seg.nrrd"))
    report = tmp_path / "iou.json"
    code, out, err = run_cli(["-q", "iou", "--prediction", output, "--reference", other, "--report", report])
    assert code == 0, err
    scores = json.loads(report.read_text())
    assert "1.0" in json.dumps(scores) and "nan" not in json.dumps(scores).lower()


def test_fit_takes_images_and_labels_in_the_new_formats(tmp_path):
    pairs = []
    for k, (image_kind, label_kind) in enumerate([("nii.gz", "seg.nrrd"), ("png", "png"), ("dicom", "nrrd")]):
        image, labels = make_phantom(PhantomConfig(shape=(5, 40, 48), seed=k))
        folder = tmp_path / f"pair{k}"
        folder.mkdir()
        if image_kind == "dicom":  # stored values as they are (no rescaling to HU)
            image_path = write_ct_series(folder / "dicom", image.array.astype(np.uint16), intercept=0.0)
        else:
            image_path = SCANS[image_kind](folder, image.array)
        names = ("background", "bone", "pores")
        if label_kind == "seg.nrrd":
            label_path = save_volume(Volume(labels.array, class_names=names), folder / "labels.seg.nrrd")
        elif label_kind == "png":
            label_path = write_slices(folder / "labels", labels.array.astype(np.uint8), "l{}.png")
        else:
            label_path = write_nrrd(folder / "labels.nrrd", labels.array.astype(np.uint8))
        pairs.append((image_path, label_path))
    output = tmp_path / "m.safetensors"
    code, out, err = run_cli(["-q", *fit_argv(pairs, output, "--epochs", "1")])
    assert code == 0, err
    assert output.is_file()
