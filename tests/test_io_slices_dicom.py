"""Folders of PNG/BMP/JPEG slices and DICOM series: files written by Pillow and pydicom, read here.

Arrays are (z, y, x). Checks: natural order and SkyScan naming, NRecon .log voxel size, preview images
skipped, mixed slice sizes refused; DICOM order from geometry, rescale to HU, several series, enhanced
multi-frame files, a missing decoder named; a one-slice read opens one file.
"""
from __future__ import annotations

import builtins
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bone_avizo.errors import ConfigError, FormatError, ShapeMismatchError
from bone_avizo.io import detect_format, load_volume, open_volume, save_volume
from bone_avizo.volume import Volume

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian,  # noqa: E402
                         JPEGLSLossless, generate_uid)


def _volume(shape=(4, 6, 9), dtype=np.uint8, high=200, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


class OpenCounter:
    """Counts the files below ``folder`` that ``open`` (builtins.open, io.open, which Path.open uses) is
    called on while active."""

    def __init__(self, monkeypatch, folder: Path):
        self.folder, self.opened = str(folder), []
        real_open = builtins.open

        def counting_open(file, *args, **kwargs):
            if isinstance(file, (str, Path)) and str(file).startswith(self.folder):
                self.opened.append(Path(file).name)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting_open)
        monkeypatch.setattr(io, "open", counting_open)


# ---------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------
def _write_images(folder: Path, array: np.ndarray, pattern: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for z, plane in enumerate(array):
        Image.fromarray(plane).save(folder / pattern.format(z))
    return folder


def test_png_folder_written_by_pillow_is_read_in_natural_order_16_bit(tmp_path):
    array = _volume((12, 5, 7), np.uint16, 60000)
    folder = _write_images(tmp_path / "scan", array, "slice{}.png")  # slice2 before slice10
    assert detect_format(folder) == "image-folder"
    with open_volume(folder) as source:
        assert source.dtype == np.uint16 and source.shape == (12, 5, 7)
        np.testing.assert_array_equal(source.read_all(), array)
        np.testing.assert_array_equal(source.read_plane(2, 3), array[:, :, 3])
        assert source.voxel_size == (1.0, 1.0, 1.0)  # no log: 1, with a warning


def test_skyscan_bmp_folder_with_nrecon_log_and_spy_image(tmp_path):
    array = _volume((3, 8, 10))
    folder = _write_images(tmp_path / "rec", array, "bone_rec{:08d}.bmp")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "bone_rec_spr.bmp")  # the spy image
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "bone__rec_preview.png")
    (folder / "bone_rec.log").write_text("[System]\nScanner=Skyscan1272\n[Reconstruction]\n"
                                         "Reconstruction Program=NRecon\nPixel Size (um)=11.99968\n")
    volume = load_volume(folder)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.voxel_size == pytest.approx((0.01199968,) * 3)


def test_palette_and_grey_rgb_slices_are_read_as_grey(tmp_path):
    array = _volume((2, 5, 6))
    folder = tmp_path / "rgb"
    folder.mkdir()
    for z, plane in enumerate(array):
        Image.fromarray(np.stack([plane] * 3, axis=-1)).save(folder / f"s{z}.jpg", quality=100)
    volume = load_volume(folder)
    assert volume.dtype == np.uint8 and np.abs(volume.array.astype(int) - array).max() <= 3  # JPEG is lossy


def test_mixed_slice_sizes_are_one_clear_error(tmp_path):
    folder = _write_images(tmp_path / "mixed", _volume((2, 5, 6)), "s{}.png")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(folder / "s2.png")
    with pytest.raises(ShapeMismatchError) as info:
        open_volume(folder)
    assert str(info.value) == ("slice s2.png has shape (5, 7) uint8, but s0.png has (5, 6) uint8; all slices of a "
                               "folder must be 2-D with the same shape and type")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, bool])
def test_png_folder_round_trip(tmp_path, dtype):
    array = _volume((3, 5, 7), high=2).astype(dtype)
    volume = Volume(array, voxel_size=(0.03, 0.01, 0.01), origin=(1.0, 2.0, 3.0), class_names=("bg", "bone"))
    path = save_volume(volume, tmp_path / "labels.png")
    assert sorted(p.name for p in path.iterdir())[:2] == ["bone_avizo.json", "labels.log"]
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, array.astype(back.dtype))
    assert (back.voxel_size, back.origin, back.class_names) == (volume.voxel_size, volume.origin, ("bg", "bone"))
    pillow = np.asarray(Image.open(path / "labels_00001.png"))
    np.testing.assert_array_equal(pillow, array[1].astype(pillow.dtype))


