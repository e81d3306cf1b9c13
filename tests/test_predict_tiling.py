"""Tiling: split -> predict -> merge must reproduce a pointwise network exactly."""
import numpy as np
import pytest
import torch

from bone_avizo.predict.tiling import Tiler, TileGrid, positions, reflect_pad
from bone_avizo.predict.windows import MIN_WEIGHT, blend_window
from fakes import PointwiseNet


@pytest.mark.parametrize("shape", [(3, 1, 100, 70), (2, 2, 130, 257), (1, 1, 17, 5), (1, 1, 1, 40), (2, 1, 64, 64)])
@pytest.mark.parametrize("blend", ["gaussian", "cosine", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_pointwise_network_survives_tiling(shape, blend, overlap):
    torch.manual_seed(1)
    net = PointwiseNet(in_channels=shape[1], num_classes=3).eval()
    images = torch.randn(shape)
    tiler = Tiler(net, tile=32, overlap=overlap, blend=blend, batch_size=5, num_classes=3)
    with torch.no_grad():
        tiled = tiler(images)
        whole = net(images)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    assert torch.equal(tiled.argmax(1), whole.argmax(1))


def test_tiles_cover_every_pixel_and_end_at_the_edge():
    for length in (32, 33, 100, 257, 1000):
        starts = positions(length, 32, 0.25)
        assert starts[0] == 0 and starts[-1] == length - 32
        assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_grid_pads_small_and_unaligned_images_to_multiples_of_32():
    grid = TileGrid.build(49, 63, 256, 0.25)
    assert (grid.tile_h, grid.tile_w) == (64, 64)
    assert (grid.padded_h, grid.padded_w) == (64, 64) and len(grid.starts) == 1
    grid = TileGrid.build(300, 40, 64, 0.25)
    assert grid.tile_w == 64 and grid.tile_h == 64 and grid.padded_h == 300


def test_reflect_pad_mirrors_and_handles_tiny_axes():
    x = torch.arange(3.0).reshape(1, 1, 1, 3)
    padded = reflect_pad(x, 1, 8)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 1, 0, 1, 2, 1]
    assert reflect_pad(torch.ones(1, 1, 1, 1), 4, 4).shape == (1, 1, 4, 4)


@pytest.mark.parametrize("blend", ["gaussian", "cosine", "constant"])
def test_windows_are_positive_with_peak_one(blend):
    w = blend_window(32, 64, blend)
    assert w.shape == (32, 64)
    assert float(w.max()) == pytest.approx(1.0) and float(w.min()) >= MIN_WEIGHT


def test_gaussian_window_decays_towards_edges():
    w = blend_window(64, 64, "gaussian").numpy()
    assert w[32, 32] > w[32, 8] > w[32, 0]
    np.testing.assert_allclose(w, w.T)


def test_auto_tile_prefers_whole_slices_and_fewest_computed_pixels():
    from bone_avizo.predict.tiling import auto_tile
    assert auto_tile(512, 512, 256, 0.25) == 512
    assert auto_tile(1000, 700, 256, 0.25) == 1024  # one tile covers the slice
    tile = auto_tile(2048, 2048, 256, 0.25)
    assert 512 <= tile <= 1024 and tile % 32 == 0
    cost = TileGrid.build(2048, 2048, tile, 0.25).tile_pixels
    assert all(cost <= TileGrid.build(2048, 2048, t, 0.25).tile_pixels for t in range(512, 1025, 32))
    assert auto_tile(300, 300, 768, 0.25) == 768  # never below the training patch
