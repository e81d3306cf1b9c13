"""NIfTI, NRRD, Slicer .seg.nrrd, Scanco ISQ and compressed TIFF: round trips, files written by nibabel,
pynrrd and tifffile, the real NRRD files in ../shared/data/amira (skipped where absent), and the errors.

Arrays are (z, y, x); these formats list axes x, y, z.
"""
from __future__ import annotations

import logging
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bone_avizo.errors import ConfigError, FormatError, InvalidVolumeError, UnsupportedDtypeError
from bone_avizo.io import detect_format, load_volume, open_volume, save_volume
from bone_avizo.volume import Volume
from conftest import SHARED_DATA

nibabel = pytest.importorskip("nibabel")
nrrd = pytest.importorskip("nrrd")

AMIRA = SHARED_DATA / "amira"
DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64,
          bool]


def _array(dtype, shape=(3, 5, 7)) -> np.ndarray:
    values = np.random.default_rng(3).integers(0, 3, shape)
    return values.astype(dtype) if dtype is not bool else values.astype(bool)


def _volume(dtype, **kw) -> Volume:
    return Volume(_array(dtype), voxel_size=(0.03, 0.0123, 0.011), origin=(1.5, -2.0, 3.25), name="scan7", **kw)


# ---------------------------------------------------------------------------------------------
# round trips: every writable format x dtype, with voxel size and origin
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.nrrd"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, name, dtype):
    volume = _volume(dtype, class_names=("background", "bone", "pores"))
    back = load_volume(save_volume(volume, tmp_path / name))
    expected = volume.array.astype(np.uint8) if dtype is bool else volume.array
    assert back.dtype == expected.dtype
    np.testing.assert_array_equal(back.array, expected)
    assert (back.voxel_size, back.origin, back.name, back.class_names) == (
        volume.voxel_size, volume.origin, "scan7", volume.class_names)


@pytest.mark.parametrize("name", ["v.nii", "v.nrrd"])
def test_float16_is_refused_with_advice(tmp_path, name):
    with pytest.raises(UnsupportedDtypeError, match="cannot store data type float16; cast the volume to float32"):
        save_volume(_volume(np.float16), tmp_path / name)


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nrrd", "v.seg.nrrd", "v.png"])
def test_sources_pickle_as_reopen_instructions(tmp_path, name):
    path = save_volume(_volume(np.uint8, class_names=("background", "bone", "pores")), tmp_path / name)
    with open_volume(path) as source:
        copy = pickle.loads(pickle.dumps(source))
        np.testing.assert_array_equal(copy.read_slab(1, 3), source.read_slab(1, 3))
        assert copy.info == source.info


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, bool])
@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_seg_nrrd_round_trip_and_slicer_fields(tmp_path, dtype, encoding):
    volume = _volume(dtype, class_names=("background", "bone", "pores")[: 2 if dtype is bool else 3])
    path = save_volume(volume, tmp_path / "labels.seg.nrrd", encoding=encoding)
    assert detect_format(path) == "seg-nrrd"
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, volume.array.astype(back.dtype))
    assert (back.voxel_size, back.origin, back.class_names) == (volume.voxel_size, volume.origin,
                                                               volume.class_names)
    data, header = nrrd.read(str(path), index_order="C")  # what Slicer reads: a 3-D labelmap and Segment fields
    np.testing.assert_array_equal(data, volume.array.astype(data.dtype))
    assert header["Segment0_Name"] == "bone" and header["Segment0_LabelValue"] == "1"
    assert header["Segment0_Layer"] == "0" and header["Segment0_ID"] == "Segment_1"
    assert header["Segment0_Color"] == "0.945 0.839 0.569"
    z, y, x = np.nonzero(volume.array == 1)
    assert header["Segment0_Extent"] == f"{x.min()} {x.max()} {y.min()} {y.max()} {z.min()} {z.max()}"
    assert header["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"


def test_seg_nrrd_written_by_slicer_conventions_is_read_with_segment_names(tmp_path):
    labels = _array(np.uint8)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.011, 0.0123, 0.03]),
              "space origin": [3.0, 2.0, 1.0], "kinds": ["domain"] * 3, "encoding": "gzip",
              "Segment0_ID": "Segment_1", "Segment0_Name": "cortical", "Segment0_LabelValue": "2",
              "Segment1_ID": "Segment_2", "Segment1_Name": "trabecular", "Segment1_LabelValue": "1"}
    nrrd.write(str(tmp_path / "s.seg.nrrd"), labels, header, index_order="C")
    volume = load_volume(tmp_path / "s.seg.nrrd")
    assert volume.class_names == ("background", "trabecular", "cortical")
    assert volume.voxel_size == pytest.approx((0.03, 0.0123, 0.011))


