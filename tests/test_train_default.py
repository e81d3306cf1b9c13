"""models/train_default.py: the recipe of the shipped model runs end to end (tiny sizes here)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
import train_default  # noqa: E402

from bone_avizo.io import load_volume  # noqa: E402
from bone_avizo.models import load_model  # noqa: E402
from bone_avizo.phantom import PhantomConfig, make_phantom  # noqa: E402

TINY = ["--shape", "8", "64", "64", "--patch", "64", "--epochs", "1", "--steps", "2", "--batch", "2",
        "--scans", "3", "--val-slices", "2", "--device", "cpu"]


def test_every_third_training_phantom_has_the_default_settings(tmp_path):
    shape = (6, 48, 48)
    pairs = train_default.write_phantoms(tmp_path, [100, 101, 102], shape, default_every=3)
    images = [load_volume(image).array for image, _ in pairs]
    default = make_phantom(PhantomConfig(shape=shape, seed=102))[0].array
    varied = make_phantom(train_default.phantom_config(100, shape))[0].array
    np.testing.assert_array_equal(images[2], default)
    np.testing.assert_array_equal(images[0], varied)
    assert not np.array_equal(images[0], make_phantom(PhantomConfig(shape=shape, seed=100))[0].array)


def test_training_writes_an_fp16_25d_model_with_its_card(tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert train_default.main([*TINY, "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["best_epoch"] == 1 and summary["output"] == str(out)
    loaded = load_model(out)
    meta = loaded.metadata
    assert (meta.in_channels, meta.context_slices, meta.num_classes) == (3, 3, 3)  # the shipped recipe: 2.5D
    assert meta.extra["licence"] == "MIT" and meta.extra["model_card"] == "models/README.md"
    assert meta.training["train_scans"] == ["phantom_100", "phantom_101", "phantom_102"]
    assert (tmp_path / "work" / "model_fp32.safetensors.ckpt").is_file()  # kept for --resume


def test_an_interrupted_run_continues_with_resume(tmp_path, monkeypatch):
    from bone_avizo.fit import trainer

    work, out = tmp_path / "work", tmp_path / "model.safetensors"
    two_epochs = [*TINY, "--epochs", "2", "--workdir", str(work), "--out", str(out)]
    save = trainer.ckpt.save_checkpoint

    def save_then_stop(*args, **kwargs):  # the machine's time limit, right after epoch 1's checkpoint
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.ckpt, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_default.main(two_epochs)
    assert (work / "model_fp32.safetensors").is_file() and not out.exists()
    monkeypatch.setattr(trainer.ckpt, "save_checkpoint", save)
    assert train_default.main([*two_epochs, "--resume"]) == 0
    history = json.loads((work / "model_fp32.safetensors.history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2] and load_model(out).metadata.training["epochs"] == 2


def test_more_training_phantoms_than_seeds_is_refused():
    with pytest.raises(SystemExit, match="--scans: at most 48"):
        train_default.main(["--scans", "49"])
