"""DLFit training: model file and metadata, logs, validation scores, resume, bad input, losses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bone_avizo.config import FitConfig
from bone_avizo.data.datasets import PatchSettings, SliceSet
from bone_avizo.data.normalize import NormStats
from bone_avizo.data.sampling import SliceRef
from bone_avizo.data.scans import ScanSpec
from bone_avizo.errors import (Cancelled, ConfigError, CorruptFileError, LabelError, OutputExistsError,
                               ShapeMismatchError)
from bone_avizo.fit import checkpoint_path, fit_model, load_checkpoint
from bone_avizo.fit.losses import build_loss, parse_loss
from bone_avizo.fit.validate import Validator, confusion, scores
from bone_avizo.models import load_model
from bone_avizo.phantom import PhantomConfig, make_phantom

TINY = dict(encoder_depth=3, decoder_channels=(8, 8, 8), patch_size=32, batch_size=2, steps_per_epoch=2,
            patches_per_slice=2, val_slices=2, plot=False)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Three 6 x 64 x 64 phantom scans (Bone-Pores labels) as .npy files."""
    folder = tmp_path_factory.mktemp("phantoms")
    pairs = []
    for seed in range(3):
        image, labels = make_phantom(PhantomConfig(shape=(6, 64, 64), seed=seed))
        np.save(folder / f"scan{seed}.npy", image.array)
        np.save(folder / f"scan{seed}_labels.npy", labels.array)
        pairs.append((folder / f"scan{seed}.npy", folder / f"scan{seed}_labels.npy"))
    return pairs


def _fit(pairs, tmp_path, name="m.safetensors", **options):
    config = FitConfig(**{**TINY, **options})
    return fit_model(pairs, config, output=tmp_path / name)


def test_fit_writes_a_model_that_predicts(phantoms, tmp_path):
    from bone_avizo.config import PredictConfig
    from bone_avizo.predict import predict_volume

    result = _fit(phantoms, tmp_path, epochs=2, in_channels=3, val_fraction=0.34, class_names=("bg", "bone", "pores"),
                  plot=True, tensorboard=True)  # TensorBoard: written, or skipped with a message
    loaded = load_model(result.model_path)
    meta = loaded.metadata
    assert (meta.in_channels, meta.context_slices, meta.num_classes, meta.patch_size) == (3, 3, 3, 32)
    assert meta.class_names == ("bg", "bone", "pores") and meta.planes == ("xy",)
    training = meta.training
    for key in ("num_classes", "patch_size", "in_channels", "model_arch", "backbone", "normalization",
                "augmentations", "learning_rate", "criterion", "best_val_score", "best_epoch", "flops_G",
                "param_count", "peak_ram_GB", "peak_vram_GB", "wall_time_sec"):
        assert key in training, key
    assert len(training["val_scans"]) == 1 and len(training["train_scans"]) == 2
    assert not set(training["val_scans"]) & set(training["train_scans"])
    assert [row["epoch"] for row in training["history"]] == [1, 2]
    assert training["best_epoch"] == result.best_epoch
    assert training["best_val_score"] == max(r["val_mean_iou"] for r in result.history)
    assert training["history"][0]["lr"] == pytest.approx(1e-3)
    rows = result.log_paths["csv"].read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,lr,val_mean_iou,val_mean_iou_fg") and "val_iou_bone" in rows[0]
    assert len(rows) == 3
    assert json.loads(result.log_paths["json"].read_text())[1]["epoch"] == 2
    assert result.log_paths["png"].read_bytes()[:4] == b"\x89PNG"
    image = np.load(phantoms[0][0])
    labels = predict_volume(image, loaded, PredictConfig(backend="torch")).labels
    assert labels.shape == image.shape and labels.array.max() <= 2


def test_validation_scores_whole_slices_through_tiles(tmp_path):
    """A model that reads the class off the grey value scores IoU 1 on slices larger than a tile."""
    labels = np.zeros((4, 40, 72), np.uint8)
    labels[:, 5:30, 10:50] = 1
    labels[:, 12:20, 60:70] = 2
    image = (labels * 100 + 50).astype(np.uint8)
    np.save(tmp_path / "i.npy", image)
    np.save(tmp_path / "l.npy", labels)
    spec = ScanSpec(tmp_path / "i.npy", tmp_path / "l.npy")
    stats = NormStats(0.0, 1.0, 0.0, 255.0, 1)
    slices = SliceSet([spec], [stats], PatchSettings(patch_size=32, context=3, normalization="minmax"))
    centres = torch.tensor([50.0, 150.0, 250.0]) / 255

    class ByGrey(torch.nn.Module):
        def forward(self, x):
            return -(x[:, 1:2] - centres.view(1, 3, 1, 1)) ** 2

    refs = [SliceRef(0, a, i) for a, n in ((0, 4), (1, 40), (2, 72)) for i in range(n)]
    for mode in ("slices", "patches"):
        refs_mode = refs if mode == "slices" else refs[:4]
        validator = Validator(slices, refs_mode, num_classes=3, patch_size=32, mode=mode, batch_size=4,
                              device=torch.device("cpu"), autocast=_null)
        cm = validator.confusion(ByGrey())
        assert cm.sum() > 0 and int(cm.sum() - cm.trace()) == 0, mode
    slices.close()


