"""AmiraMesh .am reading and writing: round trips, hand-built files, exact headers, HxByteRLE, errors."""
from __future__ import annotations

import pickle
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, OutputWriteError,
                               UnsupportedDtypeError)
from bone_avizo.io import amira, get_format, load_volume, open_volume, save_volume
from bone_avizo.io.amira import (AmiraWriter, format_header, open_amira, read_header, rle_decode,
                                 rle_encode)
from bone_avizo.volume import Volume, VolumeInfo

SHAPE = (7, 13, 29)  # (z, y, x), non-cubic
VOXEL = (0.04, 0.025, 0.0195)
ORIGIN = (-1.5, 0.25, 3.0)


def save_am(volume, path, **options):
    """Save through the public io API; the format is named so other formats need not be installed."""
    return save_volume(volume, path, format="am", **options)


def load_am(path):
    return load_volume(path, format="am")


def make_array(dtype, rng, shape=SHAPE):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def make_labels(rng, shape=SHAPE, classes=3):
    """Blocky labels: long runs along x with some noise, as segmentations look."""
    labels = np.repeat(rng.integers(0, classes, shape[:2] + (shape[2] // 7 + 1,)), 7, axis=2)[..., :shape[2]]
    noise = rng.random(shape) < 0.05
    labels[noise] = rng.integers(0, classes, int(noise.sum()))
    return labels.astype(np.uint8)


def am_bytes(first_line, body_lines, data, *, tail=b"\n"):
    """A hand-built AmiraMesh file: first line, header lines, then '# Data section follows', @1, data."""
    text = first_line + "\n\n" + "\n".join(body_lines) + "\n\n# Data section follows\n@1\n"
    return text.encode("utf-8") + data + tail


def lattice_lines(shape, type_line, box="0 1 0 1 0 1", extra=()):
    nz, ny, nx = shape
    return [f"define Lattice {nx} {ny} {nz}", "", "Parameters {", *extra,
            f'    Content "{nx}x{ny}x{nz} byte, uniform coordinates",', f"    BoundingBox {box},",
            '    CoordType "uniform"', "}", "", type_line]


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["binary", "ascii", "zip"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
def test_round_trip_keeps_data_and_geometry(tmp_path, rng, mode, dtype):
    array = make_array(dtype, rng)
    volume = Volume(array, voxel_size=VOXEL, origin=ORIGIN, name="scan", unit="mm")
    options = {"ascii": mode == "ascii", "compress": "zip" if mode == "zip" else None}
    path = save_am(volume, tmp_path / "scan.am", **options)
    with open_volume(path, format="am") as source:
        assert source.dtype == np.dtype(dtype) and source.shape == SHAPE
        assert source.encoding == {"binary": "raw", "ascii": "ascii", "zip": "HxZip"}[mode]
        np.testing.assert_array_equal(source.read_all(), array)
        np.testing.assert_allclose(source.info.voxel_size, VOXEL, rtol=1e-12)
        np.testing.assert_allclose(source.info.origin, ORIGIN, rtol=1e-12)
        assert source.info.class_names is None and source.info.unit == "mm" and source.name == "scan"


@pytest.mark.parametrize("compress", ["rle", None, "zip"])
def test_label_round_trip_keeps_class_names(tmp_path, rng, compress):
    labels = make_labels(rng)
    volume = Volume(labels, voxel_size=VOXEL, origin=ORIGIN, class_names=("Exterior", "Bone", "Pores"))
    path = save_am(volume, tmp_path / "labels.am", compress=compress)
    loaded = load_am(path)
    np.testing.assert_array_equal(loaded.array, labels)
    assert loaded.dtype == np.uint8 and loaded.class_names == ("Exterior", "Bone", "Pores")
    np.testing.assert_allclose(loaded.voxel_size, VOXEL, rtol=1e-12)


def test_rle_labels_are_smaller_than_raw(tmp_path, rng):
    labels = make_labels(rng)
    volume = Volume(labels, class_names=("Exterior", "Bone", "Pores"))
    path = save_am(volume, tmp_path / "labels.am", compress="rle")
    section = read_header(path).sections[0]
    assert section.encoding == "HxByteRLE" and section.encoded_size < labels.size


def test_uint16_labels_round_trip_with_rle(tmp_path, rng):
    labels = rng.integers(0, 300, SHAPE).astype(np.uint16)
    names = tuple(f"c{i}" for i in range(300))
    path = save_am(Volume(labels, class_names=names), tmp_path / "labels16.am", compress="rle")
    loaded = load_am(path)
    np.testing.assert_array_equal(loaded.array, labels)
    assert loaded.dtype == np.uint16 and loaded.class_names[1:4] == ("c1", "c2", "c3")


def test_bool_volume_is_written_as_bytes(tmp_path, rng):
    mask = rng.random(SHAPE) > 0.5
    loaded = load_am(save_am(Volume(mask), tmp_path / "mask.am", compress="rle"))
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, mask)


def test_source_pickles_without_its_data(tmp_path, rng):
    array = make_array("float32", rng)
    source = open_amira(save_am(Volume(array), tmp_path / "p.am"))
    payload = pickle.dumps(source)
    assert len(payload) < array.nbytes
    np.testing.assert_array_equal(pickle.loads(payload).read_slab(2, 4), array[2:4])


def test_background_class_is_written_as_exterior(tmp_path, rng):
    volume = Volume(make_labels(rng, classes=2), class_names=("background", "bone"))
    loaded = load_am(save_am(volume, tmp_path / "l.am"))
    assert loaded.class_names == ("Exterior", "bone")


def test_slab_and_region_reads_match_the_whole_array(tmp_path, rng):
    array = make_array("uint16", rng)
    path = save_am(Volume(array), tmp_path / "v.am")
    with open_amira(path) as source:
        assert isinstance(source._array, np.memmap)
        for z0, z1 in [(0, 1), (2, 5), (6, 7), (0, 7), (3, 3)]:
            slab = source.read_slab(z0, z1)
            assert slab.flags.c_contiguous and not isinstance(slab, np.memmap)
            np.testing.assert_array_equal(slab, array[z0:z1])
        np.testing.assert_array_equal(source.read_region(slice(1, 4), slice(2, 9), slice(5, 20)),
                                      array[1:4, 2:9, 5:20])
        np.testing.assert_array_equal(source.read_plane(2, 11), array[:, :, 11])
        with pytest.raises(IndexError):
            source.read_slab(5, 8)


def test_writers_accept_slabs_in_any_order(tmp_path, rng):
    labels = make_labels(rng)
    info = VolumeInfo(SHAPE, np.uint8, VOXEL, class_names=("Exterior", "Bone", "Pores"))
    for compress in ("none", "rle"):
        path = tmp_path / f"{compress}.am"
        with AmiraWriter(path, info, compress=compress) as writer:
            for z0 in (4, 0, 6, 2):
                writer.write_slab(z0, labels[z0:z0 + 2])
        np.testing.assert_array_equal(load_am(path).array, labels)
        assert not (tmp_path / f"{compress}.am.partial.body").exists()


def test_compressed_writer_refuses_a_slice_twice(tmp_path, rng):
    info = VolumeInfo(SHAPE, np.uint8, class_names=("Exterior", "Bone"))
    writer = AmiraWriter(tmp_path / "x.am", info, compress="rle")
    writer.write_slab(0, np.zeros((3, 13, 29), np.uint8))
    with pytest.raises(OutputWriteError, match="already encoded"):
        writer.write_slab(1, np.zeros((1, 13, 29), np.uint8))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_unwritten_slices_are_zeros(tmp_path):
    info = VolumeInfo(SHAPE, np.uint8)
    for compress in ("none", "zip"):
        with AmiraWriter(tmp_path / f"{compress}.am", info, compress=compress) as writer:
            writer.write_slab(2, np.full((1, 13, 29), 9, np.uint8))
        array = load_am(tmp_path / f"{compress}.am").array
        assert array[2].min() == 9 and array.sum() == 9 * 13 * 29


def test_registry_entry():
    fmt = get_format("am")
    assert fmt.extensions == (".am",) and fmt.writer is AmiraWriter and fmt.open is open_amira


# --------------------------------------------------------------------------------------------
# exact header bytes
# --------------------------------------------------------------------------------------------
def test_header_bytes_of_a_label_field_are_exact():
    info = VolumeInfo((2, 3, 4), np.uint8, (0.5, 0.25, 0.125), (1.0, 2.0, 3.0),
                      class_names=("Exterior", "Bone"))
    expected = (b"# AmiraMesh BINARY-LITTLE-ENDIAN 2.1\n"
                b"\n"
                b"define Lattice 4 3 2\n"
                b"\n"
                b"Parameters {\n"
                b"    Units {\n"
                b"        Coordinates \"mm\"\n"
                b"    }\n"
                b"    Materials {\n"
                b"        Exterior {\n"
                b"            Id 0\n"
                b"        }\n"
                b"        Bone {\n"
                b"            Id 1,\n"
                b"            Color 0.9 0.8 0.2\n"
                b"        }\n"
                b"    }\n"
                b"    Content \"4x3x2 byte, uniform coordinates\",\n"
                b"    BoundingBox 3 3.375 2 2.5 1 1.5,\n"
                b"    CoordType \"uniform\"\n"
                b"}\n"
                b"\n"
                b"Lattice { byte Labels } @1(HxByteRLE,42)\n"
                b"\n"
                b"# Data section follows\n"
                b"@1\n")
    assert format_header(info, compress="rle", encoded_size=42) == expected


def test_written_file_bytes_are_exact(tmp_path):
    array = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    path = save_am(Volume(array, voxel_size=(2.0, 1.0, 1.0), unit="um"), tmp_path / "s.am")
    expected = (b"# AmiraMesh BINARY-LITTLE-ENDIAN 2.1\n\ndefine Lattice 4 3 2\n\nParameters {\n"
                b"    Units {\n        Coordinates \"um\"\n    }\n"
                b"    Content \"4x3x2 ushort, uniform coordinates\",\n    BoundingBox 0 3 0 2 0 2,\n"
                b"    CoordType \"uniform\"\n}\n\nLattice { ushort Data } @1\n\n# Data section follows\n@1\n")
    assert path.read_bytes() == expected + array.astype("<u2").tobytes() + b"\n"


def test_ascii_file_text_is_exact(tmp_path):
    array = np.array([[[1, 2], [3, 4]]], np.int16)
    text = save_am(Volume(array), tmp_path / "a.am", ascii=True).read_text()
    assert text.startswith("# AmiraMesh 3D ASCII 2.1\n\ndefine Lattice 2 2 1\n")
    assert text.endswith("Lattice { short Data } @1\n\n# Data section follows\n@1\n1\n2\n3\n4\n")


# --------------------------------------------------------------------------------------------
# hand-built files: big endian, Avizo first line, 3.0 headers, materials, several sections
# --------------------------------------------------------------------------------------------
def test_big_endian_file_is_read(tmp_path, rng):
    array = make_array("int16", rng)
    lines = lattice_lines(SHAPE, "Lattice { short Data } @1", box="0 2.8 0 1.2 0 0.6")
    path = tmp_path / "be.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY 2.1", lines, array.astype(">i2").tobytes()))
    with open_amira(path) as source:
        assert source.dtype == np.dtype(np.int16) and source.dtype.isnative
        np.testing.assert_array_equal(source.read_slab(1, 4), array[1:4])
        np.testing.assert_allclose(source.voxel_size, (0.1, 0.1, 0.1))


def test_avizo_first_line_materials_and_colormap(tmp_path, rng):
    labels = make_labels(rng)
    extra = ['    Units {', '        Coordinates "µm"', '    }', '    Colormap "labels.am",', '    Materials {',
             '        Exterior {', '            Color 0 0 0', '        }',
             '        Cortical { Id 1, Color 1 0.426 0, Lock "true" }',
             '        Trabecular {', '            Id 2,', '            Color 0.2 0.4 1', '        }', '    }']
    lines = lattice_lines(SHAPE, "Lattice { byte Labels } @1", box="10 38 20 32 30 36", extra=extra)
    path = tmp_path / "avizo.am"
    path.write_bytes(am_bytes("# Avizo 3D BINARY-LITTLE-ENDIAN 2.1", lines, labels.tobytes()))
    source = open_amira(path)
    assert source.info.class_names == ("Exterior", "Cortical", "Trabecular")
    assert source.info.unit == "µm" and source.info.origin == (30.0, 20.0, 10.0)
    assert source.header.parameters["Colormap"] == ["labels.am"]
    np.testing.assert_array_equal(source.read_all(), labels)


def test_version_3_header_names_classes_by_position_not_id(tmp_path):
    """Avizo keeps material Ids when materials are deleted: Ids 0, 9, 10 hold voxel values 0, 1, 2."""
    labels = np.array([0, 1, 2, 1] * 16, np.uint8).reshape(4, 4, 4)
    payload = rle_encode(labels)
    extra = ['    Materials {', '        Exterior {', '            Color 0 0 0,', '            &Color "AAAA==",',
             '            Id "0"', '        }', '        Left_Tree {', '            Id "9"', '        }',
             '        Right_Tree {', '            Id "10"', '        }', '    }']
    lines = lattice_lines((4, 4, 4), f"Lattice {{ byte Labels }} @1(HxByteRLE,{len(payload)})",
                          box="0 3 0 3 0 3", extra=extra)
    path = tmp_path / "regions.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 3.0", lines, payload))
    loaded = load_am(path)
    assert loaded.class_names == ("Exterior", "Left_Tree", "Right_Tree")
    np.testing.assert_array_equal(loaded.array, labels)


