"""Checkpoints in the format BONe's own DLFit writes (g4nesh/dl_fit: torch.save({'model_state', 'metadata'}),
GUI architecture names, mode/is_3d, train_dataset/val_dataset/random_seed), and how ``info`` shows them."""
from __future__ import annotations

import json

import pytest
import torch

from bone_avizo.errors import ModelError
from bone_avizo.models import build_model, load_model, model_summary, read_metadata
from bone_avizo.standalone.__main__ import main

# the architecture menu of BONe's DLFit GUI (2D list plus PAN from its 3D list) -> our names
BONE_GUI_ARCHITECTURES = {"U-Net": "unet", "UNet++": "unetplusplus", "FPN": "fpn", "PSPNet": "pspnet",
                          "DeepLabV3+": "deeplabv3plus", "Linknet": "linknet", "MAnet": "manet", "PAN": "pan",
                          "UPerNet": "upernet", "Segformer": "segformer"}


def bone_metadata(**changes) -> dict:
    """Metadata as BONe's fitting loop writes it (keys and kinds of values as in its source)."""
    meta = {"train_dataset": ["/data/femur_01", "/data/femur_02"], "val_dataset": ["/data/femur_03"],
            "num_classes": 3, "num_patches": 1200, "patch_size": 64, "patch_depth": 32, "max_overlap": 0.3,
            "batch_size": 32, "augmentations": "flips_rot90_bright_contrast", "normalization": "ZScore",
            "pt_workers": 4, "prefetch_factor": 2, "random_seed": 42, "version": "1.0", "is_3d": False,
            "model_arch": "U-Net", "backbone": "resnet18", "stride": None, "in_channels": 1, "mode": "2D",
            "optimizer": "AdamW", "optim_momentum": 0.9, "optim_weight_decay": 1e-4, "learning_rate": 1e-3,
            "criterion": "Dice", "best_epoch": 12, "best_val_score": 0.91, "fitting_time_sec": 300,
            "avg_gpu_util_percent": {"0": 71.0}, "peak_vram_GB": {"0": 3.2}, "wall_time_sec": 320}
    meta.update(changes)
    return meta


def save_bone(path, module, **changes):
    torch.save({"model_state": module.state_dict(), "metadata": bone_metadata(**changes)}, path)
    return path


@pytest.mark.parametrize("gui_name", list(BONE_GUI_ARCHITECTURES))
def test_every_bone_gui_architecture_name_is_mapped(tmp_path, gui_name):
    ours = BONE_GUI_ARCHITECTURES[gui_name]
    path = tmp_path / "m.pth"
    torch.save({"model_state": {"w": torch.zeros(1)}, "metadata": bone_metadata(model_arch=gui_name)}, path)
    assert read_metadata(path).arch == ours  # the metadata alone: no network built
    if gui_name in ("U-Net", "DeepLabV3+"):  # two built and loaded in full
        save_bone(path, build_model(ours, "resnet18", in_channels=1, num_classes=3), model_arch=gui_name)
        assert load_model(path).metadata.arch == ours


def test_bone_scans_seed_and_fields_are_read(tmp_path):
    path = save_bone(tmp_path / "m.pth", build_model("unet", "resnet18", in_channels=1, num_classes=3))
    summary = model_summary(load_model(path))
    assert summary["train_scans"] == ["/data/femur_01", "/data/femur_02"]
    assert summary["val_scans"] == ["/data/femur_03"]
    training = summary["training"]
    assert training["seed"] == 42 and training["lr"] == 1e-3 and summary["normalization"] == "zscore"
    assert "random_seed" in training["bone_fields_read"] and "train_dataset" in training["bone_fields_read"]
    assert training["bone_fields_ignored"] == ["avg_gpu_util_percent", "patch_depth", "prefetch_factor",
                                               "pt_workers", "stride"]
    assert set(training["bone_fields_read"]).isdisjoint(training["bone_fields_ignored"])
    assert set(training["bone_fields_read"]) | set(training["bone_fields_ignored"]) == set(bone_metadata())


def test_info_shows_bone_scans_seed_and_fields(tmp_path, capsys):
    path = save_bone(tmp_path / "m.pth", build_model("unet", "resnet18", in_channels=1, num_classes=3))
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "  train_scans: /data/femur_01, /data/femur_02" in text and "  val_scans: /data/femur_03" in text
    assert "  seed: 42" in text
    assert "  bone_fields_read: " in text and "  bone_fields_ignored: " in text and "pt_workers" in text
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train_scans"] == ["/data/femur_01", "/data/femur_02"] and info["training"]["seed"] == 42


@pytest.mark.parametrize("changes", [{"is_3d": True, "mode": "3D"}, {"mode": "3D"}, {"is_3d": True}],
                         ids=["both", "mode", "is_3d"])
def test_3d_bone_checkpoints_are_refused_clearly(tmp_path, changes):
    module = build_model("unet", "resnet18", in_channels=1, num_classes=3)  # 2D weights: must not pass silently
    path = save_bone(tmp_path / "m3d.pth", module, **changes)
    for read in (read_metadata, load_model):
        with pytest.raises(ModelError, match="3D models are not supported"):
            read(path)


def test_bone_mode_decides_2d_or_2p5d(tmp_path):
    module = build_model("unet", "resnet18", in_channels=3, num_classes=3)
    meta = read_metadata(save_bone(tmp_path / "m25.pth", module, in_channels=3, mode="2.5D"))
    assert meta.context_slices == 3 and meta.in_channels == 3
