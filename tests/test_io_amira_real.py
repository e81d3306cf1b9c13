"""AmiraMesh files written by Amira itself (../shared/data/amira, skipped where absent), and the
quirks they show reproduced in small hand-built files: values, voxel size and materials."""
from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest

from bone_avizo.io.amira import ASSUMED_UNIT, open_amira, rle_decode, rle_encode
from conftest import SHARED_DATA
from test_io_amira import am_bytes, lattice_lines

AMIRA_DATA = SHARED_DATA / "amira"


def amira_file(name: str):
    path = AMIRA_DATA / name
    if not path.is_file():
        pytest.skip(f"Amira-written file {path} not available")
    return path


def read_nrrd(path) -> tuple[np.ndarray, dict]:
    """A gzip NRRD of unsigned bytes as (z, y, x) and its header fields (enough for the twins here)."""
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in head.decode().splitlines()[1:] if ": " in line)
    sizes = [int(v) for v in fields["sizes"].split()]
    return np.frombuffer(gzip.decompress(body), np.uint8).reshape(sizes[::-1]), fields


def read_all(path):
    source = open_amira(path)
    return source, source.read_slab(0, source.info.shape[0])


# --------------------------------------------------------------------------------------------
# the real files
# --------------------------------------------------------------------------------------------
def test_amira_rle_label_field_with_trailing_byte_matches_its_twins():
    source, labels = read_all(amira_file("LHMask.Labels.rle.am"))
    assert source.section.encoded_size == 6113 and source.encoding == "HxByteRLE"
    assert labels.shape == (50, 50, 50) and labels.dtype == np.uint8
    assert int((labels == 1).sum()) == 28669 and set(np.unique(labels)) == {0, 1}
    assert source.info.class_names == ("Exterior", "Inside")
    np.testing.assert_allclose(source.info.voxel_size, (1.4, 1.4, 1.4))
    np.testing.assert_allclose(source.info.origin, (0.7, 60.7, 95.7))
    np.testing.assert_array_equal(labels, read_all(amira_file("LHMask.zip.am"))[1])
    np.testing.assert_array_equal(labels, read_nrrd(amira_file("LHMask.nrrd"))[0])


def test_amira_zip_twin_is_an_image_with_the_same_geometry():
    source, _ = read_all(amira_file("LHMask.zip.am"))
    assert source.encoding == "HxZip" and source.info.class_names is None
    np.testing.assert_allclose(source.info.voxel_size, (1.4, 1.4, 1.4))


def test_amira_test9_three_materials_all_background():
    source, labels = read_all(amira_file("test9.am"))
    assert labels.shape == (284, 284, 284) and not labels.any()
    assert source.info.class_names == ("Exterior", "Inside", "molecule")


def test_amira_2_0_big_endian_header_without_units(caplog):
    with caplog.at_level(logging.INFO, logger="bone_avizo.io.amira"):
        source, values = read_all(amira_file("AL-a_M.am"))
    assert source.header.version == "2.0" and not source.header.little_endian
    assert values.shape == (87, 154, 154) and values.dtype == np.uint8
    np.testing.assert_allclose(source.info.voxel_size, (2.1444, 2.0597, 2.0597), atol=5e-5)
    assert source.info.unit == ASSUMED_UNIT
    assert f"no Units field: its voxel size and origin are taken as {ASSUMED_UNIT}" in caplog.text


def test_amira_single_slice_takes_its_thickness_from_the_box():
    source, labels = read_all(amira_file("VerySmallLabelField.am"))
    twin, fields = read_nrrd(amira_file("VerySmallLabelField.nrrd"))
    np.testing.assert_array_equal(labels, twin)
    assert fields["space directions"] == "(0.5,0,0) (0,0.5,0) (0,0,2)"
    np.testing.assert_allclose(source.info.voxel_size, (2.0, 0.5, 0.5))
    assert source.info.class_names == ("Exterior",)


# --------------------------------------------------------------------------------------------
# the same quirks in files built here
# --------------------------------------------------------------------------------------------
def test_rle_stream_with_amiras_terminating_zero_byte(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1:3, 1:4] = 1
    stream = rle_encode(labels) + b"\x00"  # what Amira writes, counted in the declared length
    assert rle_decode(stream, labels.size).tobytes() == labels.tobytes()
    lines = lattice_lines(labels.shape, f"Lattice {{ byte Labels }} @1(HxByteRLE,{len(stream)})",
                          extra=("    Materials {", "        Exterior {", "        }", "        Bone {",
                                 "        }", "    }"))
    path = tmp_path / "amira_rle.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1", lines, stream))
    source, read = read_all(path)
    np.testing.assert_array_equal(read, labels)
    assert source.info.class_names == ("Exterior", "Bone")


def test_a_zero_value_byte_at_the_end_is_data_not_a_terminator():
    assert rle_decode(bytes([3, 0]), 3).tolist() == [0, 0, 0]
    assert rle_decode(bytes([0x82, 5, 0]), 2).tolist() == [5, 0]


def test_ascii_1_0_file_with_top_level_materials(tmp_path):
    text = "\n".join([
        "# AmiraMesh ASCII 1.0", "", "define Lattice 3 2 1", "",
        "Parameters {", "    BoundingBox 0 1 0 0.5 0 0.5,", '    CoordType "uniform"', "}", "",
        "Materials {", "    Exterior {", "        Id 0", "    }", "    Bone {", "        Id 4,",
        "        Color 1 0 0", "    }", "}", "",
        "Lattice { byte Labels } = @1", "", "@1 # six labels", "0 1 1", "0 0 1", ""])
    path = tmp_path / "old.am"
    path.write_text(text)
    source, labels = read_all(path)
    np.testing.assert_array_equal(labels, [[[0, 1, 1], [0, 0, 1]]])
    assert source.info.class_names == ("Exterior", "Bone")
    np.testing.assert_allclose(source.info.voxel_size, (0.5, 0.5, 0.5))
