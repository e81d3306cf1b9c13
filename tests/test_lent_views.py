"""Slabs lent as read-only views (no copy) by sources that hold or map their voxels, and the buffers
the CPU prediction reuses between blocks."""
from __future__ import annotations

import numpy as np
import torch
import pytest
import tifffile

from bone_avizo._memory import BufferPool, leased
from bone_avizo.config import PredictConfig
from bone_avizo.data.normalize import scan_stats
from bone_avizo.io import open_volume
from bone_avizo.io.base import ArraySource, VolumeSource
from bone_avizo.predict import predict_volume
from tests.fakes import fake_loaded, pointwise_reference

VOLUME = np.random.default_rng(5).integers(1, 60000, (9, 20, 24)).astype(np.uint16)


def _check_lent(source: VolumeSource, z0: int = 2, z1: int = 6) -> None:
    view = source.view_slab(z0, z1)
    assert view is not None and type(view) is np.ndarray
    np.testing.assert_array_equal(view, source.read_slab(z0, z1))
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0, 0] = 0


def test_an_in_memory_array_lends_read_only_views_and_stays_writable_itself():
    array = VOLUME.copy()
    _check_lent(ArraySource(array))
    assert array.flags.writeable
    with pytest.raises(IndexError):
        ArraySource(array).view_slab(3, 99)


def test_an_uncompressed_tiff_and_a_npy_lend_their_mapped_voxels(tmp_path):
    tifffile.imwrite(tmp_path / "scan.tif", VOLUME)
    np.save(tmp_path / "scan.npy", VOLUME)
    for name in ("scan.tif", "scan.npy"):
        with open_volume(tmp_path / name) as source:
            _check_lent(source)


def test_compressed_or_foreign_byte_order_data_are_read_not_lent(tmp_path):
    tifffile.imwrite(tmp_path / "zlib.tif", VOLUME, compression="zlib")
    tifffile.imwrite(tmp_path / "big.tif", VOLUME.astype(">u2"), byteorder=">")
    for name in ("zlib.tif", "big.tif"):
        with open_volume(tmp_path / name) as source:
            assert source.view_slab(0, 3) is None
            np.testing.assert_array_equal(source.read_slab(0, 3), VOLUME[:3])
    assert ArraySource(VOLUME.astype(">u2")).view_slab(0, 3) is None


class LendingSource(ArraySource):
    """Counts the slabs read (copied) and lent."""

    def __init__(self, array):
        super().__init__(array)
        self.read, self.lent = 0, 0

    def read_slab(self, z0, z1):
        self.read += 1
        return super().read_slab(z0, z1)

    def view_slab(self, z0, z1):
        self.lent += 1
        return super().view_slab(z0, z1)


def test_statistics_and_prediction_use_lent_slabs_and_give_the_same_labels(tmp_path, monkeypatch):
    loaded = fake_loaded(num_classes=3)
    expected = pointwise_reference(VOLUME, loaded)
    source = LendingSource(VOLUME.copy())
    stats = scan_stats(source, slab_slices=4)
    assert source.lent == 2 and source.read == 0  # a first probe, then one slab: views cost no memory
    assert stats == scan_stats(ArraySource(VOLUME), slab_slices=4)
    source.lent = 0
    with monkeypatch.context() as patch:
        patch.setattr("bone_avizo.data.normalize.LENT_SLAB_VOXELS", 1)
        assert scan_stats(source, slab_slices=4) == stats
    assert source.lent == 1 + -(-len(VOLUME) // 4) and source.read == 0  # the probe, then slabs of 4
    source.lent = 0
    labels = predict_volume(source, loaded, PredictConfig(device="cpu", batch_size=2)).labels.array
    np.testing.assert_array_equal(labels, expected)
    assert source.read == 0 and source.lent > 0
    np.testing.assert_array_equal(source.array, VOLUME)  # never written through a view
    tifffile.imwrite(tmp_path / "scan.tif", VOLUME)
    with open_volume(tmp_path / "scan.tif") as tiff:
        result = predict_volume(tiff, loaded, PredictConfig(device="cpu"), output=tmp_path / "out.tif")
    np.testing.assert_array_equal(tifffile.imread(result.output), expected)


def test_buffer_pool_hands_back_arrays_of_the_same_shape_and_type_only():
    pool = BufferPool(keep=2)
    a = pool.take((3, 4), np.float32)
    pool.give(a)
    assert pool.take((3, 5), np.float32) is not a
    assert pool.take((3, 4), np.float64) is not a
    assert pool.take((3, 4), np.float32) is a
    assert pool.take((3, 4), np.float32) is not a  # taken: not handed out twice
    arrays = [np.empty(4) for _ in range(3)]
    for array in arrays:
        pool.give(array)
    assert {id(pool.take((4,), np.float64)) for _ in range(3)} & {id(a) for a in arrays} == {id(arrays[1]),
                                                                                               id(arrays[2])}
    read_only = np.empty(4)
    read_only.flags.writeable = False
    pool.give(read_only)
    assert pool.take((4,), np.float64) is not read_only


def test_a_leased_array_goes_back_to_its_pool_only_when_its_last_view_is_gone():
    pool = BufferPool(keep=2)
    array = leased(pool, (3, 4), np.float32)
    tensor = torch.from_numpy(array)[1:]  # a view of a view
    memory = array.ctypes.data
    del array
    assert pool.take((3, 4), np.float32).ctypes.data != memory  # the tensor still holds it
    del tensor
    again = leased(pool, (3, 4), np.float32)
    assert again.ctypes.data == memory and again.flags.writeable and again.flags.c_contiguous


def test_label_blocks_reuse_a_few_buffers_once_written(tmp_path, monkeypatch):
    """Many blocks, written to a file: their label buffers are handed out again after each write, and the
    labels are still right (a buffer reused too early would overwrite a block not yet written)."""
    import bone_avizo._memory as memory
    taken: list[int] = []
    original = memory.BufferPool.take

    def recording_take(self, shape, dtype):
        array = original(self, shape, dtype)
        if np.dtype(dtype) == np.uint8:
            taken.append(array.ctypes.data)
        return array

    monkeypatch.setattr(memory.BufferPool, "take", recording_take)
    volume = np.random.default_rng(8).integers(1, 60000, (24, 16, 20)).astype(np.uint16)
    loaded = fake_loaded(num_classes=3)
    result = predict_volume(volume, loaded, PredictConfig(device="cpu", slab_slices=2),
                            output=tmp_path / "out.tif")
    np.testing.assert_array_equal(tifffile.imread(result.output), pointwise_reference(volume, loaded))
    assert len(taken) >= 12 and len(set(taken)) <= 6


def test_a_transposed_in_memory_array_is_lent_and_predicted_like_a_contiguous_one():
    """Host arrays often arrive as transposed views ((x, y, z) memory seen as (z, y, x)): lent as they are,
    they give the same statistics and labels as a C-contiguous copy."""
    transposed = np.ascontiguousarray(VOLUME.transpose(2, 1, 0)).transpose(2, 1, 0)
    assert not transposed.flags.c_contiguous
    view = ArraySource(transposed).view_slab(1, 5)
    assert view is not None and not view.flags.c_contiguous
    loaded = fake_loaded(num_classes=3)
    labels = predict_volume(transposed, loaded, PredictConfig(device="cpu", batch_size=2)).labels.array
    np.testing.assert_array_equal(labels, pointwise_reference(VOLUME, loaded))
    assert scan_stats(ArraySource(transposed), slab_slices=4) == scan_stats(ArraySource(VOLUME), slab_slices=4)