def test_labels_without_materials_are_named_by_value(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[3, 4, 5] = 3
    path = tmp_path / "plain_labels.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1",
                              lattice_lines(SHAPE, "Lattice { byte Labels } @1"), labels.tobytes()))
    assert open_amira(path).info.class_names == ("Material0", "Material1", "Material2", "Material3")


def test_second_data_section_is_found_by_name(tmp_path, rng):
    data = make_array("float32", rng)
    labels = make_labels(rng)
    payload = rle_encode(labels)
    lines = lattice_lines(SHAPE, "Lattice { float Data } @1") + [
        f"Lattice {{ byte Labels }} @2(HxByteRLE,{len(payload)})"]
    raw = am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1", lines, data.tobytes()) + b"@2\n" + payload + b"\n"
    path = tmp_path / "two.am"
    path.write_bytes(raw)
    np.testing.assert_array_equal(open_amira(path).read_all(), data)
    np.testing.assert_array_equal(open_amira(path, field="Labels").read_all(), labels)
    with pytest.raises(FormatError, match="Data, Labels"):
        open_amira(path, field="Mask")


def test_single_slice_takes_voxel_size_from_other_axes(tmp_path):
    array = np.zeros((1, 5, 9), np.uint8)
    lines = lattice_lines(array.shape, "Lattice { byte Data } @1 ", box="0 0.8 0 0.4 2 2")
    path = tmp_path / "slice.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1", lines, array.tobytes()))
    np.testing.assert_allclose(open_amira(path).voxel_size, (0.1, 0.1, 0.1))