def _null():
    import contextlib
    return contextlib.nullcontext()


def test_scores_follow_bone_definition():
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    ref = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = confusion(pred, ref, 4)
    out = scores(cm.numpy())
    assert out["iou"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and out["iou"][3] is None
    assert out["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert out["mean_iou_fg"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_interrupted_and_resumed_run_ends_bit_identical(phantoms, tmp_path):
    options = dict(epochs=2, deterministic=True, val_fraction=0.34, extra_augment=("noise", "blur"), seed=3)
    straight = _fit(phantoms, tmp_path, "a.safetensors", **options)

    def cancel_in_epoch_two(done, total, message):
        return "epoch 2" in message

    config = FitConfig(**{**TINY, **options})
    with pytest.raises(Cancelled):
        fit_model(phantoms, config, output=tmp_path / "b.safetensors", progress=cancel_in_epoch_two)
    assert load_checkpoint(checkpoint_path(tmp_path / "b.safetensors"))["epoch"] == 1
    resumed = fit_model(phantoms, config, output=tmp_path / "b.safetensors", resume=True)
    a = load_checkpoint(straight.checkpoint_path)
    b = load_checkpoint(resumed.checkpoint_path)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    file_a, file_b = load_file(straight.model_path), load_file(resumed.model_path)
    assert all(torch.equal(file_a[k], file_b[k]) for k in file_a)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_bad_input_is_refused_before_training(phantoms, tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    image0, labels0 = phantoms[0]
    np.save(tmp_path / "short.npy", np.zeros((6, 64, 60), np.uint8))
    np.save(tmp_path / "float.npy", np.full((6, 64, 64), 0.5, np.float32))
    np.save(tmp_path / "four.npy", np.load(labels0).clip(0, 1) * 3)
    cases = [
        ([(image0, tmp_path / "short.npy")] + phantoms[1:], {}, ShapeMismatchError, "shape"),
        ([(image0, tmp_path / "four.npy")] + phantoms[1:], {}, LabelError, "different numbers of classes"),
        ([(image0, tmp_path / "float.npy")] + phantoms[1:], {}, LabelError, "not integers"),
        ([(image0, tmp_path / "four.npy")] + phantoms[1:], {"num_classes": 3}, LabelError, "exceed"),
        (phantoms[:1], {}, ConfigError, "at least 2 scans"),
        (phantoms, {"patch_size": 96}, ConfigError, "--patch-size 64"),
        (phantoms, {"arch": "unetxx"}, ConfigError, "unknown architecture"),
        (phantoms, {"encoder": "resnet1800"}, ConfigError, "unknown encoder"),
        (phantoms, {"loss": "jaccard+hinge"}, ConfigError, "not a loss"),
    ]
    for pairs, options, error, message in cases:
        with pytest.raises(error, match=message):
            fit_model(pairs, FitConfig(**{**TINY, **options}), output=out, overwrite=True)
        assert out.read_bytes() == b"precious"
        assert not checkpoint_path(out).exists()
    with pytest.raises(OutputExistsError):
        fit_model(phantoms, FitConfig(**TINY), output=out)
    checkpoint_path(out).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="damaged"):
        fit_model(phantoms, FitConfig(**TINY), output=out, resume=True)
    assert out.read_bytes() == b"precious"


def test_other_options_train_and_stop_early(phantoms, tmp_path):
    result = fit_model(phantoms[:2], FitConfig(**{
        **TINY, "epochs": 4, "val_mode": "patches", "foreground_crops": 0.5,
        "accumulate": 2, "optimizer": "adamw", "normalization": "minmax", "loss": "dice+ce",
        "extra_augment": ("gamma", "noise", "blur", "scale"), "early_stopping": 1, "lr": 1e-9, "min_lr": 0.0,
        "scheduler": "constant"}), output=tmp_path / "o.safetensors", validation=phantoms[2:])
    assert len(result.history) == 2 and result.best_epoch == 1
    meta = load_model(result.model_path).metadata
    assert meta.normalization == "minmax"
    assert meta.training["val_scans"] == ["scan2"] and meta.training["epochs_run"] == 2


def test_fine_tuning_starts_from_a_model_file(phantoms, tmp_path):
    first = _fit(phantoms, tmp_path, "first.safetensors", epochs=1)
    start = load_file(first.model_path)
    second = _fit(phantoms, tmp_path, "second.safetensors", epochs=1, weights=str(first.model_path), lr=1e-9, min_lr=0.0,
                  arch="fpn")
    meta = load_model(second.model_path).metadata
    assert meta.arch == "unet" and meta.training["initial_weights"] == str(first.model_path)
    tuned = load_file(second.model_path)
    diff = max(float((tuned[k].float() - start[k].float()).abs().max()) for k in start if "running" not in k
               and "num_batches" not in k)
    assert diff < 1e-3


@pytest.mark.parametrize("spec", ["jaccard", "dice", "lovasz", "focal", "tversky", "focal_tversky", "ce",
                                  "jaccard+ce", "0.5*dice+0.5*focal"])
def test_losses_train(spec):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8))
    loss = build_loss(spec)(logits, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_loss_parsing():
    assert parse_loss("Jaccard + 0.25*CE") == [(1.0, "jaccard"), (0.25, "ce")]
    assert parse_loss("focal-tversky") == [(1.0, "focal_tversky")]
    with pytest.raises(ConfigError, match="jaccard, dice"):
        parse_loss("bce")


def test_a_failed_checkpoint_write_is_an_output_error(tmp_path, monkeypatch):
    import errno

    from bone_avizo.errors import OutputWriteError
    from bone_avizo.fit.checkpoint import save_checkpoint

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputWriteError, match="cannot write checkpoint .*c.ckpt: No space left on device"):
        save_checkpoint(tmp_path / "c.ckpt", {"epoch": 1})
    assert not list(tmp_path.iterdir())


