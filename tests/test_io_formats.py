"""Volume formats TIFF (stack and folder), HDF5, Zarr, .npy, raw and MetaImage: round trips, lazy
slab/region/plane reads, atomic and resumable writes, metadata from other tools' files."""
from __future__ import annotations

import importlib.util
import json
import pickle
import sys
import tracemalloc
import zlib

import h5py
import numpy as np
import pytest
import tifffile

from bone_avizo.errors import FormatError, OutputExistsError
from bone_avizo.io import create_writer, load_volume, open_volume, save_volume
from bone_avizo.io.npy import sidecar_path, unit_to_mm
from bone_avizo.io.tiff import natural_key
from bone_avizo.volume import Volume

SHAPE = (7, 13, 29)  # (z, y, x), non-cubic
VOXEL = (0.05, 0.0195, 0.013)
ORIGIN = (1.5, -2.0, 0.25)
CLASSES = ("background", "bone", "pores")
DTYPES = ["uint8", "uint16", "int16", "float32"]

# id -> (file name, write options, keeps name and class names)
CASES = {
    "tiff": ("v.tif", {}, True),
    "tiff-zlib": ("v.tif", {"compression": "zlib"}, True),
    "bigtiff": ("v.ome.tif", {"bigtiff": True}, True),
    "tiff-folder": ("v", {}, True),
    "hdf5": ("v.h5", {}, True),
    "hdf5-lzf": ("v.hdf5", {"compression": "lzf"}, True),
    "zarr": ("v.zarr", {}, True),
    "zarr-v2": ("v.zarr", {"zarr_format": 2}, True),
    "ome-zarr": ("v.ome.zarr", {}, True),
    "npy": ("v.npy", {}, True),
    "mhd": ("v.mhd", {}, False),
    "mha": ("v.mha", {"byte_order": "big"}, False),
    "raw": ("v.raw", {}, False),
}


def make_volume(dtype, rng, shape=SHAPE) -> Volume:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        array = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    return Volume(array, voxel_size=VOXEL, origin=ORIGIN, name="scan7", class_names=CLASSES)


def read_options(case: str, volume: Volume) -> dict:
    """Raw data carry no header: the reader is told what the writer wrote."""
    if case != "raw":
        return {}
    return dict(shape=volume.shape, dtype=volume.dtype.name, voxel_size=volume.voxel_size, origin=volume.origin,
                name=volume.name)


def check_same(loaded: Volume, volume: Volume, keeps_names: bool) -> None:
    assert loaded.array.dtype == volume.array.dtype
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.voxel_size, volume.voxel_size, rtol=1e-9)
    np.testing.assert_allclose(loaded.origin, volume.origin, rtol=1e-9, atol=1e-12)
    assert loaded.unit == "mm"
    if keeps_names:
        assert loaded.name == volume.name
        assert loaded.class_names == volume.class_names


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_round_trip_keeps_voxels_and_geometry(case, dtype, tmp_path, rng):
    name, options, keeps_names = CASES[case]
    volume = make_volume(dtype, rng)
    path = save_volume(volume, tmp_path / name, **options)
    assert path == tmp_path / name and path.exists()
    assert not list(tmp_path.glob("*.partial*"))
    check_same(load_volume(path, **read_options(case, volume)), volume, keeps_names)


@pytest.mark.parametrize("case", CASES)
def test_slab_region_and_plane_reads_equal_numpy_slicing(case, tmp_path, rng):
    name, options, _ = CASES[case]
    volume = make_volume("uint16", rng)
    a = volume.array
    path = save_volume(volume, tmp_path / name, **options)
    with open_volume(path, **read_options(case, volume)) as source:
        assert source.shape == SHAPE
        for z0, z1 in [(0, 1), (2, 5), (6, 7), (0, 7)]:
            np.testing.assert_array_equal(source.read_slab(z0, z1), a[z0:z1])
        region = (slice(1, 6), slice(3, 9), slice(4, 20))
        np.testing.assert_array_equal(source.read_region(*region), a[region])
        np.testing.assert_array_equal(source.read_plane(0, 3), a[3])
        np.testing.assert_array_equal(source.read_plane(1, 12), a[:, 12])
        np.testing.assert_array_equal(source.read_plane(2, 28), a[:, :, 28])
        with pytest.raises(IndexError):
            source.read_slab(5, 8)
        payload = pickle.dumps(source)  # for worker processes: reopens the file, carries no voxels
        assert len(payload) < a.nbytes / 4
        with pickle.loads(payload) as clone:
            assert clone.info == source.info
            np.testing.assert_array_equal(clone.read_slab(2, 4), a[2:4])