def test_ascii_file_with_several_values_per_line(tmp_path):
    lines = lattice_lines((2, 2, 3), "Lattice { float Data } @1", box="0 2 0 1 0 1")
    path = tmp_path / "a.am"
    path.write_bytes(am_bytes("# AmiraMesh 3D ASCII 2.0", lines, b"1 2 3\n4 5 6.5\n\t7 8 9 10 11 -12e-1"))
    expected = np.array([1, 2, 3, 4, 5, 6.5, 7, 8, 9, 10, 11, -1.2], np.float32).reshape(2, 2, 3)
    np.testing.assert_array_equal(load_am(path).array, expected)


def test_hxzip_file_built_by_hand(tmp_path, rng):
    array = make_array("uint16", rng)
    payload = zlib.compress(array.astype("<u2").tobytes())
    lines = lattice_lines(SHAPE, f"Lattice {{ ushort Data }} = @1(HxZip,{len(payload)})")
    path = tmp_path / "zip.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1", lines, payload))
    np.testing.assert_array_equal(load_am(path).array, array)


# --------------------------------------------------------------------------------------------
# HxByteRLE
# --------------------------------------------------------------------------------------------
def reference_decode(stream: bytes) -> bytes:
    """Straightforward reading of the published rule, one token at a time."""
    out, pos = bytearray(), 0
    while pos < len(stream):
        c = stream[pos]
        if c & 0x80:
            out += stream[pos + 1:pos + 1 + (c & 0x7F)]
            pos += 1 + (c & 0x7F)
        else:
            out += bytes([stream[pos + 1]]) * c
            pos += 2
    return bytes(out)