def test_seg_nrrd_read_by_slicerio_as_slicer_would(tmp_path):
    slicerio = pytest.importorskip("slicerio")  # 3D Slicer's own Python reader of .seg.nrrd
    volume = _volume(np.uint8, class_names=("background", "bone", "pores"))
    segmentation = slicerio.read_segmentation(str(save_volume(volume, tmp_path / "l.seg.nrrd")))
    np.testing.assert_array_equal(segmentation["voxels"], volume.array.T)  # (i, j, k)
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert sorted(segments) == ["bone", "pores"] and segments["pores"]["labelValue"] == 2
    assert segments["bone"]["color"] == pytest.approx([0.945, 0.839, 0.569]) and segments["bone"]["layer"] == 0
    z, y, x = np.nonzero(volume.array == 2)
    assert list(segments["pores"]["extent"]) == [x.min(), x.max(), y.min(), y.max(), z.min(), z.max()]
    assert np.allclose(np.asarray(segmentation["ijkToLPS"], dtype=float)[:3, :3], np.diag([0.011, 0.0123, 0.03]))


def test_seg_nrrd_written_by_slicerio_is_read(tmp_path):
    slicerio = pytest.importorskip("slicerio")
    ijk = np.zeros((7, 5, 3), np.uint8)
    ijk[3, 2, 1], ijk[4:6, 1:3, 2] = 1, 3
    segments = [{"id": "Segment_1", "name": "trabecular", "labelValue": 1, "layer": 0, "color": [1, 0, 0]},
                {"id": "Segment_2", "name": "cortical", "labelValue": 3, "layer": 0, "color": [0, 1, 0]}]
    ijk_to_lps = np.array([[0.01, 0, 0, 3], [0, 0.02, 0, 2], [0, 0, 0.03, 1], [0, 0, 0, 1]])
    slicerio.write_segmentation(str(tmp_path / "w.seg.nrrd"), {"voxels": ijk, "ijkToLPS": ijk_to_lps,
                                                               "encoding": "gzip", "segments": segments})
    volume = load_volume(tmp_path / "w.seg.nrrd")
    np.testing.assert_array_equal(volume.array, ijk.T)
    assert volume.class_names == ("background", "trabecular", "label2", "cortical")
    assert volume.voxel_size + volume.origin == pytest.approx((0.03, 0.02, 0.01, 1.0, 2.0, 3.0))


def test_seg_nrrd_with_overlapping_layers_is_refused(tmp_path):
    header = {"space": "left-posterior-superior", "kinds": ["list", "domain", "domain", "domain"],
              "space directions": [[np.nan] * 3, [1, 0, 0], [0, 1, 0], [0, 0, 1]],
              "Segment0_Name": "a", "Segment0_Layer": "0", "Segment1_Name": "b", "Segment1_Layer": "1"}
    nrrd.write(str(tmp_path / "o.seg.nrrd"), np.zeros((3, 4, 5, 2), np.uint8), header, index_order="C")
    with pytest.raises(InvalidVolumeError, match="overlapping segments in several layers; in Slicer export the "
                                                 "segments to a labelmap first"):
        open_volume(tmp_path / "o.seg.nrrd")


def test_seg_nrrd_refuses_float_volumes(tmp_path):
    with pytest.raises(ConfigError, match="a Slicer segmentation holds labels"):
        save_volume(_volume(np.float32), tmp_path / "x.seg.nrrd")


