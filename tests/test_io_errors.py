"""Bad volume inputs raise the matching BoneAvizoError subclass with a one-line message."""
from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import tifffile

from bone_avizo.errors import (BoneAvizoError, ConfigError, CorruptFileError, FormatError, InputFileError,
                               InvalidVolumeError, OutputExistsError, ShapeMismatchError,
                               UnsupportedDtypeError)
from bone_avizo.io import create_writer, load_volume, open_volume, save_volume
from bone_avizo.volume import Volume, VolumeInfo

SHAPE = (7, 13, 29)


def raises_one_line(error, func, *args, match=None, **kwargs) -> str:
    """Call ``func``; check it raises ``error`` with a one-line message and return the message."""
    with pytest.raises(error, match=match) as caught:
        func(*args, **kwargs)
    message = str(caught.value)
    assert isinstance(caught.value, BoneAvizoError) and message and "\n" not in message
    return message


def test_missing_file_is_an_input_file_error(tmp_path):
    raises_one_line(InputFileError, load_volume, tmp_path / "absent.tif", match="does not exist")
    (tmp_path / "m.mhd").write_text("NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = gone.raw\n")
    raises_one_line(InputFileError, load_volume, tmp_path / "m.mhd", match="gone.raw")


def test_wrong_extension_or_content_is_a_format_error(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"1234")
    raises_one_line(FormatError, load_volume, tmp_path / "scan.xyz", match=r"\.xyz")
    (tmp_path / "fake.tif").write_bytes(b"PNG not a tiff at all")
    raises_one_line(FormatError, load_volume, tmp_path / "fake.tif", match="not a TIFF")
    (tmp_path / "fake.h5").write_bytes(b"\0" * 600)
    raises_one_line(FormatError, load_volume, tmp_path / "fake.h5", match="not an HDF5")


def test_truncated_files_are_corrupt_file_errors(tmp_path):
    array = np.zeros((20, 64, 64), np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", array, imagej=True, metadata={"axes": "ZYX"})
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 2])
    raises_one_line(CorruptFileError, open_volume, tmp_path / "t.tif", match="truncated")
    (tmp_path / "t.tif").write_bytes(data[:200])  # only the first page's header survives
    raises_one_line(CorruptFileError, open_volume, tmp_path / "t.tif", match="truncated")
    tifffile.imwrite(tmp_path / "z.tif", array + 1, compression="zlib", metadata={"axes": "ZYX"})
    data = (tmp_path / "z.tif").read_bytes()
    (tmp_path / "z.tif").write_bytes(data[:-10])
    with open_volume(tmp_path / "z.tif") as source:
        raises_one_line(CorruptFileError, source.read_slab, 0, 20, match="page 19")
    np.save(tmp_path / "n.npy", array)
    data = (tmp_path / "n.npy").read_bytes()
    (tmp_path / "n.npy").write_bytes(data[:1000])
    raises_one_line(CorruptFileError, open_volume, tmp_path / "n.npy")


def test_raw_size_disagreeing_with_the_shape_names_both_sizes(tmp_path):
    (tmp_path / "r.raw").write_bytes(b"\0" * 1000)
    message = raises_one_line(CorruptFileError, open_volume, tmp_path / "r.raw", shape=SHAPE, dtype="uint16")
    assert "1000" in message and str(7 * 13 * 29 * 2) in message
    (tmp_path / "m.mhd").write_text("NDims = 3\nDimSize = 29 13 7\nElementType = MET_USHORT\nElementDataFile = r.raw\n")
    message = raises_one_line(CorruptFileError, open_volume, tmp_path / "m.mhd")
    assert "1000" in message and str(7 * 13 * 29 * 2) in message


def test_complex_data_are_an_unsupported_dtype_error(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros(SHAPE, np.complex64))
    raises_one_line(UnsupportedDtypeError, open_volume, tmp_path / "c.npy", match="complex64")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["data"] = np.zeros(SHAPE, np.complex128)
    raises_one_line(UnsupportedDtypeError, open_volume, tmp_path / "c.h5", match="complex128")
    info = VolumeInfo(SHAPE, np.bool_)
    raises_one_line(UnsupportedDtypeError, create_writer, tmp_path / "b.tif", info, match="bool")


def test_wide_integer_types_are_readable(tmp_path):
    for dtype in (np.uint32, np.int64, np.uint64):
        np.save(tmp_path / "w.npy", np.full(SHAPE, 7, dtype))
        assert load_volume(tmp_path / "w.npy").dtype == dtype


def test_non_3d_inputs_are_invalid_volume_errors(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((13, 29), np.uint8))
    raises_one_line(InvalidVolumeError, open_volume, tmp_path / "flat.tif", match="2-D")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 13, 29, 3), np.uint8), photometric="rgb")
    raises_one_line(InvalidVolumeError, open_volume, tmp_path / "rgb.tif", match="3 channels")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["image"] = np.zeros((13, 29))
    raises_one_line(InvalidVolumeError, open_volume, tmp_path / "flat.h5", match="no 3-D dataset.*image")


def test_folder_with_slices_of_different_shapes_is_a_shape_mismatch(tmp_path):
    tifffile.imwrite(tmp_path / "s1.tif", np.zeros((13, 29), np.uint8))
    tifffile.imwrite(tmp_path / "s2.tif", np.zeros((13, 30), np.uint8))
    raises_one_line(ShapeMismatchError, open_volume, tmp_path, match="s2.tif")


def test_existing_output_is_an_output_exists_error(tmp_path):
    volume = Volume(np.zeros(SHAPE, np.uint8))
    save_volume(volume, tmp_path / "v.npy")
    raises_one_line(OutputExistsError, save_volume, volume, tmp_path / "v.npy", match="overwrit")


