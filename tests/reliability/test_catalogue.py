"""The bad-input catalogue: one row per bad input, one test per row; docs/reliability.md mirrors the table.

For every row the test checks, through the face the row names:
- the exact message (``<dir>`` stands for the row's folder); on the command line: exit code 2, no
  traceback, exactly one error line and it is the last line of stderr; in Avizo: exactly one error in
  the message window and nothing added to (or left in) the project;
- every file that existed before is byte-identical afterwards (the inputs, and an existing output);
- no new file or folder is left (no final output, no ``.partial``), except the row's ``keeps``
  (a resumable partial output; the best-so-far model file and the history logs of a training run that
  had started).

A row with ``bug`` set is a known open bug: its test is an expected failure (strict) naming it.
``<...>`` in a message stands for words that are not ours or not fixed (a library's error text, a
temporary folder's random name).
"""
from __future__ import annotations

import warnings

import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import nrrd
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import fake_hx
from bone_avizo.avizo import config_to_ports
from bone_avizo.config import PREDICT_SPEC, FitConfig
from test_avizo_modules import HXSCRIPTS, add_field
from test_io_slices_dicom import write_ct_series

from .helpers import (FIT_FLAGS, FIT_OPTIONS, PREDICT_FLAGS, SimulatedDisk, cli_error, fit_argv, scan_array,
                      tree_state, write_scan, write_tiny_model)

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BACKENDS = next(p.choices for p in PREDICT_SPEC if p.name == "backend")


# ---------------------------------------------------------------------------------------------
# the rows' setting: a folder per row, and the actions a row's setup returns
@dataclass
class Ctx:
    dir: Path
    model_file: Path
    pairs: list
    monkeypatch: pytest.MonkeyPatch

    def path(self, name: str) -> Path:
        return self.dir / name

    def model(self, name: str = "model.safetensors") -> Path:
        return Path(shutil.copyfile(self.model_file, self.dir / name))

    def scan(self, name: str = "scan.tif", **options) -> Path:
        return write_scan(self.dir / name, **options)

    def predict(self, scan, *extra: str, output: str = "labels.tif", model: Path | None = None) -> "Cli":
        return Cli(["predict", "--model", model or self.model(), "--input", scan, "--output",
                    self.dir / output, *PREDICT_FLAGS, *extra])

    def training_scans(self) -> list[tuple[Path, Path]]:
        folder = self.dir / "scans"
        folder.mkdir(exist_ok=True)
        return [tuple(Path(shutil.copy(p, folder)) for p in pair) for pair in self.pairs]

    def fit(self, *extra: str, pairs=None, output: str = "m.safetensors") -> "Cli":
        return Cli(fit_argv(pairs or self.training_scans(), self.dir / output, "--epochs", "1", *extra))

    def labels(self, name: str, array: np.ndarray) -> Path:
        path = self.dir / name
        np.save(path, array)
        return path

    def iou(self, prediction: Path, reference: Path, *extra: str) -> "Cli":
        return Cli(["iou", "--prediction", prediction, "--reference", reference, *extra])

    def full_disk(self, free: int) -> None:
        SimulatedDisk(self.dir, free).install(self.monkeypatch)


@dataclass
class Cli:
    """A command line; it must fail with one error line and exit code 2."""

    argv: list

    def run(self, ctx: Ctx) -> str:
        return cli_error([str(a) for a in self.argv])


@dataclass
class Avizo:
    """A module of the Avizo face (the real .pyscro in the mock), prepared by ``prepare(world) -> module``;
    pressing Apply must show one error and leave the project as it was."""

    prepare: Callable

    def run(self, ctx: Ctx) -> str:
        world = fake_hx.HxWorld()
        module = self.prepare(world)
        module.fire()
        before = dict(world.hx_project.objects)
        world.hx_message.records.clear()
        module.do_it.press()
        assert world.hx_project.objects == before
        (level, text), = world.hx_message.records
        prefix = f"{type(module).__name__}: "
        assert level == "error" and text.startswith(prefix) and "Traceback" not in text, text
        return text[len(prefix):]


def dlpred(model: Path, scan: np.ndarray):
    """BONeDLPred on ``scan`` (z, y, x) with ``model``, on one CPU thread."""
    def prepare(world):
        field = add_field(world, scan, name="scan.am")
        module = fake_hx.load_pyscro(HXSCRIPTS / "BONeDLPred.pyscro", world.hx_project, connect=field)
        module.ports.model.filenames = str(model)
        module.ports.backend.selected = BACKENDS.index("torch")
        module.ports.device.text = "cpu"
        module.ports.threads.texts[0].value = 1
        return module
    return prepare


def dlfit(pairs, output: Path):
    """BONeDLFit with the (image, labels) arrays (z, y, x) connected as pairs, tiny options, ``output`` chosen."""
    def prepare(world):
        fields = []
        for k, (image, labels) in enumerate(pairs):
            fields.append((world.create_field(np.asfortranarray(image.T), name=f"scan{k}.am"),
                           world.create_field(np.asfortranarray(labels.T), label=True, name=f"scan{k}.labels")))
        module = fake_hx.load_pyscro(HXSCRIPTS / "BONeDLFit.pyscro", world.hx_project, connect=fields[0][0])
        for k, (scan, labels) in enumerate(fields):
            if k:
                module.ports[f"image{k + 1}"].connect(scan)
            module.ports["labels" if k == 0 else f"labels{k + 1}"].connect(labels)
        config_to_ports(FitConfig(**FIT_OPTIONS, epochs=1), module)
        module.output.filenames = str(output)
        return module
    return prepare


def _phantom_arrays(ctx) -> list:
    return [(np.load(image), np.load(labels)) for image, labels in ctx.pairs]


def iou_module(prediction: np.ndarray, reference: np.ndarray, *, num_classes: int = 0):
    def prepare(world):
        pred = world.create_field(np.asfortranarray(prediction.T), label=True, name="scan.labels")
        ref = world.create_field(np.asfortranarray(reference.T), label=True, name="truth")
        module = fake_hx.load_pyscro(HXSCRIPTS / "BONeIoU.pyscro", world.hx_project, connect=pred)
        module.reference.connect(ref)
        module.ports.num_classes.texts[0].value = num_classes
        return module
    return prepare


# ---------------------------------------------------------------------------------------------
# setups: each makes the bad input in ctx.dir and returns the action that must fail
def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def truncated_tiff(ctx):
    return ctx.predict(_cut(ctx.scan("scan.tif"), 0.5))


def truncated_hdf5(ctx):
    return ctx.predict(_cut(ctx.scan("scan.h5"), 0.5))


def truncated_am(ctx):
    return ctx.predict(_cut(ctx.scan("scan.am"), 0.8))


def am_bad_encoded_size(ctx):
    path = ctx.scan("scan.am", compress="zip")
    path.write_bytes(re.sub(rb"HxZip,\d+\)", b"HxZip,999999999999)", path.read_bytes()))
    return ctx.predict(path)


def raw_size_mismatch(ctx):
    path = ctx.path("scan.raw")
    path.write_bytes(scan_array().tobytes()[:-10])
    return ctx.predict(path, "--input-option", "shape=7,13,29", "--input-option", "dtype=uint16")


def mhd_missing_data(ctx):
    ctx.scan("scan.mhd")
    ctx.path("scan.raw").unlink()
    return ctx.predict(ctx.path("scan.mhd"))


def complex_dtype(ctx):
    return ctx.predict(ctx.labels("scan.npy", scan_array().astype(np.complex64)))


def tiff_channels(ctx):
    tifffile.imwrite(ctx.path("scan.tif"), scan_array((3, 13, 29)), imagej=True,
                     metadata={"axes": "CYX", "mode": "composite"})
    return ctx.predict(ctx.path("scan.tif"))


