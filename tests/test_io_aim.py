"""Scanco .AIM through ITK's Scanco reader (the optional extra [scanco]): files written by ITK itself read
back with their values, voxel size and origin; without ITK, one line saying what to install."""
import sys

import numpy as np
import pytest

from bone_avizo.errors import ConfigError, CorruptFileError
from bone_avizo.io import create_writer, open_volume
from bone_avizo.io.registry import detect_format


def itk_with_scanco():
    itk = pytest.importorskip("itk")
    if not hasattr(itk, "ScancoImageIO"):
        pytest.skip("itk-ioscanco is not installed")
    return itk


def write_aim_with_itk(path, array, spacing_xyz, origin_xyz=(0.0, 0.0, 0.0)):
    itk = itk_with_scanco()
    image = itk.image_from_array(np.ascontiguousarray(array))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin_xyz)
    itk.imwrite(image, str(path))


@pytest.mark.parametrize("dtype", [np.int16, np.float32])  # what ITK writes as AIM
def test_aim_written_by_itk_reads_values_voxel_size_and_origin(tmp_path, dtype):
    array = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 120).astype(dtype)  # (z, y, x), non-cubic
    path = tmp_path / "femur.aim"
    spacing = (0.0105, 0.021, 0.0315)  # x, y, z
    write_aim_with_itk(path, array, spacing, (10 * spacing[0], 5 * spacing[1], 3 * spacing[2]))  # AIM: whole voxels
    assert detect_format(path) == "aim"
    with open_volume(path) as source:
        assert source.info.shape == (4, 5, 6) and source.info.name == "femur"
        np.testing.assert_allclose(source.info.voxel_size, (0.0315, 0.021, 0.0105), rtol=1e-6)
        np.testing.assert_allclose(source.info.origin, (3 * 0.0315, 5 * 0.021, 10 * 0.0105), rtol=1e-6)
        np.testing.assert_array_equal(source.read_slab(1, 3), array[1:3])
        np.testing.assert_array_equal(source.read_all(), array)


def test_a_damaged_aim_is_named(tmp_path):
    itk_with_scanco()
    path = tmp_path / "broken.aim"
    path.write_bytes(b"\0" * 300)
    with pytest.raises(CorruptFileError, match="cannot be read as a Scanco AIM file"):
        open_volume(path)


def test_without_itk_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "itk", None)  # import itk now raises ImportError
    path = tmp_path / "scan.aim"
    path.write_bytes(b"\0" * 300)
    with pytest.raises(ConfigError, match=r'pip install "bone-avizo\[scanco\]"'):
        open_volume(path)


def test_aim_is_read_only(tmp_path):
    from bone_avizo.volume import VolumeInfo
    with pytest.raises(ConfigError, match="are read, not written"):
        create_writer(tmp_path / "labels.aim", VolumeInfo((2, 3, 4), np.uint8))