# ---------------------------------------------------------------------------------------------
# files written by the formats' own libraries
# ---------------------------------------------------------------------------------------------
def test_nifti_written_by_nibabel_flipped_axes_in_microns(tmp_path):
    xyz = np.random.default_rng(0).integers(0, 1000, (7, 5, 3)).astype(np.int16)  # (i, j, k)
    affine = np.array([[-11.0, 0, 0, 100.0], [0, -12.0, 0, 200.0], [0, 0, 30.0, -5.0], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(xyz, affine)
    image.header.set_xyzt_units("micron")
    nibabel.save(image, tmp_path / "n.nii.gz")
    volume = load_volume(tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(volume.array, xyz.T)
    assert volume.voxel_size == pytest.approx((0.03, 0.012, 0.011))
    assert volume.origin == pytest.approx((-0.005, 0.2, 0.1))


def test_nifti_scaled_data_are_read_scaled(tmp_path):
    xyz = np.arange(2 * 3 * 4, dtype=np.int16).reshape(4, 3, 2)
    image = nibabel.Nifti1Image(xyz, np.eye(4))
    image.header.set_slope_inter(0.5, 10)
    nibabel.save(image, tmp_path / "s.nii")
    volume = load_volume(tmp_path / "s.nii")
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume.array, xyz.T * 0.5 + 10)


def test_nifti_oblique_affine_is_refused(tmp_path):
    angle = np.deg2rad(20)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 3, 2), np.uint8), affine), tmp_path / "o.nii")
    with pytest.raises(FormatError, match="has a non-axis-aligned space direction"):
        open_volume(tmp_path / "o.nii")


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
@pytest.mark.parametrize("detached", [False, True])
def test_nrrd_written_by_pynrrd(tmp_path, encoding, detached):
    zyx = np.random.default_rng(1).integers(0, 60000, (4, 5, 6)).astype(">u2")  # big endian on disk
    header = {"space": "left-posterior-superior", "encoding": encoding, "endian": "big",
              "space directions": [[0, 0.25, 0], [0.5, 0, 0], [0, 0, -2.0]],  # x along world y: a swap
              "space origin": [1.0, 2.0, 3.0], "space units": ["microns"] * 3}
    name = "d.nhdr" if detached else "d.nrrd"
    nrrd.write(str(tmp_path / name), zyx, header, index_order="C", detached_header=detached)
    with open_volume(tmp_path / name) as source:
        np.testing.assert_array_equal(source.read_all(), zyx.astype(np.uint16))
        assert source.voxel_size == pytest.approx((0.002, 0.0005, 0.00025))
        assert source.info.origin == pytest.approx((0.003, 0.001, 0.002))
        if encoding == "raw":  # raw data are memory-mapped
            assert isinstance(source._array, np.memmap)


def test_nrrd_non_axis_aligned_direction_is_one_clear_error(tmp_path):
    header = {"space": "left-posterior-superior", "space directions": [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]]}
    nrrd.write(str(tmp_path / "o.nrrd"), np.zeros((3, 4, 5), np.uint8), header, index_order="C")
    with pytest.raises(FormatError) as info:
        open_volume(tmp_path / "o.nrrd")
    assert str(info.value) == (
        f"{tmp_path / 'o.nrrd'} has a non-axis-aligned space direction (0.5,0.5,0) for axis 0; resample it onto "
        "an axis-aligned grid first (e.g. 3D Slicer: harden the transform and resample)")


