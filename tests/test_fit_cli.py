"""``python -m bone_avizo.standalone fit``: flags, a run, resume, BONe's folder layout, torchrun (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bone_avizo.config import FitConfig
from bone_avizo.errors import Cancelled
from bone_avizo.fit import checkpoint_path, fit_model, load_checkpoint
from bone_avizo.models import load_model
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.standalone.__main__ import build_parser, main

TINY_FLAGS = ["--encoder-depth", "3", "--decoder-channels", "8", "8", "8", "--patch-size", "32",
              "--batch-size", "2", "--steps-per-epoch", "2", "--patches-per-slice", "2", "--val-slices", "2",
              "--no-plot"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_scans")
    images, labels = [], []
    for seed in range(3):
        image, lab = make_phantom(PhantomConfig(shape=(32, 48, 64), seed=10 + seed))
        np.save(folder / f"s{seed}.npy", image.array)
        np.save(folder / f"s{seed}_labels.npy", lab.array)
        images.append(str(folder / f"s{seed}.npy"))
        labels.append(str(folder / f"s{seed}_labels.npy"))
    return images, labels


def test_contract_flags_parse():
    args = build_parser().parse_args([
        "fit", "--images", "a.tif", "--labels", "b.tif", "--output", "m.safetensors", "--arch", "fpn",
        "--encoder", "resnet34", "--patch-size", "128", "--epochs", "3", "--batch-size", "4", "--lr", "0.01",
        "--loss", "dice+ce", "--optimizer", "sgd", "--seed", "7", "--planes", "xy", "yz", "--in-channels", "5",
        "--val-images", "c.tif", "--val-labels", "d.tif"])
    assert (args.arch, args.encoder, args.patch_size, args.epochs, args.batch_size) == ("fpn", "resnet34", "128", "3", "4")
    assert (args.lr, args.loss, args.optimizer, args.seed, args.planes, args.in_channels) == (
        "0.01", "dice+ce", "sgd", "7", ["xy", "yz"], "5")


def test_fit_command_writes_model_and_resolved_config(scans, tmp_path, capsys):
    images, labels = scans
    out = tmp_path / "bone.safetensors"
    code = main(["fit", "--images", *images[:2], "--labels", *labels[:2], "--val-images", images[2],
                 "--val-labels", labels[2], "--output", str(out), "--epochs", "1", "--in-channels", "3",
                 "--planes", "xy", "xz", *TINY_FLAGS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "best epoch 1" in captured.out
    # the budget at the start, with a warning that 2 steps are too few; the model file reported once
    assert "training budget: 1 epochs x 2 optimiser steps = 2 steps; 8 patches of 32 px seen" in captured.err
    assert "only 2 optimiser steps in this run, too few to learn well (at least 200 from new weights); set " \
           "--steps-per-epoch 200" in captured.err
    assert captured.err.count(f"wrote {out}") == 1 and "saved model" not in captured.err
    meta = load_model(out).metadata
    assert meta.training["val_scans"] == ["s2"] and meta.training["train_scans"] == ["s0", "s1"]
    assert meta.planes == ("xy", "xz")
    resolved = json.loads(out.with_name(out.name + ".config.json").read_text())
    assert resolved["options"]["in_channels"] == 3 and resolved["validation"][0]["name"] == "s2"
    # a second run without --overwrite is refused, and leaves the model alone
    before = out.read_bytes()
    code = main(["fit", "--images", *images, "--labels", *labels, "--output", str(out), *TINY_FLAGS])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_fit_resume_from_the_command_line(scans, tmp_path, capsys):
    images, labels = scans
    out = tmp_path / "r.safetensors"
    config = FitConfig(epochs=2, encoder_depth=3, decoder_channels=(8, 8, 8), patch_size=32, batch_size=2,
                       steps_per_epoch=2, patches_per_slice=2, val_slices=2, plot=False)
    with pytest.raises(Cancelled):
        fit_model(list(zip(images, labels)), config, output=out, progress=lambda d, t, m: "epoch 2" in m)
    assert main(["fit", "--output", str(out), "--resume"]) == 0, capsys.readouterr().err
    assert load_checkpoint(checkpoint_path(out))["epoch"] == 2
    assert [r["epoch"] for r in load_model(out).metadata.training["history"]] == [1, 2]
    assert main(["fit", "--output", str(out), "--resume", "--patch-size", "64"]) == 2
    assert "differ" in capsys.readouterr().err


def test_bone_folder_layout(tmp_path, capsys):
    import tifffile

    for k, name in enumerate(("RatA/_Scan", "RatB", "RatC")):
        image, labels = make_phantom(PhantomConfig(shape=(4, 64, 64), seed=20 + k))
        for root, vol in (("images", image.array), ("masks", labels.array)):
            folder = tmp_path / root / name
            folder.mkdir(parents=True)
            for z in range(vol.shape[0]):
                tifffile.imwrite(folder / f"slice_{z:04d}.tif", vol[z])
    out = tmp_path / "m.safetensors"
    code = main(["fit", "--image-folders", str(tmp_path / "images"), "--mask-folders", str(tmp_path / "masks"),
                 "--output", str(out), "--epochs", "1", "--val-fraction", "0.34", *TINY_FLAGS])
    assert code == 0, capsys.readouterr().err
    training = load_model(out).metadata.training
    assert sorted(training["train_scans"] + training["val_scans"]) == ["RatA", "RatB", "RatC"]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_with_gloo(scans, tmp_path):
    images, labels = scans
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bone_avizo.standalone", "fit", "--images", *images, "--labels", *labels, "--output", str(out),
           "--epochs", "2", "--device", "cpu", "--val-fraction", "0.34", *TINY_FLAGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1: weights agree with rank 0" in done.stderr
    training = load_model(out).metadata.training
    assert training["world_size"] == 2 and training["epochs_run"] == 2
    state = load_checkpoint(checkpoint_path(out))
    assert state["epoch"] == 2


@pytest.mark.parametrize("options, batches, steps, warned", [
    (dict(epochs=8, batch_size=32), 1, 8, "set --steps-per-epoch 25"),        # two 10-slice scans at the defaults
    (dict(epochs=10, accumulate=2, steps_per_epoch=30), 60, 300, None),
    (dict(epochs=6, weights="tuned.safetensors"), 10, 60, None),              # fine-tuning needs fewer
    (dict(epochs=4, weights="tuned.safetensors"), 10, 40, "at least 50 to fine-tune a model"),
])
def test_the_training_budget_is_reported_and_too_few_steps_warned(caplog, options, batches, steps, warned):
    from bone_avizo.fit.trainer import report_budget

    with caplog.at_level("INFO", logger="bone_avizo"):
        assert report_budget(FitConfig(**options), batches=batches) == steps
    assert f"= {steps} steps" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (warned is None and not warnings) or (len(warnings) == 1 and warned in warnings[0])


def test_max_classes_is_a_check_not_a_training_option():
    """Raising --max-classes on --resume, or a checkpoint/study written before the option existed, is fine:
    it changes what labels are accepted, not how the model trains."""
    from bone_avizo.fit.checkpoint import check_resumable
    from bone_avizo.studies.tasks import shaping_options

    older = {k: v for k, v in FitConfig().to_dict().items() if k != "max_classes"}
    check_resumable(older, FitConfig(max_classes=128).to_dict(), "m.safetensors.ckpt")
    assert shaping_options(FitConfig(max_classes=128).to_dict()) == shaping_options(older)