def test_bad_options_are_config_errors(tmp_path):
    (tmp_path / "r.raw").write_bytes(b"\0" * 100)
    raises_one_line(ConfigError, open_volume, tmp_path / "r.raw", match="shape=")
    info = VolumeInfo(SHAPE, np.uint8)
    raises_one_line(ConfigError, create_writer, tmp_path / "v.tif", info, compression="jpeg", match="zlib")
    raises_one_line(ConfigError, create_writer, tmp_path / "v.h5", info, compression="zip", match="gzip")
    raises_one_line(ConfigError, open_volume, tmp_path / "r.raw", shape=(2, 5, 10), dtype="uint8",
                    byte_order="middle", match="little")


def test_unknown_reader_or_writer_option_is_a_config_error(tmp_path):
    path = save_volume(Volume(np.zeros((2, 3, 4), np.uint8)), tmp_path / "v.tif")
    with pytest.raises(ConfigError, match="dataset are not valid for reading tiff"):
        open_volume(path, dataset="/x")
    with pytest.raises(ConfigError, match="compresion are not valid for writing hdf5.*compression"):
        create_writer(tmp_path / "o.h5", VolumeInfo((2, 3, 4), np.uint8), compresion="gzip")
    assert not (tmp_path / "o.h5.partial").exists()


def test_an_imagej_stack_written_the_ordinary_way_is_read_as_z(tmp_path):
    """tifffile.imwrite(p, volume, imagej=True) calls the planes of a 3-D array channels (axes CYX): they
    are slices; only ImageJ metadata that mark real channels make the file multi-channel."""
    labels = (np.arange(200 * 13 * 29) % 3).astype(np.uint8).reshape(200, 13, 29)
    tifffile.imwrite(tmp_path / "labels.tif", labels, imagej=True)
    assert tifffile.TiffFile(tmp_path / "labels.tif").series[0].axes == "CYX"
    np.testing.assert_array_equal(load_volume(tmp_path / "labels.tif").array, labels)
    tifffile.imwrite(tmp_path / "float.tif", labels[:7].astype(np.float32), imagej=True)
    assert load_volume(tmp_path / "float.tif").shape == (7, 13, 29)
    for name, kwargs in [("composite.tif", dict(metadata={"axes": "CYX", "mode": "composite"})),
                         ("luts.tif", dict(metadata={"axes": "CYX", "LUTs": [np.zeros((3, 256), np.uint8)] * 3})),
                         ("zc.tif", dict(metadata={"axes": "ZCYX"}))]:
        data = labels[:6].reshape(2, 3, 13, 29) if name == "zc.tif" else labels[:3]
        tifffile.imwrite(tmp_path / name, data, imagej=True, **kwargs)
        raises_one_line(InvalidVolumeError, open_volume, tmp_path / name, match="has 3 channels")


@pytest.mark.parametrize("slices", [3, 4])
def test_a_three_or_four_slice_stack_that_tifffile_stored_as_colour_says_how_to_write_it(tmp_path, slices):
    """tifffile.imwrite stores a (3 or 4, y, x) array as one planar RGB(A) page unless told otherwise: the
    error says so and gives the write that makes it a stack, which then reads as a volume."""
    volume = np.arange(slices * 13 * 29, dtype=np.uint16).reshape(slices, 13, 29)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tifffile announces a change of this default
        tifffile.imwrite(tmp_path / "crop.tif", volume)
    if tifffile.TiffFile(tmp_path / "crop.tif").series[0].axes == "SYX":  # tifffile versions with that default
        raises_one_line(InvalidVolumeError, open_volume, tmp_path / "crop.tif",
                        match="photometric='minisblack'")
    tifffile.imwrite(tmp_path / "crop.tif", volume, photometric="minisblack")
    np.testing.assert_array_equal(load_volume(tmp_path / "crop.tif").array, volume)
    rgb = np.zeros((3, 13, 29), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb.transpose(1, 2, 0), photometric="rgb")  # a colour picture
    raises_one_line(InvalidVolumeError, open_volume, tmp_path / "rgb.tif", match="channels")


def test_an_existing_empty_folder_is_a_valid_output(tmp_path):
    """An empty folder made for the output (a folder of slices, a Zarr store) loses nothing: it is accepted
    without --overwrite; a folder that holds anything is still refused."""
    volume = Volume(np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE))
    for name in ("slices", "labels.zarr"):
        (tmp_path / name).mkdir()
        save_volume(volume, tmp_path / name)
        np.testing.assert_array_equal(load_volume(tmp_path / name).array, volume.array)
        raises_one_line(OutputExistsError, save_volume, volume, tmp_path / name, match="already exists")


def test_outputs_that_spare_their_inputs_pass_the_check(tmp_path):
    """The shared check refuses only real collisions: siblings, prefixes and missing outputs pass."""
    from bone_avizo.errors import OutputIsInputError
    from bone_avizo.io.base import check_outputs_spare_inputs

    (tmp_path / "slices").mkdir()
    scan = tmp_path / "scan.tif"
    scan.write_bytes(b"scan")
    inputs = {"--input": [scan, tmp_path / "slices", None], "--model": None}
    check_outputs_spare_inputs({"--output": [tmp_path / "scan.tif.labels.tif", tmp_path / "slices2",
                                             tmp_path / "slices.tif"]}, inputs)
    check_outputs_spare_inputs({}, inputs)
    raises_one_line(OutputIsInputError, check_outputs_spare_inputs, {"--output": tmp_path / "slices" / "a" / "b.tif"},
                    inputs, match=r"lies inside --input .*slices; writing it would destroy that input")
    raises_one_line(OutputIsInputError, check_outputs_spare_inputs, {"--output": tmp_path / "." / "scan.tif"},
                    inputs, match="is the same file as --input")