@pytest.mark.parametrize("case", CASES)
def test_writer_takes_slabs_in_any_order(case, tmp_path, rng):
    name, options, keeps_names = CASES[case]
    volume = make_volume("int16", rng)
    with create_writer(tmp_path / name, volume.info, **options) as writer:
        for z0, z1 in [(5, 7), (0, 2), (2, 5)]:
            writer.write_slab(z0, volume.array[z0:z1])
    check_same(load_volume(tmp_path / name, **read_options(case, volume)), volume, keeps_names)


@pytest.mark.parametrize("case", CASES)
def test_aborted_write_leaves_no_file(case, tmp_path, rng):
    name, options, _ = CASES[case]
    volume = make_volume("uint8", rng)
    with pytest.raises(RuntimeError):
        with create_writer(tmp_path / name, volume.info, **options) as writer:
            writer.write_slab(0, volume.array[:3])
            assert list(tmp_path.iterdir()) and not (tmp_path / name).exists()
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", CASES)
def test_existing_output_is_refused_unless_overwrite(case, tmp_path, rng):
    name, options, keeps_names = CASES[case]
    first, second = make_volume("uint8", rng), make_volume("uint8", rng)
    save_volume(first, tmp_path / name, **options)
    with pytest.raises(OutputExistsError):
        save_volume(second, tmp_path / name, **options)
    check_same(load_volume(tmp_path / name, **read_options(case, first)), first, keeps_names)
    save_volume(second, tmp_path / name, overwrite=True, **options)
    check_same(load_volume(tmp_path / name, **read_options(case, second)), second, keeps_names)


@pytest.mark.parametrize("name", ["v.h5", "v.zarr", "v.ome.zarr"])
def test_resume_continues_after_completed_slices(name, tmp_path, rng):
    volume = make_volume("uint16", rng)
    a, path = volume.array, tmp_path / name
    with pytest.raises(RuntimeError):
        with create_writer(path, volume.info, resume=True) as writer:
            writer.write_slab(0, a[:3])
            writer.mark_done(3)
            writer.write_slab(3, a[3:4])  # written but not marked: redone after resume
            raise RuntimeError("killed")
    assert writer.temp_path.exists() and not path.exists()
    with create_writer(path, volume.info, resume=True) as writer:
        assert writer.done_slices == 3
        writer.write_slab(3, a[3:])
        writer.mark_done(7)
    check_same(load_volume(path), volume, True)
    assert not writer.temp_path.exists()


def test_without_resume_a_partial_output_is_restarted(tmp_path, rng):
    volume = make_volume("uint8", rng)
    with pytest.raises(RuntimeError):
        with create_writer(tmp_path / "v.h5", volume.info, resume=True) as writer:
            writer.write_slab(0, volume.array[:4])
            writer.mark_done(4)
            raise RuntimeError("killed")
    with create_writer(tmp_path / "v.h5", volume.info) as writer:
        assert writer.done_slices == 0
        writer.write_slab(0, volume.array)


def test_finished_files_carry_no_resume_marker(tmp_path, rng):
    volume = make_volume("uint8", rng)
    with create_writer(tmp_path / "v.h5", volume.info, resume=True) as writer:
        writer.write_slab(0, volume.array)
        writer.mark_done(7)
    with h5py.File(tmp_path / "v.h5") as f:
        assert "done_slices" not in f["data"].attrs


# --- TIFF ------------------------------------------------------------------------------------
def test_natural_sort_orders_numbers_by_value():
    names = ["s10.tif", "s2.tif", "s1.tif", "S3.tif", "s100.tif"]
    assert sorted(names, key=natural_key) == ["s1.tif", "s2.tif", "S3.tif", "s10.tif", "s100.tif"]