def tiff_colour_planes(ctx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tifffile announces a change of this default
        tifffile.imwrite(ctx.path("scan.tif"), scan_array((3, 13, 29)))
    return ctx.predict(ctx.path("scan.tif"))


def two_d_input(ctx):
    return ctx.predict(ctx.labels("scan.npy", scan_array()[0]))


def zero_size_axis(ctx):
    return ctx.predict(ctx.labels("scan.npy", scan_array()[:0]))


def nan_slice(ctx):
    scan = scan_array().astype(np.float32)
    scan[4] = np.nan
    tifffile.imwrite(ctx.path("scan.tif"), scan)
    return ctx.predict(ctx.path("scan.tif"))


def infinite_voxel(ctx):
    scan = scan_array().astype(np.float32)
    scan[2, 5, 7] = np.inf
    return ctx.predict(ctx.labels("scan.npy", scan))


def all_zero_scan(ctx):
    return ctx.predict(ctx.labels("scan.npy", np.zeros((7, 13, 29), np.uint16)))


def unknown_extension(ctx):
    ctx.path("scan.xyz").write_bytes(b"not a volume")
    return ctx.predict(ctx.path("scan.xyz"))


def input_missing(ctx):
    return ctx.predict(ctx.path("nowhere.tif"))


def hdf5_two_volumes(ctx):
    with h5py.File(ctx.path("scan.h5"), "w") as fh:
        fh["a"] = fh["b"] = scan_array()
    return ctx.predict(ctx.path("scan.h5"))


def hdf5_no_such_dataset(ctx):
    return ctx.predict(ctx.scan("scan.h5"), "--input-option", "dataset=/volume")


def png_slices_differ(ctx):
    folder = ctx.path("slices")
    folder.mkdir()
    for z, plane in enumerate(scan_array((3, 13, 29)).astype(np.uint8)):
        Image.fromarray(plane).save(folder / f"s{z}.png")
    Image.fromarray(np.zeros((13, 30), np.uint8)).save(folder / "s3.png")
    return ctx.predict(folder)


def dicom_two_series(ctx):
    folder = ctx.path("dicom")
    write_ct_series(folder, scan_array((3, 13, 29)), series_uid="1.2.3.1", series_number=3, names=["a1", "a2", "a3"])
    write_ct_series(folder, scan_array((2, 13, 29)), series_uid="1.2.3.2", series_number=7, names=["b1", "b2"])
    return ctx.predict(folder)


def nrrd_oblique(ctx):
    header = {"space": "left-posterior-superior", "space directions": [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]]}
    nrrd.write(str(ctx.path("scan.nrrd")), scan_array(), header, index_order="C")
    return ctx.predict(ctx.path("scan.nrrd"))


def bad_input_option(ctx):
    return ctx.predict(ctx.scan(), "--input-option", "dataset")


def config_file_broken(ctx):
    ctx.path("options.json").write_text("{tile_size: 32")
    return ctx.predict(ctx.scan(), "--config", ctx.path("options.json"))


def config_unknown_key(ctx):
    ctx.path("options.json").write_text('{"tile_sise": 64}')
    return ctx.predict(ctx.scan(), "--config", ctx.path("options.json"))


def config_key_of_another_command(ctx):
    ctx.path("options.json").write_text('{"tile_size": 64, "epochs": 50}')
    return ctx.predict(ctx.scan(), "--config", ctx.path("options.json"))


def model_missing(ctx):
    return ctx.predict(ctx.scan(), model=ctx.path("none.safetensors"))


def model_truncated(ctx):
    return ctx.predict(ctx.scan(), model=_cut(ctx.model(), 0.5))


def model_huge_header(ctx):
    path = ctx.path("huge.safetensors")
    path.write_bytes(struct.pack("<Q", 200 * 2**20) + b"{" + b" " * 64)
    return ctx.predict(ctx.scan(), model=path)


def model_header_disagrees(ctx):
    path = ctx.model()
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + length].replace(b'"shape":[8,8,3,3]', b'"shape":[8,8,3,4]', 1)
    assert header != data[8:8 + length]
    path.write_bytes(data[:8] + header + data[8 + length:])
    return ctx.predict(ctx.scan(), model=path)


class _CreatesFile:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _evil_checkpoint(ctx) -> Path:
    path = ctx.path("evil.pth")
    torch.save({"model_state": {}, "metadata": {"note": _CreatesFile(ctx.path("pwned.txt"))}}, path)
    return path


def model_pickle_payload(ctx):
    return ctx.predict(ctx.scan(), model=_evil_checkpoint(ctx))


def model_bone_3d(ctx):
    """A BONe checkpoint made in its 3D mode (2D weights inside, so only the metadata can tell)."""
    from bone_avizo.models import load_model

    module = load_model(ctx.model()).module
    torch.save({"model_state": module.state_dict(),
                "metadata": {"model_arch": "U-Net", "backbone": "mobilenet_v2", "num_classes": 3, "in_channels": 1,
                             "patch_size": 32, "normalization": "ZScore", "is_3d": True, "mode": "3D"}},
               ctx.path("bone3d.pth"))
    return ctx.predict(ctx.scan(), model=ctx.path("bone3d.pth"))


def model_plain_safetensors(ctx):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(ctx.path("plain.safetensors")))
    return ctx.predict(ctx.scan(), model=ctx.path("plain.safetensors"))


def _onnx_without_metadata(ctx) -> Path:
    from bone_avizo.models import export_onnx, load_model

    return export_onnx(load_model(ctx.model_file).module, ctx.path("bare.onnx"), in_channels=1, patch_size=32)


def model_onnx_without_metadata(ctx):
    return ctx.predict(ctx.scan(), model=_onnx_without_metadata(ctx))


def fit_weights_onnx(ctx):
    from bone_avizo.models import export_onnx, load_model

    path = export_onnx(load_model(ctx.model_file), ctx.path("bone.onnx"), patch_size=32)
    return ctx.fit("--weights", path)