segments = st.lists(st.one_of(
    st.tuples(st.integers(0, 255), st.integers(1, 400)).map(lambda t: bytes([t[0]]) * t[1]),
    st.binary(min_size=1, max_size=300)), max_size=12).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(segments)
def test_rle_encode_decode_round_trip(data):
    encoded = rle_encode(data)
    assert rle_decode(encoded, len(data)).tobytes() == data
    assert reference_decode(encoded) == data


@settings(max_examples=100, deadline=None)
@given(segments)
def test_rle_encoder_writes_no_empty_tokens(data):
    encoded = rle_encode(data)
    pos = 0
    while pos < len(encoded):
        c = encoded[pos]
        assert c & 0x7F, "a control byte with count 0"
        pos += 1 + (c & 0x7F) if c & 0x80 else 2


tokens = st.lists(st.one_of(
    st.tuples(st.integers(0, 127), st.integers(0, 255)).map(bytes),
    st.binary(max_size=127).map(lambda b: bytes([0x80 | len(b)]) + b)), max_size=20).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(tokens)
def test_rle_decode_matches_reference_on_any_stream(stream):
    expected = reference_decode(stream)
    assert rle_decode(stream, len(expected)).tobytes() == expected


def test_rle_encodes_large_inputs_in_chunks(monkeypatch, rng):
    monkeypatch.setattr(amira, "_RLE_CHUNK", 100)
    data = make_labels(rng).tobytes()
    assert rle_decode(rle_encode(data), len(data)).tobytes() == data