def test_png_folder_refuses_types_png_cannot_hold(tmp_path):
    with pytest.raises(Exception, match="PNG slices store 8- or 16-bit unsigned values"):
        save_volume(Volume(np.zeros((2, 3, 4), np.float32)), tmp_path / "x.png")


def test_one_slice_of_a_png_folder_opens_one_file(tmp_path, monkeypatch):
    folder = _write_images(tmp_path / "scan", _volume((20, 5, 6)), "s{:03d}.png")
    source = open_volume(folder)
    counter = OpenCounter(monkeypatch, folder)
    source.read_slab(7, 8)
    assert counter.opened == ["s007.png"]


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
def _dataset(sop_class, rows: int, columns: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "CT", rows, columns
    return ds


def write_ct_series(folder: Path, stored: np.ndarray, *, spacing=(0.5, 0.2, 0.25), origin=(10.0, 20.0, -30.0),
                    slope=1.0, intercept=-1024.0, series_uid=None, series_number=1, names=None) -> Path:
    """A CT series of single-slice files (z, y, x stored uint16, 12 bits), axial, file names shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    order = np.random.default_rng(1).permutation(len(stored))
    for k, z in enumerate(order):
        ds = _dataset(CTImageStorage, *stored.shape[1:])
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, f"s{series_number}"
        ds.InstanceNumber = int(k + 1)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[2], origin[1], origin[0] + z * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.set_pixel_data(stored[z], photometric_interpretation="MONOCHROME2", bits_stored=12)
        ds.save_as(folder / (names[k] if names else f"IM{k:04d}"), enforce_file_format=True)
    return folder


def test_dicom_series_ordered_by_position_and_rescaled_to_int16_hu(tmp_path):
    stored = _volume((5, 6, 7), np.uint16, 4000)
    folder = write_ct_series(tmp_path / "ct", stored)
    assert detect_format(folder) == "dicom"
    with open_volume(folder) as source:
        assert source.dtype == np.int16  # 12-bit stored - 1024 fits int16
        np.testing.assert_array_equal(source.read_all(), stored.astype(np.int32) - 1024)
        assert source.voxel_size == pytest.approx((0.5, 0.2, 0.25))
        assert source.info.origin == pytest.approx((10.0, 20.0, -30.0))


def test_dicom_fractional_rescale_is_float32(tmp_path):
    stored = _volume((3, 4, 5), np.uint16, 4000)
    folder = write_ct_series(tmp_path / "ct", stored, slope=0.5, intercept=-10)
    volume = load_volume(folder)
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume.array, stored * 0.5 - 10)


def test_one_file_of_a_series_reads_the_series(tmp_path):
    stored = _volume((4, 4, 5), np.uint16, 4000)
    folder = write_ct_series(tmp_path / "ct", stored, names=[f"x{k}.dcm" for k in range(4)])
    assert load_volume(folder / "x2.dcm").shape == (4, 4, 5)


def test_dicom_folder_with_two_series_lists_them_and_series_option_chooses(tmp_path):
    folder = tmp_path / "two"
    first = write_ct_series(folder, _volume((3, 4, 5), np.uint16, 4000), series_uid="1.2.3.1", series_number=3,
                            names=["a1", "a2", "a3"])
    write_ct_series(folder, _volume((2, 4, 5), np.uint16, 4000, seed=2), series_uid="1.2.3.2", series_number=7,
                    names=["b1", "b2"])
    with pytest.raises(FormatError) as info:
        open_volume(first)
    assert str(info.value) == (
        f"folder {folder} holds 2 DICOM series (1 = SeriesNumber 3 's3' (3 files, UID 1.2.3.1); 2 = SeriesNumber 7 "
        "'s7' (2 files, UID 1.2.3.2)); choose one with series=<number, SeriesNumber or UID>")
    assert open_volume(folder, series="7").shape[0] == 2
    assert open_volume(folder, series="1.2.3.1").shape[0] == 3
    assert open_volume(folder, series=2).shape[0] == 2
    with pytest.raises(ConfigError, match="matches none of the 2 DICOM series"):
        open_volume(folder, series="9")


def test_dicom_slices_of_different_sizes_are_refused(tmp_path):
    folder = write_ct_series(tmp_path / "ct", _volume((2, 4, 5), np.uint16, 4000), series_uid="1.2.9")
    write_ct_series(folder, _volume((1, 4, 6), np.uint16, 4000), series_uid="1.2.9", origin=(50, 20, -30),
                    names=["late"])
    with pytest.raises(ShapeMismatchError, match="slice late is 4x6 pixels, but IM0000 is 4x5"):
        open_volume(folder)


def test_one_slice_of_a_dicom_folder_opens_one_file(tmp_path, monkeypatch):
    stored = _volume((12, 4, 5), np.uint16, 4000)
    folder = write_ct_series(tmp_path / "ct", stored)
    source = open_volume(folder)
    counter = OpenCounter(monkeypatch, folder)
    np.testing.assert_array_equal(source.read_slab(6, 7)[0], stored[6].astype(np.int16) - 1024)
    assert len(counter.opened) == 1 and counter.opened[0] == source.planes[6].path.name


def test_enhanced_multiframe_ct_ordered_by_frame_positions(tmp_path):
    stored = _volume((4, 3, 5), np.uint16, 4000)
    frame_order = [2, 0, 3, 1]  # frames stored out of order; positions tell the truth
    ds = _dataset(EnhancedCTImageStorage, 3, 5)
    ds.SeriesInstanceUID, ds.NumberOfFrames = generate_uid(), 4
    shared = Dataset()
    measures, orientation, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.3, 0.4], 0.6
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -1024, "HU"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in frame_order:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 5.0 + 0.6 * z]
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.set_pixel_data(stored[frame_order], photometric_interpretation="MONOCHROME2", bits_stored=12)
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    with open_volume(path) as source:
        assert source.voxel_size == pytest.approx((0.6, 0.3, 0.4)) and source.dtype == np.int16
        np.testing.assert_array_equal(source.read_all(), stored.astype(np.int16) - 1024)
        assert source.info.origin[0] == pytest.approx(5.0)


def test_compressed_dicom_without_its_decoder_names_the_package(tmp_path):
    folder = write_ct_series(tmp_path / "ct", _volume((2, 4, 5), np.uint16, 4000))
    for path in folder.iterdir():  # relabel as JPEG-LS: no decoder for it is installed by default
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([b"\xff\xd8 JPEG-LS bytes \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    if pydicom.pixels.get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(FormatError, match=r"is compressed with JPEG-LS Lossless Image Compression, which needs a "
                                          r"decoder package: pip install .*pyjpegls"):
        open_volume(folder)


def test_dicom_is_read_only(tmp_path):
    with pytest.raises(ConfigError, match=r"\.dcm files are read, not written"):
        save_volume(Volume(np.zeros((2, 3, 4), np.uint8)), tmp_path / "x.dcm")


def test_dicom_uneven_spacing_is_reported(tmp_path, caplog):
    stored = _volume((3, 4, 5), np.uint16, 4000)
    folder = write_ct_series(tmp_path / "ct", stored[:2])
    write_ct_series(folder, stored[2:], series_uid=pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID,
                    origin=(12.0, 20.0, -30.0), names=["late"])
    with caplog.at_level(logging.WARNING):
        volume = load_volume(folder)
    assert "uneven slice spacing" in caplog.text and volume.voxel_size[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# real files: the DICOM test files pydicom ships (NEMA WG04 images, a pcir.org MR series)
# ---------------------------------------------------------------------------------------------
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _copy_alone(tmp_path, name: str) -> Path:
    source = PYDICOM_FILES / name
    if not source.exists():
        pytest.skip(f"{source} not shipped with this pydicom")
    folder = tmp_path / source.stem
    if source.is_dir():
        shutil.copytree(source, folder)
    else:
        folder.mkdir()
        shutil.copy(source, folder)
    return folder


def _pydicom_value(ds) -> np.ndarray:
    return ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def test_real_mr_series_ordered_by_position(tmp_path):
    folder = _copy_alone(tmp_path, "dicomdirtests/98892003/MR700")  # 7 files named by number, no extension
    assert detect_format(folder) == "dicom"
    datasets = [pydicom.dcmread(p) for p in folder.iterdir()]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
    volume = load_volume(folder)
    np.testing.assert_array_equal(volume.array, np.stack([_pydicom_value(ds) for ds in datasets]))
    assert volume.voxel_size[1:] == pytest.approx([float(v) for v in datasets[0].PixelSpacing])


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                                  "MR_small_expb.dcm", "MR_small_jp2klossless.dcm"])
def test_real_transfer_syntaxes_read_like_the_uncompressed_file(tmp_path, name):
    reference = load_volume(_copy_alone(tmp_path, "MR_small.dcm"))
    volume = load_volume(_copy_alone(tmp_path, name))
    np.testing.assert_array_equal(volume.array, reference.array)
    assert (volume.voxel_size, volume.origin) == (reference.voxel_size, reference.origin)


def test_real_ct_slice_in_hounsfield_units(tmp_path):
    folder = _copy_alone(tmp_path, "CT_small.dcm")
    ds = pydicom.dcmread(folder / "CT_small.dcm")
    volume = load_volume(folder)
    assert volume.dtype == np.float32  # 16 bits stored, intercept -1024: int16 cannot hold the whole range
    np.testing.assert_array_equal(volume.array[0], _pydicom_value(ds))
    assert volume.voxel_size[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