def _edit_metadata(path: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file
    import json

    with safe_open(str(path), "pt") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(header["bone_avizo"])
    header_changes = changes.pop("header", {})
    meta.update(changes)
    header.update(bone_avizo=json.dumps(meta), **header_changes)
    save_file(tensors, str(path), metadata=header)
    return path


def model_unknown_arch(ctx):
    return ctx.predict(ctx.scan(), model=_edit_metadata(ctx.model(), arch="unet3000"))


def model_unknown_normalization_mask(ctx):
    return ctx.predict(ctx.scan(), model=_edit_metadata(ctx.model(), normalization_mask="negative"))


def model_newer_format(ctx):
    return ctx.predict(ctx.scan(), model=_edit_metadata(ctx.model(), header={"format_version": "7"}))


def model_weights_other_arch(ctx):
    return ctx.predict(ctx.scan(), model=_edit_metadata(ctx.model(), in_channels=3, context_slices=3))


def model_needs_more_slices(ctx):
    model = write_tiny_model(ctx.path("context5.safetensors"), in_channels=5)
    return ctx.predict(ctx.labels("thin.npy", scan_array((3, 13, 29))), model=model)


def bad_tile_size(ctx):
    return ctx.predict(ctx.scan(), "--tile-size", "50")


def resume_fused_planes(ctx):
    return ctx.predict(ctx.scan(), "--planes", "xy", "yz", "--resume", output="labels.h5")


def bad_device(ctx):
    return ctx.predict(ctx.scan(), "--device", "gpu0")


def _ranks(ctx, **variables):
    for name, value in variables.items():
        ctx.monkeypatch.setenv(name, value)


def _gpus(ctx, count: int):
    """Make torch report ``count`` CUDA devices (0: no CUDA), as a machine with that many would."""
    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    ctx.monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def rank_not_integer(ctx):
    _ranks(ctx, RANK="one", WORLD_SIZE="2")
    return ctx.predict(ctx.scan())


def local_world_size_above_world(ctx):
    _ranks(ctx, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="4")
    return ctx.predict(ctx.scan())


def more_ranks_than_gpus(ctx):
    _ranks(ctx, RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2")
    _gpus(ctx, 1)
    return ctx.predict(ctx.scan(), "--device", "auto")


def bad_cache_limit(ctx):
    ctx.monkeypatch.setenv("BONE_AVIZO_CACHE", str(ctx.path("cache")))
    ctx.monkeypatch.setenv("BONE_AVIZO_CACHE_MB", "lots")
    return ctx.predict(ctx.scan(), "--backend", "onnxruntime")


def output_exists(ctx):
    ctx.path("labels.tif").write_bytes(b"an earlier result")
    return ctx.predict(ctx.scan())


def resume_onto_older_output(ctx):
    write_scan(ctx.path("labels.h5"), seed=9)
    return ctx.predict(ctx.scan(), "--resume", "--probabilities", output="labels.h5")


def output_folder_missing(ctx):
    return ctx.predict(ctx.scan(), output="no/such/folder/labels.tif")


def output_folder_read_only(ctx):
    locked = ctx.path("locked")
    locked.mkdir()
    locked.chmod(0o555)
    ctx.monkeypatch.setattr(os, "access", _access_without_root(locked))
    return ctx.predict(ctx.scan(), output="locked/labels.tif")


def _access_without_root(locked: Path):
    """os.access as an ordinary user sees it: root may write into a read-only folder; users may not."""
    original = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == locked.resolve() and mode & os.W_OK:
            return False
        return original(path, mode, *args, **kwargs)
    return access


def output_unknown_extension(ctx):
    return ctx.predict(ctx.scan(), output="labels.xyz")


def disk_full_tiff(ctx):
    action = ctx.predict(ctx.scan())
    ctx.full_disk(free=1000)
    return action


def disk_full_hdf5(ctx):
    action = ctx.predict(ctx.scan(), "--slab-slices", "2", output="labels.h5")
    ctx.full_disk(free=100)  # the first slab's compressed chunks take 210 bytes
    return action


def disk_full_hdf5_resumable(ctx):
    action = ctx.predict(ctx.scan(), "--slab-slices", "2", "--resume", output="labels.h5")
    ctx.full_disk(free=100)
    return action


def disk_full_hdf5_several_outputs(ctx):
    action = ctx.predict(ctx.scan(), "--slab-slices", "2", "--probabilities", output="labels.h5")
    ctx.full_disk(free=1400)  # the first slab: labels 210 bytes, then the maps about 480 bytes each
    return action


def disk_full_amira(ctx):
    action = ctx.predict(ctx.scan(), "--slab-slices", "2", output="labels.am")
    ctx.full_disk(free=1500)
    return action


def disk_full_zarr(ctx):
    action = ctx.predict(ctx.scan(), "--slab-slices", "2", output="labels.zarr")
    ctx.full_disk(free=1500)
    return action


def io_threads_not_a_number(ctx):
    action = ctx.predict(ctx.scan(), output="labels.h5")
    ctx.monkeypatch.setenv("BONE_AVIZO_IO_THREADS", "many")
    return action


def iou_shapes_differ(ctx):
    labels = scan_array() % 3
    return ctx.iou(ctx.labels("pred.npy", labels.astype(np.uint8)), ctx.labels("ref.npy", labels[:, :, :20]))


def iou_label_beyond_classes(ctx):
    labels = (scan_array() % 3).astype(np.uint8)
    return ctx.iou(ctx.labels("pred.npy", labels), ctx.labels("ref.npy", labels), "--num-classes", "2")


def iou_not_labels(ctx):
    labels = (scan_array() % 3).astype(np.float32)
    return ctx.iou(ctx.labels("pred.npy", labels + 0.5), ctx.labels("ref.npy", labels))


def iou_negative_labels(ctx):
    labels = (scan_array() % 3).astype(np.int16)
    return ctx.iou(ctx.labels("pred.npy", labels - 1), ctx.labels("ref.npy", labels))


def iou_unpaired(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    return Cli(["iou", "--prediction", labels, labels, "--reference", labels])


def iou_report_folder_missing(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    return ctx.iou(labels, labels, "--report", ctx.path("no/such/report.json"))


def iou_disk_full(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    action = ctx.iou(labels, labels, "--report", ctx.path("report.json"))
    ctx.full_disk(free=100)
    return action


def iou_bad_label_map(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    return ctx.iou(labels, labels, "--map-prediction", "2-1")


def iou_map_beyond_classes(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    return ctx.iou(labels, labels, "--map-prediction", "2:5", "--num-classes", "3")


def iou_voxel_sizes_differ(ctx):
    from bone_avizo.io import save_volume
    from bone_avizo.volume import Volume

    labels = (scan_array() % 3).astype(np.uint8)
    save_volume(Volume(labels, voxel_size=0.02), ctx.path("pred.npy"))
    save_volume(Volume(labels, voxel_size=0.01), ctx.path("ref.npy"))
    return ctx.iou(ctx.path("pred.npy"), ctx.path("ref.npy"))


def fit_label_shape(ctx):
    pairs = ctx.training_scans()
    np.save(pairs[0][1], np.load(pairs[0][1])[:, :, :40])
    return ctx.fit(pairs=pairs)


def fit_labels_beyond_classes(ctx):
    pairs = ctx.training_scans()
    np.save(pairs[1][1], np.load(pairs[1][1]) * 2)
    return ctx.fit("--num-classes", "3", pairs=pairs)


def fit_grey_value_labels(ctx):
    pairs = ctx.training_scans()
    return ctx.fit(pairs=[pairs[0], (pairs[1][0], pairs[1][0]), pairs[2]])


def iou_grey_value_reference(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    return ctx.iou(labels, ctx.labels("scan.npy", (scan_array() // 12).astype(np.uint8)))


def fit_float_labels(ctx):
    pairs = ctx.training_scans()
    np.save(pairs[0][1], np.load(pairs[0][1]).astype(np.float32) / 2)
    return ctx.fit(pairs=pairs)


def fit_nan_image(ctx):
    pairs = ctx.training_scans()
    image = np.load(pairs[2][0]).astype(np.float32)
    image[2] = np.nan
    np.save(pairs[2][0], image)
    return ctx.fit(pairs=pairs)


def fit_unknown_arch(ctx):
    return ctx.fit("--arch", "unet3000")


def fit_unknown_encoder(ctx):
    return ctx.fit("--encoder", "resnet1800")


def fit_patch_too_large(ctx):
    return ctx.fit("--patch-size", "64")


def fit_bad_loss(ctx):
    return ctx.fit("--loss", "jaccard+hinge")


def fit_bad_lr(ctx):
    return ctx.fit("--lr", "-0.1")


def fit_one_scan(ctx):
    return ctx.fit(pairs=ctx.training_scans()[:1])


def fit_unpaired(ctx):
    pairs = ctx.training_scans()
    return Cli(["fit", "--images", *[p[0] for p in pairs], "--labels", pairs[0][1], "--output",
                ctx.path("m.safetensors"), *FIT_FLAGS])


def fit_output_exists(ctx):
    ctx.path("m.safetensors").write_bytes(b"an earlier model")
    return ctx.fit()


def fit_output_folder_missing(ctx):
    return ctx.fit(output="no/such/m.safetensors")


def fit_resume_without_checkpoint(ctx):
    return ctx.fit("--resume")


def fit_resume_foreign_checkpoint(ctx):
    torch.save({"weights": torch.zeros(3)}, ctx.path("m.safetensors.ckpt"))
    return ctx.fit("--resume")


def fit_ranked_cuda_without_gpu(ctx):
    _ranks(ctx, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2")
    _gpus(ctx, 0)
    return ctx.fit("--device", "cuda")


def fit_disk_full_model(ctx):
    action = ctx.fit()
    ctx.full_disk(free=50_000)
    return action


def fit_disk_full_checkpoint(ctx):
    action = ctx.fit()
    ctx.full_disk(free=1_500_000)  # the model file (about 1.1 MB) fits, the checkpoint does not
    return action


def export_output_exists(ctx):
    ctx.path("model.onnx").write_bytes(b"an earlier export")
    return Cli(["export", "--model", ctx.model(), "--output", ctx.path("model.onnx")])


def export_disk_full(ctx):
    action = Cli(["export", "--model", ctx.model(), "--output", ctx.path("copy.safetensors"), "--fp16"])
    ctx.full_disk(free=100_000)
    return action


# outputs onto inputs: refused whatever --overwrite says
def predict_output_is_input(ctx):
    return ctx.predict(ctx.scan(), "--overwrite", output="scan.tif")


def predict_output_hard_link(ctx):
    scan = ctx.scan()
    os.link(scan, ctx.path("labels.tif"))
    return ctx.predict(scan, "--overwrite")


def predict_output_through_link(ctx):
    scan = ctx.scan()
    ctx.path("link.tif").symlink_to(scan)
    return ctx.predict(scan, "--overwrite", output="link.tif")


def predict_output_in_slice_folder(ctx):
    return ctx.predict(ctx.scan("slices", format="tiff-folder"), output="slices/labels.tif")


def predict_output_is_mhd_data(ctx):
    return ctx.predict(ctx.scan("scan.mhd"), "--overwrite", output="scan.raw")


def predict_output_is_model(ctx):
    return ctx.predict(ctx.scan(), "--overwrite", output="model.safetensors", model=ctx.model())


def fit_output_is_labels(ctx):
    return ctx.fit("--overwrite", output="scans/scan1_labels.npy")


def fit_output_is_weights(ctx):
    return ctx.fit("--overwrite", "--weights", str(ctx.model("m.safetensors")))


def iou_report_is_reference(ctx):
    labels = ctx.labels("pred.npy", (scan_array() % 3).astype(np.uint8))
    reference = ctx.labels("truth.npy", (scan_array(seed=1) % 3).astype(np.uint8))
    return ctx.iou(labels, reference, "--report", reference)


def export_output_is_model(ctx):
    model = ctx.model()
    return Cli(["export", "--model", model, "--output", model, "--overwrite"])


def phantom_outputs_collide(ctx):
    return Cli(["phantom", "--output", ctx.path("p.tif"), "--labels", ctx.path("p.tif"), "--shape", "4", "32", "32"])


def phantom_output_is_config(ctx):
    ctx.path("opts.json").write_text('{"seed": 3}')
    return Cli(["phantom", "--output", ctx.path("p.tif"), "--labels", ctx.path("opts.json"), "--config",
                ctx.path("opts.json"), "--overwrite"])


def cv_output_in_slice_folder(ctx):
    pairs = [(ctx.scan(f"s{k}", format="tiff-folder", seed=k), ctx.labels(f"s{k}_labels.npy",
              (scan_array(seed=k) % 3).astype(np.uint8))) for k in range(2)]
    return Cli(["cv", "--images", *[p[0] for p in pairs], "--labels", *[p[1] for p in pairs], "--output",
                ctx.path("s0"), "--folds", "2", *FIT_FLAGS])


def bench_output_holds_labels(ctx):
    ctx.path("grid.json").write_text('{"arch": ["unet"], "encoder": ["resnet18"], "patch_size": [32]}')
    (ctx.path("study") / "tasks").mkdir(parents=True)
    labels = ctx.labels("study/tasks/l.npy", (scan_array() % 3).astype(np.uint8))
    return Cli(["bench", "--config", ctx.path("grid.json"), "--images", ctx.scan(), "--labels", labels,
                "--test-images", ctx.scan(), "--test-labels", labels, "--output", ctx.path("study"), "--overwrite"])


def demo_output_is_model(ctx):
    model = ctx.model("phantom_scan.tif")
    return Cli(["demo", "--output", ctx.dir, "--model", model, "--overwrite"])


def avizo_root_missing(ctx):
    return Cli(["avizo", "install", "--avizo-root", ctx.path("Avizo-2024.1")])


def avizo_pickle_payload(ctx):
    return Avizo(dlpred(_evil_checkpoint(ctx), scan_array()))


def avizo_truncated_model(ctx):
    return Avizo(dlpred(_cut(ctx.model(), 0.5), scan_array()))


def avizo_nan_scan(ctx):
    scan = scan_array().astype(np.float32)
    scan[3] = np.nan
    return Avizo(dlpred(ctx.model(), scan))


def avizo_needs_more_slices(ctx):
    model = write_tiny_model(ctx.path("context5.safetensors"), in_channels=5)
    return Avizo(dlpred(model, scan_array((3, 13, 29))))


def avizo_fit_nan_scan(ctx):
    pairs = _phantom_arrays(ctx)
    image = pairs[1][0].astype(np.float32)
    image[3] = np.nan
    pairs[1] = (image, pairs[1][1])
    return Avizo(dlfit(pairs, ctx.path("bone.safetensors")))


def avizo_fit_disk_full(ctx):
    action = Avizo(dlfit(_phantom_arrays(ctx), ctx.path("bone.safetensors")))
    ctx.full_disk(free=5000)
    return action


def avizo_iou_label_beyond_classes(ctx):
    labels = (scan_array() % 3).astype(np.uint8)
    return Avizo(iou_module(labels, labels, num_classes=2))


def avizo_iou_shapes_differ(ctx):
    labels = (scan_array() % 3).astype(np.uint8)
    return Avizo(iou_module(labels, labels[:, :, :20]))


# ---------------------------------------------------------------------------------------------
# the catalogue
@dataclass(frozen=True)
class Row:
    id: str
    area: str
    bad: str       # the bad input, in words (the docs table's second column)
    message: str   # exactly what the user reads; <dir> is the row's folder, <...> a library's own words
    setup: Callable[[Ctx], object]
    keeps: tuple[str, ...] = ()  # new files that may stay (resumable partials, best-so-far model, logs)
    bug: str | None = None       # a known open bug: the test is a strict expected failure


# a training run that has started keeps its (empty) history: it marks a fresh run that --resume restarts
FIT_LOGS = ("m.safetensors.history.csv", "m.safetensors.history.json")

CATALOGUE: tuple[Row, ...] = (
    # io: damaged or unusual input files (through `predict --input`)
    Row("truncated-tiff", "io", "a TIFF cut in half",
        "<dir>/scan.tif is truncated or damaged: its metadata declare 2639 values, only 377 are readable;"
        " re-export it",
        truncated_tiff),
    Row("truncated-hdf5", "io", "an HDF5 file cut in half",
        "<dir>/scan.h5 is a damaged or truncated HDF5 file (<...>); re-create it",
        truncated_hdf5),
    Row("truncated-am", "io", "an AmiraMesh file missing its last bytes",
        "<dir>/scan.am is truncated: the 29x13x7 ushort lattice needs 5278 bytes after the header, the "
        "file has 4165; copy or export it again",
        truncated_am),
    Row("am-encoded-size", "io", "an AmiraMesh HxZip section declaring 10^12 bytes",
        "<dir>/scan.am is truncated or corrupt: the HxZip data needs 999999999999 bytes after the header,"
        " the file has 4481; copy or export it again",
        am_bad_encoded_size),
    Row("raw-size", "io", "raw data 10 bytes shorter than shape x dtype",
        "<dir>/scan.raw has 5268 bytes but shape (7, 13, 29) uint16 with 0 header bytes needs 5278; check"
        " shape, dtype and header_bytes (or the file is truncated)",
        raw_size_mismatch),
    Row("mhd-no-data", "io", "a MetaImage header whose data file is gone",
        "<dir>/scan.mhd names data file <dir>/scan.raw, which does not exist; put it beside the header",
        mhd_missing_data),
    Row("complex-dtype", "io", "a complex64 .npy",
        "<dir>/scan.npy has data type complex64, which is not supported; convert it to an integer or "
        "float type (e.g. uint16 or float32)",
        complex_dtype),
    Row("tiff-channels", "io", "an ImageJ composite TIFF of 3 channels (a stack written by tifffile.imwrite(p, "
        "volume, imagej=True) is read as z)",
        "<dir>/scan.tif has 3 channels (axes CYX, shape (3, 13, 29)); save a single-channel (grey-value) stack",
        tiff_channels),
    Row("tiff-colour-planes", "io", "a 3-slice stack written by tifffile.imwrite with its default (stored as "
        "one planar RGB page)",
        "<dir>/scan.tif is stored as one 3-plane colour image (axes SYX, shape (3, 13, 29)), which is what "
        "tifffile.imwrite does by default with a 3- or 4-slice array; if these are slices, write it again with "
        "tifffile.imwrite(path, volume, photometric='minisblack')",
        tiff_colour_planes),
    Row("not-3d", "io", "a 2-D array",
        "<dir>/scan.npy holds an array of shape (13, 29), not a 3-D volume (z, y, x); give a 3-D stack of"
        " slices",
        two_d_input),
    Row("zero-size-axis", "io", "a (0, 13, 29) array",
        "<dir>/scan.npy holds an array of shape (0, 13, 29), not a 3-D volume (z, y, x); give a 3-D stack"
        " of slices",
        zero_size_axis),
    Row("unknown-extension", "io", "an input named scan.xyz",
        "cannot tell the format of <dir>/scan.xyz from its extension '.xyz'; use one of .aim, .am, .bmp, .dcm, "
        ".dicom, .h5, .hdf, .hdf5, .isq, .jpeg, .jpg, .mha, .mhd, .nhdr, .nii, .nii.gz, .npy, .nrrd, .ome.tif, "
        ".ome.tiff, .ome.zarr, .png, .raw, .seg.nrrd, .tif, .tiff, .zarr, a folder of TIFF/PNG/BMP/JPEG/DICOM "
        "slices, or name the format",
        unknown_extension),
    Row("input-missing", "io", "an input path that does not exist",
        "--input: <dir>/nowhere.tif does not exist; check the path",
        input_missing),
    Row("hdf5-two-volumes", "io", "an HDF5 file with two 3-D datasets and no dataset= option",
        "<dir>/scan.h5 holds several 3-D datasets (a (7, 13, 29), b (7, 13, 29)); choose one with "
        "dataset=<path>",
        hdf5_two_volumes),
    Row("hdf5-no-dataset", "io", "dataset=/volume in an HDF5 file without it",
        "<dir>/scan.h5 has no dataset '/volume'; available: data (7, 13, 29)",
        hdf5_no_such_dataset),
    Row("slice-sizes-differ", "io", "a folder of PNG slices, one of another size",
        "slice s3.png has shape (13, 30) uint8, but s0.png has (13, 29) uint8; all slices of a folder must be 2-D "
        "with the same shape and type",
        png_slices_differ),
    Row("dicom-two-series", "io", "a DICOM folder holding two series and no series= option",
        "folder <dir>/dicom holds 2 DICOM series (1 = SeriesNumber 3 's3' (3 files, UID 1.2.3.1); 2 = SeriesNumber"
        " 7 's7' (2 files, UID 1.2.3.2)); choose one with series=<number, SeriesNumber or UID>",
        dicom_two_series),
    Row("nrrd-oblique", "io", "an NRRD whose space directions are not along the axes",
        "<dir>/scan.nrrd has a non-axis-aligned space direction (0.5,0.5,0) for axis 0; resample it onto an "
        "axis-aligned grid first (e.g. 3D Slicer: harden the transform and resample)",
        nrrd_oblique),
    # predict: scans, options, outputs
    Row("nan-slice", "predict", "a float32 TIFF with a NaN slice",
        "scan contains NaN or infinite values (the first in slice z=4); replace them (e.g. "
        "numpy.nan_to_num) before segmenting",
        nan_slice),
    Row("inf-voxel", "predict", "one infinite voxel in a float32 .npy",
        "scan contains NaN or infinite values (the first in slice z=2); replace them (e.g. "
        "numpy.nan_to_num) before segmenting",
        infinite_voxel),
    Row("all-zero-scan", "predict", "a scan with no voxel > 0",
        "the scan has no voxels > 0, so it cannot be normalised; check that the right volume was given",
        all_zero_scan),
    Row("bad-input-option", "predict", "--input-option without KEY=",
        "--input-option: 'dataset' is not KEY=VALUE (e.g. --input-option dataset=/data)",
        bad_input_option),
    Row("broken-config", "predict", "a --config file that is not JSON",
        "config file <dir>/options.json cannot be parsed: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
        config_file_broken),
    Row("config-unknown-key", "predict", "a --config key that no option has (tile_sise)",
        "config file <dir>/options.json: 'tile_sise' is not an option of predict; did you mean 'tile_size'?",
        config_unknown_key),
    Row("config-other-command", "predict", "a --config key of another command (epochs) outside its section",
        "config file <dir>/options.json: 'epochs' is not an option of predict; it is an option of fit, cv: put "
        "it in a 'fit:' section",
        config_key_of_another_command),
    Row("bad-tile-size", "predict", "--tile-size 50 (not a multiple of 32)",
        "tile_size (--tile-size): '50' is not valid; expected 32..4096, a multiple of 32, 0 = auto: whole "
        "slices up to 1024 px, else the tile in [max(patch, 512), 1024] that computes the fewest pixels",
        bad_tile_size),
    Row("resume-fused", "predict", "--resume with two planes",
        "--resume works for single-plane (xy) prediction; rerun without --resume",
        resume_fused_planes),
    Row("bad-device", "predict", "--device gpu0",
        "device 'gpu0' is not valid; use cpu, cuda, cuda:N or auto",
        bad_device),
    Row("rank-not-integer", "predict", "RANK=one under WORLD_SIZE=2",
        "environment variable RANK='one' is not an integer; check the launcher's settings",
        rank_not_integer),
    Row("local-world-size", "predict", "LOCAL_WORLD_SIZE=4 under WORLD_SIZE=2",
        "environment variables LOCAL_WORLD_SIZE=4, LOCAL_RANK=0, WORLD_SIZE=2 are inconsistent: need LOCAL_RANK < "
        "LOCAL_WORLD_SIZE <= WORLD_SIZE; check the launcher's settings",
        local_world_size_above_world),
    Row("more-ranks-than-gpus", "predict", "--device auto on local rank 1 of a node with one GPU (torchrun)",
        "local rank 1 but only 1 GPU(s) on this node; start at most that many processes per node "
        "(--nproc_per_node, --ntasks-per-node) or give --device cpu",
        more_ranks_than_gpus),
    Row("bad-cache-limit", "predict", "BONE_AVIZO_CACHE_MB=lots with --backend onnxruntime",
        "environment variable BONE_AVIZO_CACHE_MB='lots' is not a size in megabytes; give a number >= 0 (e.g. "
        "BONE_AVIZO_CACHE_MB=500), or unset it for 1024",
        bad_cache_limit),
    Row("output-exists", "predict", "an output that already exists (no --overwrite)",
        "output <dir>/labels.tif already exists; choose another name or allow overwriting (--overwrite)",
        output_exists),
    Row("resume-onto-older-output", "predict", "--resume onto an existing output that no partial job goes with",
        "output <dir>/labels.h5 already exists; choose another name or allow overwriting (--overwrite)",
        resume_onto_older_output),
    Row("output-folder-missing", "predict", "an output in a folder that does not exist",
        "--output: folder <dir>/no/such/folder does not exist; create it first",
        output_folder_missing),
    Row("output-read-only", "predict", "an output in a read-only folder",
        "output folder <dir>/locked is not writable; choose another output path",
        output_folder_read_only),
    Row("output-extension", "predict", "an output named labels.xyz",
        "cannot tell the format of <dir>/labels.xyz from its extension '.xyz'; use one of .aim, .am, .bmp, .dcm, "
        ".dicom, .h5, .hdf, .hdf5, .isq, .jpeg, .jpg, .mha, .mhd, .nhdr, .nii, .nii.gz, .npy, .nrrd, .ome.tif, "
        ".ome.tiff, .ome.zarr, .png, .raw, .seg.nrrd, .tif, .tiff, .zarr, a folder of TIFF/PNG/BMP/JPEG/DICOM "
        "slices, or name the format",
        output_unknown_extension),
    Row("disk-full-tiff", "predict", "a full disk when the TIFF output is created",
        "cannot create <dir>/labels.tif.partial: No space left on device; check the folder's permissions "
        "and free space",
        disk_full_tiff),
    Row("disk-full-hdf5", "predict", "a disk that fills up when the first slab of an HDF5 output is stored",
        "writing <dir>/labels.h5 failed after slice 1: No space left on device; check free disk space",
        disk_full_hdf5),
    Row("disk-full-hdf5-resume", "predict", "the same with --resume: the partial output stays to be resumed",
        "writing <dir>/labels.h5 failed after slice 1: No space left on device; check free disk space",
        disk_full_hdf5_resumable, keeps=("labels.h5.partial",)),
    Row("disk-full-hdf5-maps", "predict", "a disk that fills up while writing labels and probability maps to HDF5",
        "writing <dir>/labels_prob_pores.h5 failed after slice 1: No space left on device; check free disk space",
        disk_full_hdf5_several_outputs),
    Row("disk-full-am", "predict", "a disk that fills up while writing an AmiraMesh output",
        "writing <dir>/labels.am failed at slice 2: No space left on device; check free disk space",
        disk_full_amira),
    Row("disk-full-zarr", "predict", "a disk that fills up while writing a Zarr output",
        "writing <dir>/labels.zarr failed after slice 1: No space left on device; check free disk space",
        disk_full_zarr),
    Row("io-threads-setting", "predict", "BONE_AVIZO_IO_THREADS set to something other than a positive whole number",
        "BONE_AVIZO_IO_THREADS='many' is not a positive whole number; set it to the threads volume I/O may use "
        "(e.g. 4) or unset it", io_threads_not_a_number),
    # model files
    # outputs onto inputs
    Row("output-is-input", "predict", "--output the same file as --input, with --overwrite",
        "--output <dir>/scan.tif is the same file as --input <dir>/scan.tif; writing it would destroy that "
        "input (--overwrite never replaces an input): choose another output path",
        predict_output_is_input),
    Row("output-hard-link", "predict", "--output a hard link to the scan, with --overwrite",
        "--output <dir>/labels.tif is a hard link to --input <dir>/scan.tif; writing it would destroy that "
        "input (--overwrite never replaces an input): choose another output path",
        predict_output_hard_link),
    Row("output-symlink", "predict", "--output a symbolic link to the scan, with --overwrite",
        "--output <dir>/link.tif is the same file as --input <dir>/scan.tif; writing it would destroy that "
        "input (--overwrite never replaces an input): choose another output path",
        predict_output_through_link),
    Row("output-in-slice-folder", "predict", "--output inside the folder of TIFF slices being read",
        "--output <dir>/slices/labels.tif lies inside --input <dir>/slices; writing it would destroy that "
        "input (--overwrite never replaces an input): choose another output path",
        predict_output_in_slice_folder),
    Row("output-is-mhd-data", "predict", "--output the data file of the MetaImage (.mhd) scan being read",
        "--output <dir>/scan.raw is the same file as --input (its data file) <dir>/scan.raw; writing it would "
        "destroy that input (--overwrite never replaces an input): choose another output path",
        predict_output_is_mhd_data),
    Row("output-is-model", "predict", "--output the model file being read, with --overwrite",
        "--output <dir>/model.safetensors is the same file as --model <dir>/model.safetensors; writing it "
        "would destroy that input (--overwrite never replaces an input): choose another output path",
        predict_output_is_model),
    Row("model-missing", "model", "--model path that does not exist",
        "--model: <dir>/none.safetensors does not exist; check the path",
        model_missing),
    Row("model-truncated", "model", "a model file cut in half",
        "model file <dir>/model.safetensors is truncated: its tensors need 1138988 bytes of data, the "
        "file holds 555042; the file is damaged (copy it again)",
        model_truncated),
    Row("model-huge-header", "model", "a safetensors header length of 200 MB",
        "model file <dir>/huge.safetensors declares a 209715200-byte header (limit 104857600); the file "
        "is damaged or not a model file",
        model_huge_header),
    Row("model-header-disagrees", "model", "a tensor shape in the header that disagrees with the data",
        "model file <dir>/model.safetensors cannot be read (<...>); the file is damaged",
        model_header_disagrees),
    Row("model-pickle-code", "model", "a .pth whose pickle would create a file",
        "refused to load <dir>/evil.pth: it holds Python objects other than tensors and plain data (it "
        "references io.open); loading it could run arbitrary code. Re-save the checkpoint as "
        "{'model_state': state_dict, 'metadata': dict of plain values}",
        model_pickle_payload),
    Row("model-bone-3d", "model", "a BONe checkpoint trained in its 3D mode",
        "<dir>/bone3d.pth: 3D models are not supported (BONe metadata: mode '3D', is_3d True); bone_avizo "
        "runs 2D and 2.5D models: train one in BONe's 2D or 2.5D mode, or with bone_avizo fit",
        model_bone_3d),
    Row("model-no-metadata", "model", "a safetensors file without bone_avizo metadata",
        "<dir>/plain.safetensors is a safetensors file without bone_avizo metadata; it is not a "
        "bone_avizo model file (only files written by save_model can be loaded)",
        model_plain_safetensors),
    Row("model-onnx-no-metadata", "model", "an ONNX file exported without bone_avizo metadata",
        "<dir>/bare.onnx is an ONNX file without bone_avizo metadata (architecture, classes, patch size, "
        "normalisation); give the model file it was exported from (.safetensors or BONe .pth), or export that "
        "with `bone-avizo export --model MODEL --output bare.onnx`",
        model_onnx_without_metadata),
    Row("model-unknown-arch", "model", "metadata naming an unknown architecture",
        "model file <dir>/model.safetensors: metadata key 'arch': unknown architecture 'unet3000'; valid "
        "architectures: unet, unetplusplus, fpn, pspnet, deeplabv3, deeplabv3plus, linknet, manet, pan, "
        "upernet, segformer, dpt",
        model_unknown_arch),
    Row("model-normalization-mask", "model", "metadata naming an unknown normalisation mask",
        "model file <dir>/model.safetensors: metadata key 'normalization_mask': 'negative' is not one of "
        "positive, nonzero, all",
        model_unknown_normalization_mask),
    Row("model-newer-format", "model", "a model file of a newer format version",
        "model file <dir>/model.safetensors has format version '7', newer than this bone_avizo reads (1);"
        " update bone_avizo",
        model_newer_format),
    Row("model-weights-mismatch", "model", "metadata (3 input channels) that does not fit the weights",
        "weights in <dir>/model.safetensors do not fit the architecture its metadata names; shape "
        "mismatch (file vs architecture) (1): encoder.model.conv_stem.weight (16, 1, 3, 3) vs (16, 3, 3, "
        "3); the metadata (arch, encoder, in_channels, num_classes, arch_options) must match the trained "
        "network",
        model_weights_other_arch),
    Row("model-wrong-for-data", "model", "a 2.5D model (5 slices) on a 3-slice scan",
        "the volume has 3 slices along the slicing axis but the 2.5D model needs stacks of 5; use a "
        "larger volume or a 2D model",
        model_needs_more_slices),
    Row("export-exists", "model", "export onto an existing .onnx",
        "output <dir>/model.onnx already exists; choose another name or allow overwriting (--overwrite)",
        export_output_exists),
    Row("export-disk-full", "model", "a disk that fills up while exporting a model file",
        "cannot write model file <dir>/copy.safetensors: No space left on device; check the folder's "
        "permissions and free space",
        export_disk_full),
    # iou
    Row("export-onto-model", "model", "export --output the model file being read, with --overwrite",
        "--output <dir>/model.safetensors is the same file as --model <dir>/model.safetensors; writing it "
        "would destroy that input (--overwrite never replaces an input): choose another output path",
        export_output_is_model),
    Row("phantom-outputs-collide", "phantom", "phantom with --output and --labels the same file",
        "--output <dir>/p.tif is the same file as --labels <dir>/p.tif; give each output its own path",
        phantom_outputs_collide),
    Row("phantom-onto-config", "phantom", "phantom --labels the --config file being read",
        "--labels <dir>/opts.json is the same file as --config <dir>/opts.json; writing it would destroy that "
        "input (--overwrite never replaces an input): choose another output path",
        phantom_output_is_config),
    Row("demo-onto-model", "demo", "demo --model a file named like one of the demo's outputs",
        "--output <dir>/phantom_scan.tif is the same file as --model <dir>/phantom_scan.tif; writing it would "
        "destroy that input (--overwrite never replaces an input): choose another output path",
        demo_output_is_model),
    Row("cv-in-slice-folder", "cv", "cv --output the folder of TIFF slices of a scan",
        "--output <dir>/s0/study.json lies inside --images/--labels <dir>/s0; writing it would destroy that "
        "input (--overwrite never replaces an input): choose another output path",
        cv_output_in_slice_folder),
    Row("bench-holds-labels", "bench", "bench --output a study folder whose task folders hold a label volume",
        "--output <dir>/study/tasks is a folder holding --images/--labels <dir>/study/tasks/l.npy; writing it "
        "would destroy that input (--overwrite never replaces an input): choose another output path",
        bench_output_holds_labels),
    Row("iou-shapes", "iou", "prediction and reference of different shapes",
        "prediction has shape (7, 13, 29) (z, y, x) but reference has shape (7, 13, 20); both must cover "
        "the same voxels (crop or resample one)",
        iou_shapes_differ),
    Row("iou-beyond-classes", "iou", "labels 0..2 with --num-classes 2",
        "reference holds labels up to 2 (the largest, first at z=0, y=0, x=0) but num_classes is 2 "
        "(labels 0..1); set --num-classes 3 or fix the labels",
        iou_label_beyond_classes),
    Row("iou-grey-reference", "iou", "a grey-value scan given as the reference",
        "reference holds at least 250 distinct values, the largest 249 (first at z=0, y=1, x=24; dtype uint8); "
        "a label volume holds classes 0..N-1 with N at most 64 (--max-classes): give the label volume, not "
        "the grey-value scan, or raise --max-classes above 249 if it really has 250 classes",
        iou_grey_value_reference),
    Row("iou-not-labels", "iou", "a float prediction with values like 2.5",
        "prediction holds non-integer values (e.g. 2.5 at z=0, y=0, x=0); a label volume holds whole "
        "numbers 0..N-1: threshold or argmax the probabilities first",
        iou_not_labels),
    Row("iou-negative", "iou", "a prediction with label -1",
        "prediction holds the negative label -1 (at z=0, y=0, x=1); labels must be 0..N-1: relabel, or "
        "mark unknown voxels with a non-negative --ignore-label",
        iou_negative_labels),
    Row("iou-unpaired", "iou", "two predictions for one reference",
        "2 --prediction volume(s) but 1 --reference volume(s); give one reference per prediction, in the "
        "same order",
        iou_unpaired),
    Row("iou-report-folder", "iou", "--report in a folder that does not exist",
        "--report: folder <dir>/no/such does not exist; create it first",
        iou_report_folder_missing),
    Row("iou-disk-full", "iou", "a full disk when the report is written",
        "cannot write <dir>/report.json: No space left on device; check permissions and free space",
        iou_disk_full),
    Row("iou-bad-label-map", "iou", "--map-prediction 2-1 (not SRC:DST)",
        "map_prediction (--map-prediction): '2-1' is not SRC:DST with two labels 0..255 (e.g. 2:1)",
        iou_bad_label_map),
    Row("iou-map-beyond-classes", "iou", "--map-prediction 2:5 with --num-classes 3",
        "after relabelling (--map-prediction) the prediction holds label 5 but num_classes is 3 (labels 0..2); "
        "set --num-classes 6 or map it to a smaller label",
        iou_map_beyond_classes),
    Row("iou-voxel-sizes-differ", "iou", "a prediction recorded at 0.02 mm and its reference at 0.01 mm",
        "prediction voxel size 0.02 x 0.02 x 0.02 mm differs from the reference's 0.01 x 0.01 x 0.01 mm; "
        "check that both volumes are of the same scan, or accept it with --allow-voxel-size-mismatch (the "
        "reference's is used)",
        iou_voxel_sizes_differ),
    # fit
    Row("iou-report-onto-reference", "iou", "--report the reference volume",
        "--report <dir>/truth.npy is the same file as --reference <dir>/truth.npy; writing it would destroy "
        "that input (--overwrite never replaces an input): choose another output path",
        iou_report_is_reference),
    Row("fit-label-shape", "fit", "labels of another shape than their scan",
        "scan scan0: image <dir>/scans/scan0.npy has shape (5, 40, 48) (z, y, x) but labels "
        "<dir>/scans/scan0_labels.npy have (5, 40, 40); give the label volume made for this image",
        fit_label_shape),
    Row("fit-beyond-classes", "fit", "labels up to 4 with --num-classes 3",
        "labels exceed the 3 declared classes (0..2) in scan1 (uint8, 3 distinct values, the largest 4); fix "
        "the labels or declare more classes",
        fit_labels_beyond_classes),
    Row("fit-grey-labels", "fit", "a grey-value scan given as a label volume",
        "the label volume of scan scan1 (<dir>/scans/scan1.npy) holds 160 distinct values, the largest 180 "
        "(dtype uint8); a label volume holds classes 0..N-1 with N at most 64 (--max-classes): give the label "
        "volume, not the grey-value scan, or raise --max-classes above 180 if it really has 181 classes",
        fit_grey_value_labels),
    Row("fit-float-labels", "fit", "labels with values like 0.5",
        "labels of scan scan0 (<dir>/scans/scan0_labels.npy) are not integers (slices from z=0); label "
        "volumes hold class numbers 0..N-1",
        fit_float_labels),
    Row("fit-nan-image", "fit", "a training scan with a NaN slice",
        "scan2 contains NaN or infinite values (the first in slice z=2); replace them (e.g. "
        "numpy.nan_to_num) before training",
        fit_nan_image),
    Row("fit-unknown-arch", "fit", "--arch unet3000",
        "unknown architecture 'unet3000'; valid architectures: unet, unetplusplus, fpn, pspnet, "
        "deeplabv3, deeplabv3plus, linknet, manet, pan, upernet, segformer, dpt",
        fit_unknown_arch),
    Row("fit-weights-onnx", "fit", "--weights bone.onnx (an exported ONNX file)",
        "<dir>/bone.onnx is an exported ONNX file, which predicts but cannot be trained or exported again; give "
        "the .safetensors model file it was exported from",
        fit_weights_onnx),
    Row("fit-unknown-encoder", "fit", "--encoder resnet1800",
        "unknown encoder 'resnet1800'; did you mean resnet18, resnet101, resnet50, resnet152, "
        "se_resnet101? see all 76 encoders with `python -m bone_avizo.standalone info --encoders` (timm "
        "models: 'tu-<timm name>')",
        fit_unknown_encoder),
    Row("fit-patch-too-large", "fit", "--patch-size 64 on 40 x 48 slices",
        "patch size 64 does not fit the 40 x 48 slices of scan scan0 along axis z; use --patch-size 32",
        fit_patch_too_large),
    Row("fit-bad-loss", "fit", "--loss jaccard+hinge",
        "loss (--loss): 'hinge' in 'jaccard+hinge' is not a loss; use jaccard, dice, lovasz, focal, "
        "tversky, focal_tversky, ce, or a sum like 'jaccard+ce' or 'dice+0.5*focal'",
        fit_bad_loss),
    Row("fit-bad-lr", "fit", "--lr -0.1",
        "lr (--lr): '-0.1' is not valid; expected 1e-09..10.0",
        fit_bad_lr),
    Row("fit-one-scan", "fit", "one scan and no validation scans",
        "a scan-level split needs at least 2 scans, got 1; give more scans, give validation scans "
        "explicitly (--val-images/--val-labels), or set --val-fraction 0 to train without validation",
        fit_one_scan),
    Row("fit-unpaired", "fit", "three --images and one --labels",
        "3 image volume(s) but 1 label volume(s); give one label volume per image volume, in the same "
        "order",
        fit_unpaired),
    Row("fit-output-exists", "fit", "a model file that already exists",
        "output <dir>/m.safetensors already exists; choose another name or allow overwriting "
        "(--overwrite)",
        fit_output_exists),
    Row("fit-output-folder", "fit", "--output in a folder that does not exist",
        "output folder <dir>/no/such does not exist; create it first",
        fit_output_folder_missing),
    Row("fit-onto-labels", "fit", "--output a label volume being trained on, with --overwrite",
        "--output <dir>/scans/scan1_labels.npy is the same file as --labels <dir>/scans/scan1_labels.npy; "
        "writing it would destroy that input (--overwrite never replaces an input): choose another output path",
        fit_output_is_labels),
    Row("fit-onto-weights", "fit", "--output the model file given as --weights, with --overwrite",
        "--output <dir>/m.safetensors is the same file as --weights <dir>/m.safetensors; writing it would "
        "destroy that input (--overwrite never replaces an input): choose another output path",
        fit_output_is_weights),
    Row("fit-resume-nothing", "fit", "--resume without a checkpoint",
        "no checkpoint <dir>/m.safetensors.ckpt to resume from; start the run without --resume",
        fit_resume_without_checkpoint),
    Row("fit-resume-foreign", "fit", "--resume with a checkpoint that is not ours",
        "checkpoint <dir>/m.safetensors.ckpt lacks the training state (model, optimizer, epoch ...); it "
        "is not a bone_avizo checkpoint: delete it and start again without --resume",
        fit_resume_foreign_checkpoint),
    Row("fit-disk-full-model", "fit", "a full disk when the first model file is written",
        "cannot write model file <dir>/m.safetensors: No space left on device; check the folder's "
        "permissions and free space",
        fit_disk_full_model, keeps=FIT_LOGS),
    Row("fit-disk-full-checkpoint", "fit", "a disk that fills up while the checkpoint is written",
        "cannot write checkpoint <dir>/m.safetensors.ckpt: No space left on device; check the folder's "
        "permissions and free space",
        fit_disk_full_checkpoint, keeps=("m.safetensors", *FIT_LOGS)),
    Row("fit-ranked-cuda-no-gpu", "fit", "--device cuda under torchrun (WORLD_SIZE=2) without CUDA",
        "device cuda requested but CUDA is not available here; use --device cpu",
        fit_ranked_cuda_without_gpu),
    Row("avizo-root-missing", "install", "avizo install --avizo-root a folder that does not exist",
        "--avizo-root: Avizo/Amira folder <dir>/Avizo-2024.1 does not exist (or is not a folder); check the path: "
        "the folder that holds Avizo's bin/ and share/, e.g. \"C:\\Program Files\\Thermo Scientific "
        "Amira-Avizo3D 2024.1\" or /opt/Avizo-2024.1",
        avizo_root_missing),
    # the Avizo face
    Row("avizo-pickle-code", "avizo", "BONeDLPred with a .pth whose pickle would create a file",
        "refused to load <dir>/evil.pth: it holds Python objects other than tensors and plain data (it "
        "references io.open); loading it could run arbitrary code. Re-save the checkpoint as "
        "{'model_state': state_dict, 'metadata': dict of plain values}",
        avizo_pickle_payload),
    Row("avizo-truncated-model", "avizo", "BONeDLPred with a model file cut in half",
        "model file <dir>/model.safetensors is truncated: its tensors need 1138988 bytes of data, the "
        "file holds 555042; the file is damaged (copy it again)",
        avizo_truncated_model),
    Row("avizo-nan-scan", "avizo", "BONeDLPred on a float field with a NaN slice",
        "scan.am contains 377 NaN or infinite values; replace them (e.g. numpy.nan_to_num) before "
        "segmenting",
        avizo_nan_scan),
    Row("avizo-wrong-model", "avizo", "BONeDLPred: a 2.5D model (5 slices) on a 3-slice field",
        "the volume has 3 slices along the slicing axis but the 2.5D model needs stacks of 5; use a "
        "larger volume or a 2D model",
        avizo_needs_more_slices),
    Row("avizo-fit-nan-scan", "avizo", "BONeDLFit: a float scan with a NaN slice",
        "scan1.am contains 1920 NaN or infinite values; replace them (e.g. numpy.nan_to_num) before segmenting",
        avizo_fit_nan_scan),
    Row("avizo-fit-disk-full", "avizo", "BONeDLFit: a full disk while the model is written in its training folder",
        "cannot write model file <dir>/bone.safetensors.fitting/bone.safetensors: No space left on device; "
        "check the folder's permissions and free space",
        avizo_fit_disk_full),
    Row("avizo-iou-classes", "avizo", "BONeIoU: labels 0..2 with num_classes 2",
        "reference holds labels up to 2 (the largest, first at z=0, y=0, x=0) but num_classes is 2 "
        "(labels 0..1); set --num-classes 3 or fix the labels",
        avizo_iou_label_beyond_classes),
    Row("avizo-iou-shapes", "avizo", "BONeIoU: fields of different shapes",
        "prediction has shape (7, 13, 29) (z, y, x) but reference has shape (7, 13, 20); both must cover "
        "the same voxels (crop or resample one)",
        avizo_iou_shapes_differ),
)


def expected_pattern(message: str, folder: Path) -> str:
    """A regular expression for ``message``: <dir> is ``folder``, <...> any text (a library's words)."""
    parts = [re.escape(part).replace(re.escape("<dir>"), re.escape(str(folder)))
             for part in message.split("<...>")]
    return ".+?".join(parts)


def _params():
    for row in CATALOGUE:
        marks = [pytest.mark.xfail(strict=True, reason=row.bug)] if row.bug else []
        yield pytest.param(row, id=row.id, marks=marks)


@pytest.mark.parametrize("row", list(_params()))
def test_bad_input(row: Row, tmp_path, tiny_model, phantom_pairs, monkeypatch):
    folder = tmp_path / "case"
    folder.mkdir()
    ctx = Ctx(folder, tiny_model, phantom_pairs, monkeypatch)
    monkeypatch.chdir(folder)
    action = row.setup(ctx)
    before = tree_state(folder)
    message = action.run(ctx)
    monkeypatch.undo()
    assert re.fullmatch(expected_pattern(row.message, folder), message), message
    after = tree_state(folder)
    assert {k: after.get(k) for k in before} == before, "an input or an existing output was changed"
    assert sorted(set(after) - set(before)) == sorted(row.keeps), "something was left behind"


def doc_rows() -> list[tuple[str, str, str, str]]:
    """The catalogue table of docs/reliability.md as (id, area, bad input, message) rows."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## The bad-input catalogue\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| id |", "|---")):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4 and cells[3].startswith("`` ") and cells[3].endswith(" ``"), line
        rows.append((cells[0], cells[1], cells[2], cells[3][3:-3]))
    return rows


def test_the_docs_table_mirrors_the_catalogue():
    assert doc_rows() == [(row.id, row.area, row.bad, row.message) for row in CATALOGUE]
    assert len({row.id for row in CATALOGUE}) == len(CATALOGUE) >= 30