def test_resume_before_the_first_checkpoint_starts_afresh(phantoms, tmp_path):
    from bone_avizo.errors import InputFileError

    config = FitConfig(**{**TINY, "epochs": 1, "val_fraction": 0.34})
    with pytest.raises(InputFileError, match="no checkpoint"):
        fit_model(phantoms, config, output=tmp_path / "never.safetensors", resume=True)
    with pytest.raises(Cancelled):
        fit_model(phantoms, config, output=tmp_path / "m.safetensors", progress=lambda d, t, m: True)
    assert not checkpoint_path(tmp_path / "m.safetensors").exists()
    result = fit_model(phantoms, config, output=tmp_path / "m.safetensors", resume=True)
    assert [r["epoch"] for r in result.history] == [1]


def test_extra_augmentations_have_one_spelling():
    a = FitConfig(extra_augment=("noise", "gamma", "noise"))
    assert a.extra_augment == ("gamma", "noise") == FitConfig(extra_augment="gamma,noise").extra_augment


def test_resuming_with_another_number_of_processes_warns(phantoms, tmp_path, caplog):
    from bone_avizo.fit.checkpoint import save_checkpoint

    config = FitConfig(**{**TINY, "epochs": 2})
    with pytest.raises(Cancelled):
        fit_model(phantoms, config, output=tmp_path / "m.safetensors",
                  progress=lambda done, total, message: "epoch 2" in message)
    path = checkpoint_path(tmp_path / "m.safetensors")
    state = load_checkpoint(path)
    assert state["world_size"] == 1
    save_checkpoint(path, {**state, "world_size": 2})  # as if a 2-process run had written it
    with caplog.at_level("WARNING", logger="bone_avizo.fit.trainer"):
        fit_model(phantoms, config, output=tmp_path / "m.safetensors", resume=True)
    assert "resuming a run of 2 process(es) with 1" in caplog.text


def test_fine_tuning_on_labels_with_other_classes_gets_a_new_head(phantoms, tmp_path):
    """A 3-class model fine-tuned on bone/background labels (2 classes): encoder and decoder are
    kept, the segmentation head is new; the model file describes the 2 classes."""
    from bone_avizo.fit.network import build_network
    from bone_avizo.models import ModelMetadata, save_model

    three = build_network(FitConfig(**TINY), num_classes=3, device=torch.device("cpu"))
    model_path = save_model(tmp_path / "three.safetensors", three.module.eval(), ModelMetadata(
        three.arch, three.encoder, 1, 3, 32, class_names=("bg", "bone", "pores"), arch_options=three.arch_options))
    bone_only = []
    for k, (image, labels) in enumerate(phantoms[:2]):
        path = tmp_path / f"bone{k}.npy"
        np.save(path, (np.load(labels) == 1).astype(np.uint8))
        bone_only.append((image, path))
    start = load_file(model_path)
    net = build_network(FitConfig(**TINY, weights=str(model_path)), num_classes=2, device=torch.device("cpu"))
    tuned = net.module.state_dict()
    changed = sorted(k for k in start if tuned[k].shape != start[k].shape)
    assert changed == ["segmentation_head.0.bias", "segmentation_head.0.weight"]
    assert tuned["segmentation_head.0.weight"].shape[0] == 2
    assert all(torch.equal(tuned[k], start[k].to(tuned[k].dtype)) for k in start if k not in changed)
    second = _fit(bone_only, tmp_path, "bone.safetensors", epochs=1, weights=str(model_path),
                  class_names=("background", "bone"))
    meta = load_model(second.model_path).metadata
    assert (meta.num_classes, meta.class_names) == (2, ("background", "bone"))
    assert meta.normalization_mask == "nonzero" and meta.training["normalization_mask"] == "nonzero"


@pytest.mark.parametrize("epochs", [1, 2, 25])
def test_training_curves_have_whole_epoch_ticks(epochs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bone_avizo.fit.logs import curves_figure

    history = [{"epoch": e, "train_loss": 1.0 / e, "val_mean_iou": 0.5, "val_mean_iou_fg": 0.4, "val_iou": [0.6, 0.4]}
               for e in range(1, epochs + 1)]
    fig = curves_figure(plt, history, ("bg", "bone"))
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)
