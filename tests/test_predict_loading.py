"""A model file given by path loads in the background while the statistics pass runs: the same labels as a
model loaded first, and a model that fails to load stops the statistics pass and leaves nothing behind."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bone_avizo.config import PredictConfig
from bone_avizo.errors import ConfigError, ModelError
from bone_avizo.io.base import ArraySource
from bone_avizo.models import ModelMetadata, build_model, load_model, save_model
from bone_avizo.models.modelfile import input_multiple
from bone_avizo.predict import predict_volume
from bone_avizo.predict import loading
from bone_avizo.predict.loading import LoadingModel, start_loading

META = ModelMetadata("unet", "mobilenet_v2", 1, 3, 64, class_names=("background", "bone", "pores"),
                     arch_options={"decoder_channels": [32, 16, 8, 8, 8]})
VOLUME = np.random.default_rng(4).integers(1, 4000, (6, 40, 56)).astype(np.uint16)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(META.arch, META.encoder, in_channels=1, num_classes=3, **META.arch_options)
    return save_model(tmp_path_factory.mktemp("loading") / "m.safetensors", model.eval(), META)


class SlabCounting(ArraySource):
    """An in-memory source read like a file (no lent views), counting the slabs read."""

    def __init__(self, array):
        super().__init__(array)
        self.slabs = 0

    def view_slab(self, z0, z1):
        return None

    def read_slab(self, z0, z1):
        self.slabs += 1
        return super().read_slab(z0, z1)


def test_a_model_file_starts_loading_with_its_metadata_and_input_multiple_from_the_header(model_file):
    started = start_loading(model_file)
    assert isinstance(started, LoadingModel) and started.failed() is None
    assert started.metadata == load_model(model_file).metadata
    assert started.input_multiple == input_multiple(load_model(model_file).module)  # as written in the header
    assert started.result().module.training is False and started.failed() is None  # result() starts it


def test_a_path_predicts_the_same_labels_as_a_model_loaded_first(model_file):
    config = PredictConfig(device="cpu", backend="torch", slab_slices=2)
    by_path = predict_volume(VOLUME, model_file, config).labels.array
    loaded = predict_volume(VOLUME, load_model(model_file), config).labels.array
    assert len(np.unique(loaded)) > 1
    np.testing.assert_array_equal(by_path, loaded)


def test_other_kinds_of_model_file_load_in_the_foreground(tmp_path, model_file):
    (tmp_path / "m.onnx").write_bytes(b"not looked at")
    assert start_loading(tmp_path / "m.onnx") is None
    assert start_loading(tmp_path / "missing.safetensors") is None


def test_a_model_that_fails_to_load_stops_the_statistics_pass_and_leaves_no_output(tmp_path, model_file,
                                                                                   monkeypatch):
    failed = threading.Event()

    def damaged(path):
        failed.set()
        raise ModelError(f"model file {path} cannot be read (test); the file is damaged")

    monkeypatch.setattr(loading, "_load_model", damaged)
    source = SlabCounting(np.repeat(VOLUME, 20, axis=0))  # 120 slices, one slab each
    original = source.read_slab

    def slow_read(z0, z1):
        failed.wait(5)  # the loader has failed before the pass gets far
        return original(z0, z1)

    source.read_slab = slow_read
    with pytest.raises(ModelError, match="damaged"):
        predict_volume(source, model_file, PredictConfig(device="cpu", slab_slices=1),
                       output=tmp_path / "labels.tif")
    assert source.slabs < 120
    assert list(tmp_path.iterdir()) == []


def test_a_refused_job_does_not_load_the_network(model_file, monkeypatch):
    loads = []
    monkeypatch.setattr(loading, "_load_model", lambda path: loads.append(path))
    with pytest.raises(ConfigError, match="--compile on"):
        predict_volume(VOLUME, model_file, PredictConfig(device="cpu", backend="onnxruntime", compile="on"))
    assert loads == []
