"""Surface distances (mean, HD95, Hausdorff) against MONAI, and their limits."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from bone_avizo.config import IoUConfig
from bone_avizo.errors import InvalidVolumeError
from bone_avizo.io import ArraySource
from bone_avizo.metrics import compute_iou
from bone_avizo.metrics.surface import NOTE, surface_distances
from bone_avizo.volume import VolumeInfo

ndimage = pytest.importorskip("scipy.ndimage")
SHAPE = (9, 14, 17)
VOXEL = (0.5, 0.1, 0.2)


def blobs(rng, shape=SHAPE, density=0.05):
    return ndimage.binary_dilation(rng.random(shape) < density)


def monai_distances(pred, ref, spacing):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")

    def one_hot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = monai_metrics.compute_hausdorff_distance(one_hot(pred), one_hot(ref), percentile=95, spacing=spacing)
        hd = monai_metrics.compute_hausdorff_distance(one_hot(pred), one_hot(ref), spacing=spacing)
        asd = monai_metrics.compute_average_surface_distance(one_hot(pred), one_hot(ref), symmetric=True,
                                                             spacing=spacing)
    return float(asd), float(hd95), float(hd)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_equal_monai_with_anisotropic_voxels(seed):
    rng = np.random.default_rng(seed)
    pred, ref = blobs(rng), blobs(rng)
    ours = surface_distances(pred, ref, voxel_size=VOXEL)
    expected = monai_distances(pred, ref, VOXEL)
    got = (ours["mean_surface_distance"], ours["hd95"], ours["hausdorff"])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_identical_masks_have_zero_distance(rng):
    mask = blobs(rng)
    ours = surface_distances(mask, mask, voxel_size=VOXEL)
    assert ours["mean_surface_distance"] == ours["hd95"] == ours["hausdorff"] == 0.0


def test_a_shifted_slab_is_one_voxel_away():
    ref = np.zeros(SHAPE, bool)
    ref[2:6] = True
    pred = np.roll(ref, 1, axis=0)
    ours = surface_distances(pred, ref, voxel_size=VOXEL)
    assert ours["hausdorff"] == pytest.approx(VOXEL[0])


@pytest.mark.parametrize("which", ["the prediction", "the reference", "both volumes"])
def test_absent_class_gives_undefined_distances(rng, which):
    mask, empty = blobs(rng), np.zeros(SHAPE, bool)
    pred = empty if which in ("the prediction", "both volumes") else mask
    ref = empty if which in ("the reference", "both volumes") else mask
    ours = surface_distances(pred, ref)
    assert ours["hd95"] is None and ours["mean_surface_distance"] is None
    assert f"absent from {which}" in ours["note"]


def test_compute_iou_reports_surface_in_mm_marked_in_memory(rng):
    labels = [np.where(blobs(rng), 1, 0).astype(np.uint8) for _ in range(2)]
    info = VolumeInfo(SHAPE, np.uint8, voxel_size=(500, 100, 200), unit="um")
    result = compute_iou(ArraySource(labels[0], info), ArraySource(labels[1], info), IoUConfig(surface=True))
    surface = result.surface
    assert surface["unit"] == "mm" and surface["class"] == 1 and surface["computed_on"] == NOTE
    expected = surface_distances(labels[0] == 1, labels[1] == 1, voxel_size=VOXEL)
    assert surface["hd95"] == pytest.approx(expected["hd95"])


def test_surface_ignores_voxels_outside_the_roi(rng):
    pred, ref = (np.where(blobs(rng), 1, 0).astype(np.uint8) for _ in range(2))
    roi = np.zeros(SHAPE, np.uint8)
    roi[:4] = 1
    result = compute_iou(pred, ref, IoUConfig(surface=True), roi=roi)
    expected = surface_distances((pred == 1) & (roi > 0), (ref == 1) & (roi > 0))
    assert result.surface["hd95"] == pytest.approx(expected["hd95"])
    assert result.surface["unit"] == "voxel"


def test_surface_refused_above_the_voxel_bound(rng):
    labels = np.zeros(SHAPE, np.uint8)
    with pytest.raises(InvalidVolumeError, match=r"whole volume in memory.*--surface-max-mvoxels"):
        compute_iou(labels, labels, IoUConfig(surface=True, surface_max_mvoxels=0.001))