def test_nrrd_with_channels_is_refused(tmp_path):
    header = {"space": "left-posterior-superior", "kinds": ["vector", "domain", "domain", "domain"],
              "space directions": [[np.nan] * 3, [1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    nrrd.write(str(tmp_path / "c.nrrd"), np.zeros((3, 4, 5, 2), np.uint8), header, index_order="C")
    with pytest.raises(InvalidVolumeError, match=r"has 4 axes \(sizes 2 5 4 3, 3 spatial\)"):
        open_volume(tmp_path / "c.nrrd")


# ---------------------------------------------------------------------------------------------
# real files (skipped where ../shared/data is absent)
# ---------------------------------------------------------------------------------------------
def _real(name: str):
    path = AMIRA / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def test_real_lhmask_nrrd_matches_the_amira_files():
    nrrd_volume = load_volume(_real("LHMask.nrrd"))
    amira = load_volume(_real("LHMask.zip.am"))
    assert nrrd_volume.shape == (50, 50, 50) and int(nrrd_volume.array.sum()) == 28669
    np.testing.assert_array_equal(nrrd_volume.array, amira.array)
    # the NRRD says 1.4 microns; the .am has no unit (read as mm) and the same numbers
    assert tuple(v * 1000 for v in nrrd_volume.voxel_size) == pytest.approx(amira.voxel_size, rel=1e-6)


def test_real_very_small_label_field_nrrd_matches_the_am():
    nrrd_volume = load_volume(_real("VerySmallLabelField.nrrd"))
    amira = load_volume(_real("VerySmallLabelField.am"))
    assert nrrd_volume.shape == (1, 2, 2) and nrrd_volume.voxel_size == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(nrrd_volume.array, amira.array)


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_real_nifti_files_nibabel_ships(name):
    """NIfTI files written by neuroimaging tools (big-endian, unknown units, flipped axes), as nibabel reads them."""
    path = Path(nibabel.__file__).parent / "tests" / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} not shipped with this nibabel")
    image = nibabel.load(path)
    volume = load_volume(path)
    np.testing.assert_array_equal(volume.array, np.asarray(image.dataobj).T)
    zooms = np.linalg.norm(image.affine[:3, :3], axis=0)
    assert volume.voxel_size == pytest.approx(tuple(zooms[::-1]), rel=1e-6)


def test_4d_nifti_is_refused(tmp_path):
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 3, 2, 5), np.int16), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(InvalidVolumeError, match=r"holds an image of shape \(4, 3, 2, 5\) \(i, j, k, ...\), not a 3-D"):
        open_volume(tmp_path / "t.nii")


# ---------------------------------------------------------------------------------------------
# Scanco ISQ
# ---------------------------------------------------------------------------------------------
def write_isq(path, zyx: np.ndarray, extent_um=(1000, 1200, 300), offset_blocks=1):
    """An ISQ file with the documented header layout (dimensions at 44, extent in um at 56, name at 128,
    data offset in blocks at 508) and int16 data after (offset + 1) * 512 bytes."""
    header = bytearray(512 * (offset_blocks + 1))
    header[:16] = b"CTDATA-HEADER_V1"
    struct.pack_into("<i", header, 16, 3)
    struct.pack_into("<3i", header, 44, zyx.shape[2], zyx.shape[1], zyx.shape[0])
    struct.pack_into("<3i", header, 56, *extent_um)
    struct.pack_into("<i", header, 88, 4096)
    header[128:136] = b"FEMUR_01"
    struct.pack_into("<i", header, 508, offset_blocks)
    path.write_bytes(bytes(header) + zyx.astype("<i2").tobytes())
    return path


def test_isq_reads_header_voxel_size_and_int16_data(tmp_path):
    zyx = np.random.default_rng(2).integers(-2000, 8000, (3, 6, 5)).astype(np.int16)
    path = write_isq(tmp_path / "C0001234.ISQ", zyx)
    assert detect_format(path) == "isq"
    with open_volume(path) as source:
        np.testing.assert_array_equal(source.read_all(), zyx)
        assert source.voxel_size == pytest.approx((0.1, 0.2, 0.2))  # 300/3, 1200/6, 1000/5 um
        assert source.name == "FEMUR_01"


def test_isq_truncated_and_not_isq(tmp_path):
    path = write_isq(tmp_path / "t.isq", np.zeros((3, 6, 5), np.int16))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(Exception, match=r"is truncated: its 5x6x3 int16 data need 1204 bytes, the file has 1194"):
        open_volume(path)
    (tmp_path / "n.isq").write_bytes(b"\0" * 600)
    with pytest.raises(FormatError, match="is not a Scanco ISQ file"):
        open_volume(tmp_path / "n.isq")


