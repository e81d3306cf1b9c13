"""The real micro-CT scans in ../shared/data open lazily with their voxel size (skipped where absent)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
from conftest import REAL_SCANS, real_scan

from bone_avizo.io import open_volume


@pytest.mark.parametrize("key", sorted(REAL_SCANS))
def test_real_scan_opens_with_its_shape_and_voxel_size(key):
    path = real_scan(key)
    _, shape, voxel = REAL_SCANS[key]
    with open_volume(path) as source:
        assert source.shape == shape and source.dtype == np.uint8
        np.testing.assert_allclose(source.voxel_size, (voxel, voxel, voxel), rtol=1e-9)
        assert source.info.unit == "mm"
        mid = shape[0] // 2
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[mid].asarray()
        np.testing.assert_array_equal(source.read_slab(mid, mid + 1)[0], page)
        np.testing.assert_array_equal(source.read_plane(0, mid), page)


def test_whole_real_scan_equals_tifffile():
    path = real_scan("lhdl_3155")
    with open_volume(path) as source:
        np.testing.assert_array_equal(source.read_all(), tifffile.imread(path))


def peak_bytes(func) -> int:
    """Peak Python/numpy allocation while ``func`` runs."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_one_slice_of_the_31_mb_scan_costs_about_one_slice():
    path = real_scan("lhdl_ti_2923")
    nz, ny, nx = REAL_SCANS["lhdl_ti_2923"][1]
    slice_bytes = ny * nx
    assert path.stat().st_size > 100 * slice_bytes  # the whole file would be ~495 slices
    open_volume(path).close()  # imports the reader's modules before measuring
    source = None

    def open_and_read_one_slice():
        nonlocal source
        source = open_volume(path)
        source.read_slab(300, 301)

    assert peak_bytes(open_and_read_one_slice) < 5 * slice_bytes
    with source:
        # planes across the stack stream through the slices: one row (or column) of each
        assert peak_bytes(lambda: source.read_plane(1, 128)) < 5 * slice_bytes
        assert peak_bytes(lambda: source.read_plane(2, 128)) < 5 * slice_bytes
        assert peak_bytes(lambda: source.read_region(slice(100, 102), slice(0, 50), slice(0, 50))) < slice_bytes
