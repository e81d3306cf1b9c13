"""A Volume is an array (z, y, x) plus its VolumeInfo: the geometry is stored once, in the info."""
import dataclasses

import numpy as np
import pytest

from bone_avizo.errors import InvalidVolumeError
from bone_avizo.volume import Volume, VolumeInfo

ARRAY = np.zeros((2, 3, 4), np.uint16)


def test_a_volume_holds_its_array_and_info_only():
    assert [f.name for f in dataclasses.fields(Volume)] == ["array", "info"]


def test_shape_and_dtype_come_from_the_array():
    info = VolumeInfo((9, 9, 9), np.float32, voxel_size=(0.03, 0.02, 0.01), name="scan")
    volume = Volume(ARRAY, info)
    assert volume.info == info.with_(shape=(2, 3, 4), dtype=np.uint16)
    assert volume.shape == (2, 3, 4) and volume.dtype == np.uint16


def test_geometry_by_keyword_reads_through_to_the_info():
    volume = Volume(ARRAY, voxel_size=0.02, origin=(1, 2, 3), name="femur", class_names=["a", "b"])
    assert volume.info == VolumeInfo((2, 3, 4), np.uint16, (0.02,) * 3, (1.0, 2.0, 3.0), "femur", ("a", "b"))
    assert (volume.voxel_size, volume.origin, volume.name, volume.class_names, volume.unit, volume.calibrated) == (
        (0.02,) * 3, (1.0, 2.0, 3.0), "femur", ("a", "b"), "mm", True)
    assert volume.is_label


def test_without_a_voxel_size_a_volume_is_uncalibrated():
    volume = Volume(ARRAY)
    assert volume.voxel_size == (1.0, 1.0, 1.0) and not volume.calibrated and volume.name == "volume"
    assert Volume(ARRAY, calibrated=True).calibrated


def test_with_array_keeps_the_info_but_shape_and_dtype():
    volume = Volume(ARRAY, voxel_size=0.5, name="scan")
    labels = volume.with_array(np.ones((2, 3, 5), np.uint8), class_names=("bg", "bone"))
    assert labels.info == volume.info.with_(shape=(2, 3, 5), dtype=np.uint8, class_names=("bg", "bone"))


def test_bad_arrays_and_positional_geometry_are_refused():
    with pytest.raises(InvalidVolumeError, match="scan must be 3-D"):
        Volume(np.zeros((3, 4)), name="scan")
    with pytest.raises(TypeError, match="by keyword"):
        Volume(ARRAY, (0.02, 0.02, 0.02))
