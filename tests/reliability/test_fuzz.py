"""Property-based fuzzing: the AmiraMesh and raw/MetaImage readers meet random bytes, random headers and
valid files with corrupted payloads; they must read a volume or raise a BoneAvizoError subclass, never
another exception, never hang (each read runs under a 10 s alarm). The tiler meets random image
shapes, tile sizes, overlaps, blends and batch sizes: tiling a pointwise network changes nothing.
A few dozen examples per test keep the suite fast; BONE_AVIZO_FUZZ_EXAMPLES=5000 searches deeper.

tests/test_io_amira.py fuzzes the HxByteRLE codec itself; tests/test_predict_tiling.py checks the
tiler on fixed cases.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bone_avizo.errors import BoneAvizoError
from bone_avizo.io import open_volume, save_volume
from bone_avizo.io.raw import MET_TYPES, RawSource
from bone_avizo.predict.tiling import Tiler
from bone_avizo.volume import Volume
from fakes import PointwiseNet

EXAMPLES = int(os.environ.get("BONE_AVIZO_FUZZ_EXAMPLES", "40"))  # raise it for a deeper search
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def time_limit(seconds: int = 10):
    """Turn a hang into a failure (SIGALRM; the tests run in the main thread)."""
    def hung(signum, frame):
        raise AssertionError(f"reading did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_or_refuse(path: Path, **options) -> np.ndarray | None:
    """The whole volume and a plane of it, or None when the reader refused the file with a BoneAvizoError.
    Any other exception fails the test."""
    with time_limit():
        try:
            with open_volume(path, **options) as source:
                data = source.read_all()
                source.read_plane(2, source.shape[2] - 1)
                assert data.shape == source.shape and data.dtype == source.dtype
                return data
        except BoneAvizoError:
            return None


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------
# AmiraMesh
AM_ENCODINGS = {"raw": {}, "rle": {"compress": "rle"}, "zip": {"compress": "zip"}, "ascii": {"ascii": True}}
shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 7))


@st.composite
def amira_files(draw) -> tuple:
    """What makes a valid AmiraMesh file: a random small volume (z, y, x), class names, writer options."""
    shape = draw(shapes)
    encoding = draw(st.sampled_from(sorted(AM_ENCODINGS)))
    dtype = np.uint8 if encoding == "rle" else draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32]))
    seed = draw(st.integers(0, 2**16))
    array = np.random.default_rng(seed).integers(0, 4, shape).astype(dtype)
    names = ("background", "bone", "pores", "marrow") if dtype == np.uint8 and draw(st.booleans()) else None
    return array, names, AM_ENCODINGS[encoding]


def mutate(data: bytes, draw) -> bytes:
    """Flip bytes, cut, insert or delete a run: the damage files suffer."""
    data = bytearray(data)
    kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "cut":
        data = data[:draw(st.integers(0, len(data) - 1))]
    else:
        at = draw(st.integers(0, len(data) - 1))
        if kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:at + draw(st.integers(1, 32))]
    return bytes(data)


def header_numbers(data: bytes, draw) -> bytes:
    """Replace numbers of the header (sizes, the encoded byte count, the bounding box) by random ones."""
    head, marker, body = data.partition(b"\n@1\n")
    numbers = list(re.finditer(rb"-?\d+(\.\d+)?", head))
    assume(numbers)
    for _ in range(draw(st.integers(1, 3))):
        found = numbers[draw(st.integers(0, len(numbers) - 1))]
        value = draw(st.sampled_from([b"0", b"-1", b"nan", b"inf", b"1e300", b"99999999999999", b"3", b"x"]))
        head = head[:found.start()] + value + head[found.end():]
        numbers = list(re.finditer(rb"-?\d+(\.\d+)?", head))
        if not numbers:
            break
    return head + marker + body


@FUZZ
@given(data=st.binary(max_size=300), magic=st.booleans())
def test_amira_random_bytes(folder, data, magic):
    path = folder / "random.am"
    path.write_bytes((b"# AmiraMesh BINARY-LITTLE-ENDIAN 2.1\n" if magic else b"") + data)
    read_or_refuse(path)


def write_amira(path: Path, file) -> Path:
    """Write the drawn file and check that it reads back as written."""
    array, names, options = file
    save_volume(Volume(array, class_names=names), path, overwrite=True, **options)
    assert np.array_equal(read_or_refuse(path), array)
    return path


@FUZZ
@given(file=amira_files(), data=st.data())
def test_amira_valid_header_corrupted_payload(folder, file, data):
    path = write_amira(folder / "valid.am", file)
    path.write_bytes(mutate(path.read_bytes(), data.draw))
    read_or_refuse(path)


@FUZZ
@given(file=amira_files(), data=st.data())
def test_amira_random_header_values(folder, file, data):
    path = write_amira(folder / "header.am", file)
    path.write_bytes(header_numbers(path.read_bytes(), data.draw))
    read_or_refuse(path)


# ---------------------------------------------------------------------------------------------
# raw and MetaImage
raw_dtypes = st.sampled_from(["uint8", "int16", "uint16", "float32", "float64", "int64", "bool", "complex64",
                              "U4", "nonsense"])


@FUZZ
@given(data=st.binary(max_size=400), shape=st.tuples(*[st.integers(-2, 9)] * 3) | st.text(max_size=12),
       dtype=raw_dtypes, order=st.sampled_from(["little", "big", "middle"]), header=st.integers(-3, 500))
def test_raw_random_bytes_and_options(folder, data, shape, dtype, order, header):
    path = folder / "random.raw"
    path.write_bytes(data)
    with time_limit():
        try:
            source = RawSource(path, shape=shape, dtype=dtype, byte_order=order, header_bytes=header)
            assert source.read_all().shape == source.shape
        except BoneAvizoError:
            pass


mhd_values = st.one_of(st.integers(-5, 40).map(str), st.sampled_from(["nan", "inf", "-inf", "1e30", "", "x y z",
                                                                       "True", "False", "3 4", "2 3 4 5"]),
                       st.text(alphabet="0123456789 .-e", max_size=12))
MHD_FIELDS = ("NDims", "DimSize", "ElementType", "ElementSpacing", "Offset", "HeaderSize", "CompressedData",
              "CompressedDataSize", "BinaryDataByteOrderMSB", "ElementNumberOfChannels", "ElementDataFile")


@st.composite
def mhd_headers(draw) -> dict[str, str]:
    """The fields of a valid MetaImage header of a small volume, some replaced by random values."""
    shape = draw(shapes)
    fields = {"ObjectType": "Image", "NDims": "3", "DimSize": " ".join(map(str, shape[::-1])),
              "ElementType": draw(st.sampled_from(sorted(MET_TYPES))), "ElementSpacing": "0.5 0.5 1",
              "Offset": "0 0 0", "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
              "CompressedData": draw(st.sampled_from(["False", "True"])), "ElementDataFile": "LOCAL"}
    for name in draw(st.lists(st.sampled_from(MHD_FIELDS), max_size=3, unique=True)):
        fields[name] = draw(st.sampled_from(["LOCAL", "data.raw", "missing.raw", "LIST", "x%03d.raw 0 2 1"])
                            if name == "ElementDataFile" else mhd_values)
    return fields


@FUZZ
@given(fields=mhd_headers(), payload=st.binary(max_size=600), order=st.permutations(range(3)))
def test_metaimage_random_headers(folder, fields, payload, order):
    names = list(fields)
    last = names.pop(names.index("ElementDataFile"))
    head = "".join(f"{name} = {fields[name]}\n" for name in names) + f"{last} = {fields[last]}\n"
    if fields["CompressedData"] == "True" and order[0] == 0:
        payload = zlib.compress(payload)
    path = folder / "header.mha"
    path.write_bytes(head.encode() + payload)
    (folder / "data.raw").write_bytes(payload)
    read_or_refuse(path)
    mhd = folder / "header.mhd"
    mhd.write_bytes(head.encode())
    read_or_refuse(mhd)


# ---------------------------------------------------------------------------------------------
# the tiler
@settings(max_examples=max(EXAMPLES * 2 // 3, 1), deadline=None)
@given(n=st.integers(1, 3), channels=st.integers(1, 3), height=st.integers(1, 150), width=st.integers(1, 150),
       tile=st.sampled_from([32, 64, 96, 128]), overlap=st.floats(0.0, 0.9), blend=st.sampled_from(
           ["gaussian", "cosine", "constant"]), batch=st.integers(1, 7), seed=st.integers(0, 1000))
def test_tiling_a_pointwise_network_changes_nothing(n, channels, height, width, tile, overlap, blend, batch, seed):
    torch.manual_seed(seed)
    net = PointwiseNet(in_channels=channels, num_classes=3, seed=seed).eval()
    images = torch.randn(n, channels, height, width)
    tiler = Tiler(net, tile=tile, overlap=overlap, blend=blend, batch_size=batch, num_classes=3)
    with torch.no_grad():
        tiled, whole = tiler(images), net(images)
    assert tiled.shape == whole.shape and tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    top2 = whole.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # where the winner is not a near tie
    assert torch.equal(tiled.argmax(1)[clear], whole.argmax(1)[clear])
