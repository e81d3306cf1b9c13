"""fit_model takes volumes already in memory (ArraySource in a ScanSpec): no file is written for them."""
from __future__ import annotations

import numpy as np

from bone_avizo.config import FitConfig
from bone_avizo.data.scans import ScanSpec, location_text, open_scan
from bone_avizo.fit import fit_model
from bone_avizo.io.base import ArraySource
from bone_avizo.volume import Volume

TINY = dict(arch="unet", encoder="mobilenet_v2", encoder_depth=3, decoder_channels=(8, 8, 8), patch_size=32,
            batch_size=2, epochs=1, patches_per_slice=1, device="cpu", threads=1, val_fraction=0.0)


def pair(seed: int):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 3000, (6, 40, 40)).astype(np.uint16)
    labels = (image > 1500).astype(np.uint8)
    return ArraySource(Volume(image, name=f"scan{seed}")), ArraySource(Volume(labels, name=f"scan{seed}.labels"))


def test_in_memory_scans_are_opened_as_they_are():
    image, labels = pair(0)
    spec = ScanSpec(image, labels)
    assert spec.name == "scan0" and spec.to_dict() == {"name": "scan0", "image": "in memory (scan0)",
                                                      "labels": "in memory (scan0.labels)",
                                                      "image_options": {}, "label_options": {}}
    scan = open_scan(spec)
    scan.close()  # closing does not drop the caller's data
    assert scan.image is image and scan.image.read_slab(0, 1).shape == (1, 40, 40)
    assert location_text(image) == "in memory (scan0)"


def test_fit_trains_on_in_memory_scans_and_writes_only_the_model(tmp_path):
    train = [ScanSpec(*pair(0)), ScanSpec(*pair(1))]
    validation = [ScanSpec(*pair(2))]
    result = fit_model(train, FitConfig(**TINY), output=tmp_path / "m.safetensors", validation=validation)
    assert result.metadata.training["train_scans"] == ["scan0", "scan1"]
    assert not list(tmp_path.glob("*.npy")) and (tmp_path / "m.safetensors").is_file()