# ---------------------------------------------------------------------------------------------
# compressed TIFF (imagecodecs)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "jpeg"])
def test_compressed_tiff_is_read(tmp_path, compression):
    pytest.importorskip("imagecodecs")
    zyx = (np.arange(4 * 32 * 32) % 251).astype(np.uint8).reshape(4, 32, 32)
    tifffile.imwrite(tmp_path / "c.tif", zyx, compression=compression, photometric="minisblack")
    volume = load_volume(tmp_path / "c.tif")
    tolerance = 12 if compression == "jpeg" else 0  # JPEG is lossy
    assert np.abs(volume.array.astype(int) - zyx).max() <= tolerance


def test_compressed_tiff_without_imagecodecs_names_it(tmp_path):
    zyx = (np.arange(4 * 32 * 32) % 251).astype(np.uint8).reshape(4, 32, 32)
    tifffile.imwrite(tmp_path / "c.tif", zyx, compression="lzw", photometric="minisblack")
    code = ("import sys; sys.modules['imagecodecs'] = None\n"
            "from bone_avizo.io import open_volume\n"
            "from bone_avizo.errors import FormatError\n"
            f"try:\n    open_volume({str(tmp_path / 'c.tif')!r})\n"
            "except FormatError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{tmp_path / 'c.tif'} is compressed with LZW, which needs the imagecodecs package: " \
                          "pip install imagecodecs"


# ---------------------------------------------------------------------------------------------
# laziness and errors
# ---------------------------------------------------------------------------------------------
def test_gzip_nifti_warns_above_the_size_it_reads_whole(tmp_path, caplog, monkeypatch):
    from bone_avizo.io import nifti

    save_volume(_volume(np.uint16), tmp_path / "v.nii.gz")
    monkeypatch.setattr(nifti, "GZIP_WARN_BYTES", 100)
    with caplog.at_level(logging.WARNING):
        source = open_volume(tmp_path / "v.nii.gz")
    assert "gzip has no random access" in caplog.text
    source.read_slab(0, 1)
    assert source._whole is not None  # decompressed once, then sliced


def test_plain_nifti_reads_a_slab_without_loading_the_volume(tmp_path):
    save_volume(_volume(np.float32), tmp_path / "v.nii")
    with open_volume(tmp_path / "v.nii") as source:
        np.testing.assert_array_equal(source.read_slab(1, 2), _volume(np.float32).array[1:2])
        assert source._whole is None


def test_unknown_extension_lists_every_supported_one(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"x")
    with pytest.raises(FormatError) as info:
        open_volume(tmp_path / "scan.xyz")
    for extension in (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd", ".dcm", ".isq", ".png", ".bmp", ".jpg",
                      ".tif", ".h5", ".am"):
        assert f"{extension}," in str(info.value) or f"{extension} " in str(info.value)


def test_memory_of_a_one_slice_read(tmp_path):
    """Peak Python/numpy allocation (tracemalloc) of opening and reading one slice of a 128^3 uint16 volume
    (4 MB): uncompressed files cost a few slices, gzip files the volume once (plus a 1 MB
    decompression chunk); printed for docs/formats.md (run with -s)."""
    import tracemalloc

    array = np.random.default_rng(0).integers(0, 4000, (128, 128, 128)).astype(np.uint16)
    slice_bytes, volume_bytes = array[0].nbytes, array.nbytes
    peaks = {}
    for name, options in [("v.nii", {}), ("v.nii.gz", {}), ("v.nrrd", {"encoding": "raw"}), ("g.nrrd", {})]:
        path = save_volume(Volume(array, voxel_size=0.02), tmp_path / name, **options)
        with open_volume(path):
            pass  # imports and caches outside the measurement
        tracemalloc.start()
        with open_volume(path) as source:
            np.testing.assert_array_equal(source.read_slab(64, 65)[0], array[64])
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name}: one-slice read peak {peaks[name] / 1e6:.2f} MB (volume {volume_bytes / 1e6:.1f} MB)")
    assert peaks["v.nii"] < 16 * slice_bytes and peaks["v.nrrd"] < 16 * slice_bytes
    assert volume_bytes < peaks["v.nii.gz"] < volume_bytes + (2 << 20)
    assert volume_bytes < peaks["g.nrrd"] < volume_bytes + (2 << 20)
