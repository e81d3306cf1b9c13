"""The streaming prediction engine with a pointwise fake network: exact against a reference."""
import numpy as np
import pytest
import torch

from bone_avizo.config import PredictConfig
from bone_avizo.errors import Cancelled, ConfigError, InvalidVolumeError, ModelError
from bone_avizo.predict import predict_volume
from bone_avizo.volume import Volume
from fakes import fake_loaded, pointwise_reference


def scan(shape=(9, 45, 70), dtype=np.uint16, seed=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape).astype(dtype)


def cfg(**kw):
    kw.setdefault("tile_size", 32)
    kw.setdefault("backend", "torch")
    return PredictConfig(**kw)


@pytest.mark.parametrize("slab", [1, 4, 0])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_xy_prediction_equals_pointwise_reference(slab, dtype):
    volume = scan(dtype=dtype)
    loaded = fake_loaded()
    result = predict_volume(volume, loaded, cfg(slab_slices=slab, batch_size=3))
    assert result.labels.dtype == np.uint8 and result.labels.shape == volume.shape
    np.testing.assert_array_equal(result.labels.array, pointwise_reference(volume, loaded))
    assert result.labels.class_names == ("background", "bone", "pores")


@pytest.mark.parametrize("planes", [("xz",), ("yz",), ("xy", "xz", "yz")])
@pytest.mark.parametrize("tta", ["none", "d4"])
def test_planes_and_tta_keep_a_pointwise_network_exact(planes, tta):
    volume = scan(shape=(11, 37, 50))
    loaded = fake_loaded(normalization="minmax")
    result = predict_volume(volume, loaded, cfg(planes=planes, tta=tta, slab_slices=4))
    np.testing.assert_array_equal(result.labels.array, pointwise_reference(volume, loaded))


@pytest.mark.parametrize("context", [3, 5])
def test_25d_stacks_are_mirrored_at_volume_edges(context):
    volume = scan(shape=(8, 33, 40))
    loaded = fake_loaded(in_channels=context)
    result = predict_volume(volume, loaded, cfg(slab_slices=3))
    np.testing.assert_array_equal(result.labels.array, pointwise_reference(volume, loaded))


class FirstAndLastChannel(torch.nn.Module):
    """Labels each pixel with the slice its first (``channel`` 0) or last (-1) 2.5D channel came from, on a
    volume whose slice z holds z + 1 everywhere (min-max normalised: z / (slices - 1))."""

    def __init__(self, slices: int, channel: int):
        super().__init__()
        self.slices, self.channel = slices, channel

    def forward(self, x):
        source = x[:, self.channel:self.channel + 1 or None] * (self.slices - 1)
        return -(source - torch.arange(self.slices, dtype=x.dtype).view(1, -1, 1, 1)) ** 2


@pytest.mark.parametrize("context,channel,expected", [
    (3, 0, [1, 0, 1, 2, 3]), (3, -1, [1, 2, 3, 4, 3]), (5, 0, [2, 1, 0, 1, 2]), (5, -1, [2, 3, 4, 3, 2])])
def test_25d_edge_stacks_are_the_documented_mirror(context, channel, expected):
    """z = -1 -> 1 and z = 5 -> 3 for 5 slices: the first slice's 3-stack is (1, 0, 1)."""
    volume = np.broadcast_to(np.arange(1, 6, dtype=np.uint8)[:, None, None], (5, 32, 33)).copy()
    loaded = fake_loaded(in_channels=context, num_classes=5, normalization="minmax",
                         module=FirstAndLastChannel(5, channel))
    labels = predict_volume(volume, loaded, cfg(slab_slices=2)).labels.array
    assert labels[:, 0, 0].tolist() == expected and (labels == labels[:, :1, :1]).all()


def test_probability_maps_sum_to_255_and_agree_with_labels():
    volume = scan(shape=(5, 40, 33))
    result = predict_volume(volume, fake_loaded(), cfg(probabilities=True))
    probs = np.stack([p.array for p in result.probabilities]).astype(int)
    assert probs.shape == (3, *volume.shape)
    assert np.abs(probs.sum(0) - 255).max() <= 2
    agree = (probs.argmax(0) == result.labels.array).mean()
    assert agree > 0.99


def test_voxel_size_and_name_reach_the_labels():
    volume = Volume(scan(shape=(4, 33, 40)), voxel_size=(0.05, 0.02, 0.02), name="femur")
    result = predict_volume(volume, fake_loaded(), cfg())
    assert result.labels.voxel_size == (0.05, 0.02, 0.02)
    assert result.labels.name == "femur_labels"


def test_volume_smaller_than_the_25d_stack_is_refused():
    with pytest.raises(InvalidVolumeError, match="needs stacks of 5"):
        predict_volume(scan(shape=(3, 32, 32)), fake_loaded(in_channels=5), cfg())


def test_model_with_colour_channels_is_refused():
    loaded = fake_loaded(in_channels=3)
    loaded.metadata.context_slices = 1
    with pytest.raises(ModelError, match="3 input channels"):
        predict_volume(scan(), loaded, cfg())


def test_resume_with_several_planes_is_refused():
    with pytest.raises(ConfigError, match="single-plane"):
        predict_volume(scan(), fake_loaded(), cfg(planes=("xy", "xz"), resume=True))


def test_cancel_stops_with_cancelled():
    calls = []

    def progress(done, total, message):
        calls.append((done, total))
        return done > 4

    with pytest.raises(Cancelled):
        predict_volume(scan(), fake_loaded(), cfg(slab_slices=1), progress=progress)
    assert len(calls) == 1 and calls[0][0] < calls[0][1]  # stopped at its first report, before the end