def test_rle_known_stream():
    assert rle_decode(bytes([0x83, 1, 2, 3, 4, 7]), 7).tolist() == [1, 2, 3, 7, 7, 7, 7]
    assert rle_encode(bytes([5] * 300)) == bytes([127, 5, 127, 5, 46, 5])
    assert rle_encode(bytes(range(130))) == bytes([0xFF]) + bytes(range(127)) + bytes([0x83, 127, 128, 129])


def test_rle_size_mismatch_and_truncation_are_errors():
    with pytest.raises(CorruptFileError, match="expands to 7 bytes, the lattice needs 8"):
        rle_decode(bytes([0x83, 1, 2, 3, 4, 7]), 8)
    with pytest.raises(CorruptFileError, match="ends inside a token"):
        rle_decode(bytes([0x85, 1, 2]), 5)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_not_an_amiramesh_file(tmp_path):
    path = tmp_path / "fake.am"
    path.write_bytes(b"II*\x00" + bytes(100))
    with pytest.raises(FormatError, match="not an AmiraMesh file"):
        open_amira(path)


def test_missing_define_lattice(tmp_path):
    path = tmp_path / "surf.am"
    path.write_bytes(am_bytes("# AmiraMesh 3D ASCII 2.1", ["define Markers 2", "", "Parameters {",
                                                          '    ContentType "LandmarkSet"', "}", "",
                                                          "Markers { float[3] Coordinates } @1"], b"1 2 3 4 5 6"))
    with pytest.raises(FormatError, match="no 'define Lattice X Y Z'"):
        open_amira(path)


def test_non_uniform_coordinates(tmp_path):
    lines = [line.replace('"uniform"', '"rectilinear"')
             for line in lattice_lines(SHAPE, "Lattice { byte Data } @1")]
    path = tmp_path / "rect.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1", lines, bytes(int(np.prod(SHAPE)))))
    with pytest.raises(FormatError, match="only uniform lattices are supported"):
        open_amira(path)


