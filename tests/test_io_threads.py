"""Threaded TIFF decoding, the TIFF writer's slab writes and zarr's thread settings (bone_avizo.io.threads)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bone_avizo.io import create_writer, load_volume
from bone_avizo.io.threads import IO_THREADS_ENV, io_threads
from bone_avizo.io.tiff import TiffSource
from bone_avizo.volume import VolumeInfo


@pytest.mark.parametrize("threads", ["1", "3"])
def test_compressed_tiff_slabs_and_regions_are_decoded_by_threads(threads, tmp_path, monkeypatch):
    monkeypatch.setenv(IO_THREADS_ENV, threads)
    data = np.random.default_rng(0).integers(0, 4000, (11, 40, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", data, compression="zlib", imagej=True, metadata={"axes": "ZYX"})
    decoded = []
    original = tifffile.TiffPage.asarray
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda page, *a, **k: decoded.append(1) or original(page, *a, **k))
    with TiffSource(tmp_path / "z.tif") as source:
        assert source._memmap is None  # compressed: decoded, not mapped
        assert np.array_equal(source.read_slab(2, 9), data[2:9])
        assert len(decoded) == 7  # each page of the slab once
        region = (slice(1, 10), slice(5, 33), slice(-7, None))  # in batches of io_threads() pages
        assert np.array_equal(source.read_region(*region), data[region])
        assert np.array_equal(source.read_plane(2, 3), data[:, :, 3])


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_compressed_slabs_are_decoded_in_place_or_converted(byteorder, tmp_path):
    data = np.random.default_rng(2).normal(0, 100, (6, 20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", data.astype(byteorder + "f4"), compression="zlib", byteorder=byteorder)
    with TiffSource(tmp_path / "f.tif") as source:
        slab = source.read_slab(1, 6)
        assert slab.dtype == np.dtype("float32") and np.array_equal(slab, data[1:6])


def test_uncompressed_tiff_slabs_land_in_place_in_any_order(tmp_path):
    data = np.random.default_rng(1).integers(-300, 300, (9, 17, 23)).astype(np.int16)
    with create_writer(tmp_path / "v.tif", VolumeInfo(data.shape, np.int16)) as writer:
        for z0, z1 in [(5, 9), (0, 2), (2, 5)]:
            writer.write_slab(z0, data[z0:z1])
    assert np.array_equal(tifffile.imread(tmp_path / "v.tif"), data)
    assert np.array_equal(load_volume(tmp_path / "v.tif").array, data)


def test_zarr_threads_follow_the_io_threads(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    from bone_avizo.io import zarr_format

    monkeypatch.setenv(IO_THREADS_ENV, "3")
    monkeypatch.setattr(zarr_format, "_zarr_threads_sized", False)
    with zarr.config.set({"threading.max_workers": None, "async.concurrency": 10}):
        zarr_format.import_zarr()
        assert zarr.config.get("threading.max_workers") == io_threads() == 3
        assert zarr.config.get("async.concurrency") == 10  # at least 2 x threads, never fewer than zarr's own
    monkeypatch.setattr(zarr_format, "_zarr_threads_sized", False)
    with zarr.config.set({"threading.max_workers": 5}):  # the user's setting stays
        zarr_format.import_zarr()
        assert zarr.config.get("threading.max_workers") == 5
    data = np.arange(20 * 8 * 8, dtype=np.uint16).reshape(20, 8, 8)
    with create_writer(tmp_path / "v.zarr", VolumeInfo(data.shape, np.uint16)) as writer:
        writer.write_slab(0, data)
    assert np.array_equal(load_volume(tmp_path / "v.zarr").array, data)
