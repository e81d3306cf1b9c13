"""DLPred agrees with a whole-slice prediction (BONe's way of predicting) where the network takes a
slice of any size: no padding then. Networks that need a multiple of their stride are padded only
up to that multiple."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bone_avizo.config import PredictConfig
from bone_avizo.models import LoadedModel, ModelMetadata, build_model
from bone_avizo.models.modelfile import input_multiple
from bone_avizo.predict import predict_volume
from bone_avizo.predict.tiling import TileGrid
from bone_avizo.volume import Volume
from fakes import normalised_reference

SHAPE = (7, 50, 70)  # (z, y, x): no side a multiple of 8
OPTIONS = dict(encoder_depth=3, decoder_channels=(16, 8, 4))


def scan() -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    noise = np.random.default_rng(1).normal(0, 40, SHAPE)
    return (1000 + 200 * np.sin(x / 4.0) * np.cos(y / 5.0) + 30 * z + noise).clip(1, None).astype(np.uint16)


def loaded_unet(slices: int, volume: np.ndarray) -> LoadedModel:
    """A random U-Net whose head bias splits ``volume`` into two classes of about equal size."""
    torch.manual_seed(2)
    module = build_model("unet", "resnet18", in_channels=slices, num_classes=2, **OPTIONS).eval()
    meta = ModelMetadata("unet", "resnet18", slices, 2, 32, context_slices=slices, arch_options=OPTIONS)
    loaded = LoadedModel(module, meta, None, "test")
    with torch.no_grad():
        logits = module(network_inputs(loaded, volume, slices)[0])
        module.segmentation_head[0].bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return loaded


def network_inputs(loaded: LoadedModel, volume: np.ndarray, slices: int) -> tuple[torch.Tensor, list[int]]:
    """The normalised (n, slices, h, w) stacks of the slices that have all their neighbours."""
    normed = torch.from_numpy(normalised_reference(volume, loaded.metadata.normalization))
    half = slices // 2
    centres = list(range(half, SHAPE[0] - half))
    return torch.stack([normed[z - half:z + half + 1] for z in centres]), centres


def whole_slices(loaded: LoadedModel, volume: np.ndarray, slices: int) -> tuple[np.ndarray, list[int]]:
    """argmax of the network on each whole, unpadded slice (2.5D: the slices with all neighbours)."""
    inputs, centres = network_inputs(loaded, volume, slices)
    with torch.no_grad():
        return loaded.module(inputs).argmax(1).numpy(), centres


@pytest.mark.parametrize("slices", [1, 3], ids=["2D", "2.5D"])
def test_unet_prediction_equals_the_whole_slice_prediction(slices):
    volume = scan()
    loaded = loaded_unet(slices, volume)
    assert input_multiple(loaded.module) == 1
    reference, centres = whole_slices(loaded, volume, slices)
    assert 0.05 < reference.mean() < 0.95  # both classes present: the comparison means something
    ours = predict_volume(Volume(volume), loaded, PredictConfig(device="cpu", backend="torch", threads=1))
    np.testing.assert_array_equal(ours.labels.array[centres], reference)


def test_tiles_pad_only_to_the_networks_multiple():
    assert (TileGrid.build(100, 100, 512, 0.25, align=1).padded_h, TileGrid.build(100, 100, 512, 0.25).padded_h) \
        == (100, 128)
    deeplab = build_model("deeplabv3plus", "resnet18", in_channels=1, num_classes=2)
    grid = TileGrid.build(100, 70, 512, 0.25, align=input_multiple(deeplab))
    assert (grid.padded_h, grid.padded_w) == (112, 80)  # multiples of 16, not 32
    with torch.no_grad():
        assert deeplab.eval()(torch.zeros(1, 1, 112, 80)).shape == (1, 2, 112, 80)