def test_folder_reads_slices_in_natural_order(tmp_path):
    for z in [10, 2, 1, 33]:
        tifffile.imwrite(tmp_path / f"s{z}.tif", np.full((5, 6), z, np.uint8))
    (tmp_path / "notes.txt").write_text("not a slice")
    volume = load_volume(tmp_path)
    assert volume.shape == (4, 5, 6)
    assert volume.array[:, 0, 0].tolist() == [1, 2, 10, 33]
    assert volume.name == tmp_path.name


def test_folder_writer_names_slices_by_folder_and_index(tmp_path, rng):
    volume = make_volume("uint8", rng)
    save_volume(volume, tmp_path / "pred")
    names = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert names == [f"pred_{z:05d}.tif" for z in range(7)]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "pred" / "pred_00004.tif"), volume.array[4])


def test_imagej_micron_calibration_is_converted_to_mm(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros(SHAPE, np.uint8), imagej=True, resolution=(1 / 19.5, 1 / 19.5),
                     metadata={"axes": "ZYX", "spacing": 40.0, "unit": "micron"})
    with open_volume(path) as source:
        np.testing.assert_allclose(source.voxel_size, (0.04, 0.0195, 0.0195))
        assert source.info.unit == "mm"
    tifffile.imwrite(path, np.zeros(SHAPE, np.uint8), imagej=True, metadata={"axes": "ZYX", "spacing": -0.5})
    assert load_volume(path).voxel_size == (0.5, 1.0, 1.0)  # ImageJ's top-down stacks: negative spacing


def test_ome_physical_sizes_are_read_with_their_units(tmp_path):
    path = tmp_path / "o.ome.tif"
    tifffile.imwrite(path, np.zeros(SHAPE, np.uint16), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 30.0, "PhysicalSizeY": 20.0, "PhysicalSizeX": 10.0})
    with open_volume(path) as source:  # OME's default unit is µm
        np.testing.assert_allclose(source.voxel_size, (0.03, 0.02, 0.01))


def test_imagej_files_are_written_for_imagej(tmp_path, rng):
    save_volume(make_volume("uint16", rng), tmp_path / "v.tif")
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == pytest.approx(VOXEL[0])
        assert tif.imagej_metadata["unit"] == "mm"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(VOXEL[2])


def test_bigtiff_option_writes_bigtiff(tmp_path, rng):
    save_volume(make_volume("uint8", rng), tmp_path / "v.tif", bigtiff=True)
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert tif.is_bigtiff and tif.is_ome


