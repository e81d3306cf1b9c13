"""The demo runs end to end with the shipped model and writes every promised file."""
import json

import pytest

from bone_avizo.demo import default_model_path, run_demo
from bone_avizo.models import load_model
from bone_avizo.standalone.__main__ import main


def test_shipped_model_is_a_bone_pores_unet():
    loaded = load_model(default_model_path())
    meta = loaded.metadata
    assert (meta.arch, meta.encoder, meta.num_classes) == ("unet", "resnet18", 3)
    assert meta.class_names == ("background", "bone", "pores") and meta.patch_size == 256
    assert meta.training["train_scans"] and meta.training["val_scans"]
    assert not set(meta.training["train_scans"]) & set(meta.training["val_scans"])


def test_demo_command_writes_labels_report_and_preview(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--shape", "12", "160", "160", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "preview" in printed
    report = json.loads((out / "iou_report.json").read_text())
    assert [c["name"] for c in report["per_class"]] == ["background", "bone", "pores"]
    # a trained model, not chance (small phantoms are harder; the full-size figure is in models/README.md)
    assert report["per_class"][1]["iou"] > 0.8 and report["mean_iou"] > 0.6
    for name in ("phantom_scan.tif", "phantom_reference_labels.tif", "phantom_predicted_labels.tif",
                 "iou_report.csv", "preview.png"):
        assert (out / name).stat().st_size > 0


def test_demo_refuses_to_overwrite_an_earlier_demo(tmp_path):
    run_demo(tmp_path, shape=(4, 64, 64))
    assert main(["demo", "--output", str(tmp_path), "--shape", "4", "64", "64"]) == 2
    assert main(["demo", "--output", str(tmp_path), "--shape", "4", "64", "64", "--overwrite"]) == 0


@pytest.mark.slow
def test_full_size_demo_meets_the_model_card_figure(tmp_path):
    result = run_demo(tmp_path)
    assert result.iou.mean_iou > 0.94  # models/README.md: 0.949 for the demo phantom (seed 2024)


def test_demo_refuses_a_phantom_thinner_than_the_models_stack(tmp_path, capsys):
    from bone_avizo.models import LoadedModel, load_model, save_model

    loaded = load_model(default_model_path())
    if loaded.metadata.context_slices == 1:  # a 2D model: make a 3-slice one from it
        from bone_avizo.fit.network import widen_to_stack

        module = widen_to_stack(loaded.module, 3, source=default_model_path())
        wide = tmp_path / "wide.safetensors"
        save_model(wide, module, loaded.metadata.with_(in_channels=3, context_slices=3))
        loaded = LoadedModel(module, load_model(wide).metadata, wide, "bone_avizo")
    stack = loaded.metadata.context_slices
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--shape", str(stack - 1), "64", "64", "--model", str(loaded.source_path)]
    assert main(args) == 2
    assert "--shape with Z >= " in capsys.readouterr().err and not out.exists()


def test_preview_draws_slices_to_scale(tmp_path):
    """The xz panel uses the voxel size: z voxels twice as thick as x voxels are drawn twice as tall."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bone_avizo.config import IoUConfig
    from bone_avizo.demo import plane_aspect, preview_figure
    from bone_avizo.io import save_volume
    from bone_avizo.metrics import compute_iou
    from bone_avizo.volume import Volume

    assert plane_aspect((0.04, 0.02, 0.01), 0) == 2.0 and plane_aspect((0.04, 0.02, 0.01), 1) == 4.0
    assert plane_aspect((0.04, 0.02, 0.01), 2) == 2.0
    labels = (np.arange(6 * 8 * 10).reshape(6, 8, 10) % 3).astype(np.uint8)
    files = {"scan": save_volume(Volume(labels * 50, voxel_size=(0.04, 0.02, 0.02)), tmp_path / "s.tif"),
             "labels": save_volume(Volume(labels, voxel_size=(0.04, 0.02, 0.02)), tmp_path / "l.tif")}
    fig = preview_figure(plt, files, compute_iou(labels, labels, IoUConfig()))
    try:
        assert [fig.axes[k].get_aspect() for k in (0, 1)] == [1.0, 2.0]
    finally:
        plt.close(fig)
