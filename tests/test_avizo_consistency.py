"""Cross-platform consistency: the Avizo face (the real .pyscro modules in the mock) and the
standalone face (the command line's `main`, given the same argument list as `python -m
bone_avizo.standalone`) give bit-identical label volumes and probability maps, and identical IoU
reports, for the same non-cubic, anisotropic scan and the same options. A wrong axis order in the
adapter must break the identity.

The command line runs once per module (predict, then iou), in this process: its console entry point
in a fresh interpreter is tested by tests/test_cli_contract.py and tests/test_cli_iou.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fake_hx
from bone_avizo.avizo import config_to_ports, field_to_volume
from bone_avizo.avizo import fields as avizo_fields
from bone_avizo.config import IoUConfig, PredictConfig
from bone_avizo.io import load_volume, save_volume
from bone_avizo.standalone.__main__ import main
from bone_avizo.volume import Volume
from test_avizo_modules import (CLASSES, ORIGIN, SHAPE, VOXEL, add_field, load_module, make_reference, make_scan,
                                write_tiny_model)

# fused planes, test-time augmentation, non-default tiling and probability maps: most of DLPred's paths
PREDICT = PredictConfig(planes=("xy", "yz"), tta="flips", overlap=0.5, blend="cosine", probabilities=True,
                        backend="torch", device="cpu", threads=1)
IOU = IoUConfig(surface=True)


def cli_flags(config) -> list[str]:
    """The command-line flags that give ``config`` (every option spelled out)."""
    flags: list[str] = []
    for param in config.SPEC:
        value = getattr(config, param.name)
        if param.type is bool:
            flags.append(param.flag if value else "--no-" + param.flag[2:])
        elif param.multiple:
            flags += [param.flag, *map(str, value)] if value else []
        else:
            flags += [param.flag, str(value)]
    return flags


def run_cli(*args: str) -> None:
    assert main(list(args)) == 0, args


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("consistency")
    scan = make_scan()
    return {"scan": save_volume(Volume(scan, voxel_size=VOXEL, origin=ORIGIN, name="scan"), folder / "scan.tif"),
            "reference": save_volume(Volume(make_reference(scan), voxel_size=VOXEL, origin=ORIGIN, name="truth"), folder / "truth.tif"),
            "model": write_tiny_model(folder / "tiny.safetensors", scan), "folder": folder}


@pytest.fixture(scope="module")
def cli(files) -> dict:
    """What the standalone face makes: labels, probability maps (z, y, x) and the IoU report."""
    output = files["folder"] / "scan_labels.tif"
    run_cli("predict", "--model", str(files["model"]), "--input", str(files["scan"]), "--output", str(output),
            *cli_flags(PREDICT))
    report = files["folder"] / "iou.json"
    run_cli("iou", "--prediction", str(output), "--reference", str(files["reference"]), "--report", str(report),
            *cli_flags(IOU))
    probabilities = {name: load_volume(files["folder"] / f"scan_labels_prob_{name}.tif").array for name in CLASSES}
    return {"labels": load_volume(output).array, "probabilities": probabilities,
            "report": json.loads(report.read_text())}


def scan_in_avizo(world, files):
    """The scan as Avizo holds it after loading the TIFF: (x, y, z), x fastest, with its bounding box."""
    return add_field(world, load_volume(files["scan"]).array, name="scan.tif")


def avizo_predict(world, files):
    """BONeDLPred with the same model and options; returns the module."""
    module = load_module(world, "BONeDLPred", connect=scan_in_avizo(world, files))
    module.ports.model.filenames = str(files["model"])
    config_to_ports(PREDICT, module)
    module.fire()
    module.do_it.press()
    return module


def check_labels_identical(world, files, cli) -> None:
    avizo_predict(world, files)
    assert world.hx_message.records == []
    labels = field_to_volume(world.hx_project.get("scan.labels"))
    assert labels.array.dtype == cli["labels"].dtype and labels.array.shape == cli["labels"].shape
    assert np.array_equal(labels.array, cli["labels"])
    for name in CLASSES:
        assert np.array_equal(field_to_volume(world.hx_project.get(f"scan.prob_{name}")).array,
                              cli["probabilities"][name])


def test_the_comparison_has_something_to_compare(cli):
    counts = np.bincount(cli["labels"].ravel(), minlength=len(CLASSES))
    assert cli["labels"].shape == SHAPE and (counts > 0.05 * cli["labels"].size).sum() >= 2
    assert cli["report"]["per_slice"] and cli["report"]["surface"]


def test_label_volumes_are_bit_identical(files, cli):
    check_labels_identical(fake_hx.HxWorld(), files, cli)


BROKEN_AXIS_ORDERS = {
    "reshape instead of transpose": (lambda a: a.reshape(a.shape[::-1]), lambda a: a.reshape(a.shape[::-1])),
    "no transpose": (lambda a: a, lambda a: a),
    "x and y swapped": (lambda a: a.transpose(2, 0, 1), lambda a: a.transpose(1, 2, 0)),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_AXIS_ORDERS))
def test_a_wrong_axis_order_breaks_the_identity(files, cli, monkeypatch, broken):
    to_zyx, to_xyz = BROKEN_AXIS_ORDERS[broken]
    monkeypatch.setattr(avizo_fields, "xyz_to_zyx", to_zyx)
    monkeypatch.setattr(avizo_fields, "zyx_to_xyz", to_xyz)
    with pytest.raises(AssertionError):
        check_labels_identical(fake_hx.HxWorld(), files, cli)


def without_inputs(report: dict) -> dict:
    """A report without its ``inputs`` (file paths on one side, Avizo object names on the other)."""
    return {key: value for key, value in report.items() if key != "inputs"}


@pytest.mark.parametrize("reference_from", ["field", "file"])
def test_iou_reports_are_identical(files, cli, tmp_path, reference_from):
    world = fake_hx.HxWorld()
    avizo_predict(world, files)
    module = load_module(world, "BONeIoU", connect=world.hx_project.get("scan.labels"))
    if reference_from == "field":
        truth = load_volume(files["reference"]).array
        module.reference.connect(add_field(world, truth, name="truth.tif", label=True, materials=CLASSES))
    else:
        module.reference_file.filenames = str(files["reference"])
    config_to_ports(IOU, module)
    module.report.filenames = str(tmp_path / "avizo.json")
    module.fire()
    module.do_it.press()
    assert world.hx_message.records == []
    report = json.loads((tmp_path / "avizo.json").read_text())
    assert report["inputs"]["prediction"] == "scan.labels"
    assert without_inputs(report) == without_inputs(cli["report"])