def page_bytes(shape, dtype) -> int:
    return shape[1] * shape[2] * np.dtype(dtype).itemsize


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_planes_stream_page_by_page(compression, tmp_path, rng):
    shape = (64, 128, 256)
    array = rng.integers(0, 16, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", array, compression=compression, metadata={"axes": "ZYX"})
    with open_volume(tmp_path / "big.tif") as source:
        tracemalloc.start()
        try:
            plane_y = source.read_plane(1, 17)
            plane_x = source.read_plane(2, 5)
            slab = source.read_slab(30, 31)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    np.testing.assert_array_equal(plane_y, array[:, 17])
    np.testing.assert_array_equal(plane_x, array[:, :, 5])
    np.testing.assert_array_equal(slab, array[30:31])
    assert peak < 8 * page_bytes(shape, np.uint16)  # a few pages at a time; the file has 64


# --- HDF5 ------------------------------------------------------------------------------------
def test_hdf5_writes_chunked_compressed_data_with_attributes(tmp_path, rng):
    save_volume(make_volume("uint16", rng), tmp_path / "v.h5")
    with h5py.File(tmp_path / "v.h5") as f:
        ds = f["data"]
        assert ds.chunks == (7, 13, 29) and ds.compression == "gzip"
        np.testing.assert_allclose(ds.attrs["voxel_size"], VOXEL)
        np.testing.assert_allclose(ds.attrs["element_size_um"], np.array(VOXEL) * 1000)
    big = Volume(np.zeros((40, 300, 20), np.uint8))
    save_volume(big, tmp_path / "big.h5", dataset="seg/labels", compression=None)
    with h5py.File(tmp_path / "big.h5") as f:
        assert f["seg/labels"].chunks == (16, 256, 20) and f["seg/labels"].compression is None


def test_hdf5_dataset_is_chosen_by_option_rank_or_name(tmp_path):
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        f["volume"] = np.ones(SHAPE, np.uint8)
        f["mask"] = np.full(SHAPE, 2, np.uint8)
        f["histogram"] = np.zeros(256)
        f["mask"].attrs["element_size_um"] = [30.0, 20.0, 10.0]
    assert load_volume(path).array.max() == 1  # the conventional name wins
    mask = load_volume(path, dataset="mask")
    assert mask.array.max() == 2
    np.testing.assert_allclose(mask.voxel_size, (0.03, 0.02, 0.01))  # ilastik's element_size_um, in µm
    with h5py.File(path, "a") as f:
        del f["volume"]
    assert load_volume(path).array.max() == 2  # the only 3-D dataset
    with h5py.File(path, "a") as f:
        f["other"] = np.zeros(SHAPE, np.uint8)
    with pytest.raises(FormatError, match="mask.*other|other.*mask"):
        load_volume(path)
    with pytest.raises(FormatError, match="histogram"):
        load_volume(path, dataset="missing")


# --- Zarr ------------------------------------------------------------------------------------
def test_zarr_without_the_package_names_the_install_command(tmp_path, rng, monkeypatch):
    save_volume(make_volume("uint8", rng), tmp_path / "v.zarr")
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(FormatError, match=r'pip install "bone-avizo\[zarr\]"'):
        load_volume(tmp_path / "v.zarr")


def test_zarr_reads_a_group_array_and_ome_ngff_scale(tmp_path):
    import zarr
    group = zarr.open_group(str(tmp_path / "g.ome.zarr"), mode="w")
    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "c", "type": "channel"}] + [
            {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 4, 2, 1]}]}]}]
    level = group.create_array("s0", shape=(1,) + SHAPE, dtype="uint8", chunks=(1, 4, 8, 8))
    level[:] = np.arange(np.prod(SHAPE), dtype=np.uint8).reshape((1,) + SHAPE)
    with open_volume(tmp_path / "g.ome.zarr") as source:
        assert source.shape == SHAPE
        np.testing.assert_allclose(source.voxel_size, (0.004, 0.002, 0.001))
        np.testing.assert_array_equal(source.read_plane(1, 2), level[0, :, 2])


# --- .npy ------------------------------------------------------------------------------------
def test_npy_is_memory_mapped_and_keeps_metadata_in_a_sidecar(tmp_path, rng):
    volume = make_volume("float32", rng)
    path = save_volume(volume, tmp_path / "v.npy")
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["voxel_size"] == list(VOXEL) and meta["class_names"] == list(CLASSES)
    np.testing.assert_array_equal(np.load(path), volume.array)
    with open_volume(path) as source:
        assert isinstance(source._array, np.memmap)
    np.save(tmp_path / "plain.npy", volume.array)
    assert load_volume(tmp_path / "plain.npy").voxel_size == (1.0, 1.0, 1.0)


# --- raw and MetaImage -----------------------------------------------------------------------
def test_mhd_header_lists_sizes_in_x_y_z_order(tmp_path, rng):
    save_volume(make_volume("uint16", rng), tmp_path / "v.mhd")
    header = dict(line.split(" = ") for line in (tmp_path / "v.mhd").read_text().splitlines())
    assert header["DimSize"] == "29 13 7"
    assert header["ElementSpacing"] == "0.013 0.0195 0.05"
    assert header["Offset"] == "0.25 -2 1.5"
    assert header["ElementType"] == "MET_USHORT" and header["ElementDataFile"] == "v.raw"
    assert (tmp_path / "v.raw").stat().st_size == 7 * 13 * 29 * 2