def test_truncated_raw_data(tmp_path):
    path = tmp_path / "short.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1",
                              lattice_lines(SHAPE, "Lattice { ushort Data } @1"), bytes(1000), tail=b""))
    expected = 2 * 7 * 13 * 29
    with pytest.raises(CorruptFileError, match=f"needs {expected} bytes after the header, the file has 1000"):
        open_amira(path)


def test_truncated_compressed_data(tmp_path):
    path = tmp_path / "short_rle.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1",
                              lattice_lines(SHAPE, "Lattice { byte Labels } @1(HxByteRLE,5000)"),
                              bytes([0x7F, 0]) * 10, tail=b""))
    with pytest.raises(CorruptFileError, match="needs 5000 bytes after the header, the file has 20"):
        open_amira(path)


def test_rle_that_does_not_fill_the_lattice(tmp_path):
    payload = bytes([0x7F, 1]) * 3
    path = tmp_path / "bad_rle.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1",
                              lattice_lines(SHAPE, f"Lattice {{ byte Labels }} @1(HxByteRLE,{len(payload)})"),
                              payload))
    with pytest.raises(CorruptFileError, match="expands to 381 bytes, the lattice needs 2639"):
        open_amira(path)


def test_multi_component_data(tmp_path):
    path = tmp_path / "vec.am"
    path.write_bytes(am_bytes("# AmiraMesh BINARY-LITTLE-ENDIAN 2.1",
                              lattice_lines(SHAPE, "Lattice { float[3] Data } @1"), bytes(12 * 7 * 13 * 29)))
    with pytest.raises(UnsupportedDtypeError, match=r"float\[3\]"):
        open_amira(path)


def test_unclosed_parameters_block(tmp_path):
    path = tmp_path / "open.am"
    path.write_bytes(b"# AmiraMesh BINARY-LITTLE-ENDIAN 2.1\n\ndefine Lattice 2 2 2\nParameters {\n"
                     b"    Materials {\n        Exterior {\n")
    with pytest.raises(CorruptFileError, match="unbalanced braces"):
        open_amira(path)


@pytest.mark.parametrize("dtype, advice", [("uint32", "uint16"), ("uint64", "uint16"), ("int64", "int32")])
def test_unsupported_dtypes_are_refused_before_writing(tmp_path, dtype, advice):
    info = VolumeInfo(SHAPE, dtype)
    with pytest.raises(UnsupportedDtypeError, match=f"cast the volume to {advice}"):
        AmiraWriter(tmp_path / "x.am", info)
    assert list(tmp_path.iterdir()) == []


def test_bad_writer_options(tmp_path):
    with pytest.raises(ConfigError, match="cannot be compressed"):
        AmiraWriter(tmp_path / "x.am", VolumeInfo(SHAPE, np.uint8), ascii=True, compress="rle")
    with pytest.raises(ConfigError, match="label fields"):
        AmiraWriter(tmp_path / "x.am", VolumeInfo(SHAPE, np.float32), compress="rle")
    with pytest.raises(ConfigError, match="none, rle, zip"):
        AmiraWriter(tmp_path / "x.am", VolumeInfo(SHAPE, np.uint8), compress="lzw")


# --------------------------------------------------------------------------------------------
# a real scan
# --------------------------------------------------------------------------------------------
def test_real_scan_and_its_threshold_labels_round_trip(tmp_path):
    from conftest import real_scan

    tifffile = pytest.importorskip("tifffile")
    scan = tifffile.imread(real_scan("mouse_femur"))
    path = save_am(Volume(scan, voxel_size=0.05), tmp_path / "femur.am")
    np.testing.assert_array_equal(load_am(path).array, scan)
    labels = (scan > 60).astype(np.uint8) + (scan > 120)
    lpath = save_am(Volume(labels, voxel_size=0.05, class_names=("Exterior", "Soft", "Bone")), tmp_path / "l.am",
                        compress="rle")
    loaded = load_am(lpath)
    np.testing.assert_array_equal(loaded.array, labels)
    assert read_header(lpath).sections[0].encoded_size < labels.size / 2