def test_hand_written_mhd_with_header_bytes_and_big_endian_data(tmp_path):
    array = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    (tmp_path / "d.dat").write_bytes(b"H" * 100 + array.astype(">i2").tobytes())
    (tmp_path / "m.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 29 13 7\nElementType = MET_SHORT\n"
                                    "ElementSpacing = 0.1 0.2 0.3\nPosition = 1 2 3\nHeaderSize = 100\n"
                                    "BinaryDataByteOrderMSB = True\nElementDataFile = d.dat\n")
    volume = load_volume(tmp_path / "m.mhd")
    np.testing.assert_array_equal(volume.array, array)
    assert volume.voxel_size == (0.3, 0.2, 0.1) and volume.origin == (3.0, 2.0, 1.0)


def test_compressed_mha_is_read(tmp_path):
    array = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    header = b"NDims = 3\nDimSize = 29 13 7\nElementType = MET_FLOAT\nCompressedData = True\nElementDataFile = LOCAL\n"
    (tmp_path / "c.mha").write_bytes(header + zlib.compress(array.tobytes()))
    np.testing.assert_array_equal(load_volume(tmp_path / "c.mha").array, array)


def test_raw_with_explicit_layout_and_with_an_mhd_beside_it(tmp_path, rng):
    volume = make_volume("uint16", rng)
    (tmp_path / "r.raw").write_bytes(b"\0" * 64 + volume.array.astype(">u2").tobytes())
    loaded = load_volume(tmp_path / "r.raw", shape=SHAPE, dtype="uint16", byte_order="big", header_bytes=64)
    np.testing.assert_array_equal(loaded.array, volume.array)
    tail = load_volume(tmp_path / "r.raw", shape="7,13,29", dtype="uint16", byte_order="big", header_bytes=-1)
    np.testing.assert_array_equal(tail.array, volume.array)
    save_volume(volume, tmp_path / "m.mhd")
    beside = load_volume(tmp_path / "m.raw")  # no layout given: the header beside it is used
    check_same(beside.with_array(beside.array, name=volume.name, class_names=CLASSES), volume, True)


def test_units_are_converted_to_mm():
    assert unit_to_mm("µm") == unit_to_mm("um") == unit_to_mm("micron") == unit_to_mm("\\u00B5m") == 1e-3
    assert unit_to_mm("mm") == 1.0 and unit_to_mm("cm") == 10.0 and unit_to_mm("pixel") is None


def test_calibration_is_known_per_file(tmp_path):
    """A file without a recorded voxel size is uncalibrated (its 1 x 1 x 1 is assumed, not measured)."""
    import tifffile

    from bone_avizo.io import open_volume, save_volume
    from bone_avizo.volume import Volume

    array = np.zeros((4, 6, 7), np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", array, photometric="minisblack", metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "imagej.tif", array, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "calibrated.tif", array, imagej=True, resolution=(50.0, 50.0),
                     metadata={"axes": "ZYX", "spacing": 0.02, "unit": "mm"})
    np.save(tmp_path / "bare.npy", array)
    save_volume(Volume(array), tmp_path / "ours.tif")
    save_volume(Volume(array), tmp_path / "ours.npy")
    save_volume(Volume(array, voxel_size=0.02), tmp_path / "ours_calibrated.npy")
    save_volume(Volume(array), tmp_path / "ours.mhd")
    save_volume(Volume(array), tmp_path / "ours.h5")
    save_volume(Volume(array, voxel_size=0.02), tmp_path / "ours_calibrated.mhd")
    expected = {"plain.tif": False, "imagej.tif": False, "calibrated.tif": True, "bare.npy": False,
                "ours.tif": False, "ours.npy": False, "ours_calibrated.npy": True, "ours.mhd": False,
                "ours.h5": False, "ours_calibrated.mhd": True}
    if importlib.util.find_spec("zarr"):  # an extra on Python >= 3.11
        save_volume(Volume(array), tmp_path / "ours.zarr")
        expected["ours.zarr"] = False
    for name, calibrated in expected.items():
        with open_volume(tmp_path / name) as source:
            assert source.info.calibrated is calibrated, name
            assert source.info.voxel_size == ((0.02,) * 3 if calibrated else (1.0, 1.0, 1.0)), name
