"""HDF5 chunks decoded and encoded in threads (bone_avizo.io.hdf5_chunks): the files and the voxels are
those of h5py's own filter pipeline, any reader opens what the writer stores, and resuming still works."""
from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from bone_avizo.errors import ConfigError, CorruptFileError
from bone_avizo.io import create_writer, load_volume
from bone_avizo.io.hdf5 import Hdf5Source, Hdf5Writer
from bone_avizo.io.hdf5_chunks import DEFLATE, SHUFFLE, ChunkCodec, ChunkWriter, shuffle_bytes, unshuffle_bytes
from bone_avizo.io.threads import IO_THREADS_ENV, io_threads
from bone_avizo.volume import VolumeInfo

DTYPES = ["uint8", "uint16", "int16", "float32"]
SHAPE = (21, 300, 270)  # not a multiple of the writer's (16, 256, 256) chunks along any axis


def smooth(shape, dtype, seed=0) -> np.ndarray:
    """Compressible data with every bit pattern of the type in use (negative and fractional too)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    base = (z * 7 + y // 3 + x // 5) % 200 + rng.integers(0, 3, shape)
    data = base.astype(dtype)
    if np.dtype(dtype).kind == "f":
        data = data * np.float32(0.37) - 20
    elif np.dtype(dtype).kind == "i":
        data = (data - 100) * 97
    elif np.dtype(dtype).itemsize > 1:
        data = data * 300
    return data.astype(dtype)


def plain_h5py(path, data, *, chunks, shuffle, fill=0, written=None, dtype=None):
    """A gzip-1 dataset 'data' written by h5py alone; ``written``: only these z ranges are stored."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("data", shape=data.shape, dtype=dtype or data.dtype, chunks=chunks,
                              compression="gzip", compression_opts=1, shuffle=shuffle, fillvalue=fill)
        for a, b in written or [(0, data.shape[0])]:
            ds[a:b] = data[a:b]


def stored_chunks(path) -> dict:
    """Chunk offset -> decoded bytes, through HDF5's own filters (read_direct_chunk + h5py decoding)."""
    with h5py.File(path, "r") as f:
        ds = f["data"]
        out = {}
        for i in range(ds.id.get_num_chunks()):
            offset = ds.id.get_chunk_info(i).chunk_offset
            region = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, ds.chunks, ds.shape))
            out[offset] = ds[region].tobytes()
        return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_threaded_reads_equal_h5py_on_files_h5py_wrote(dtype, shuffle, tmp_path):
    data = smooth((23, 70, 45), dtype)
    path = tmp_path / "plain.h5"
    plain_h5py(path, data, chunks=(5, 16, 24), shuffle=shuffle)
    with Hdf5Source(path) as source:
        assert source._chunks is not None  # the threaded path is the one tested
        assert np.array_equal(source.read_all(), data)
        for z0, z1 in [(0, 1), (3, 9), (4, 5), (20, 23), (7, 7)]:  # slab after slab reuses cached chunks
            assert np.array_equal(source.read_slab(z0, z1), data[z0:z1])
        region = (slice(2, 19), slice(-30, None), slice(11, 40))
        assert np.array_equal(source.read_region(*region), data[region])
        assert np.array_equal(source.read_plane(2, 44), data[:, :, 44])


def test_partly_used_chunks_are_cached_within_the_cache_size(tmp_path, monkeypatch):
    data = smooth((40, 64, 64), "uint16")
    path = tmp_path / "c.h5"
    plain_h5py(path, data, chunks=(8, 16, 16), shuffle=True)  # 5 x 4 x 4 chunks of 4 KiB
    decoded, decode = [], ChunkCodec.decode
    monkeypatch.setattr(ChunkCodec, "decode", lambda codec, raw, mask: decoded.append(1) or decode(codec, raw, mask))
    with Hdf5Source(path) as source:
        reader = source._chunks
        reader.cache_slots = 16  # one layer of chunks
        for z0 in range(0, 8, 2):  # slab after slab inside one chunk layer: each chunk decoded once
            assert np.array_equal(source.read_slab(z0, z0 + 2), data[z0:z0 + 2])
        assert len(decoded) == 16 and len(reader.cache) == 16
        assert np.array_equal(source.read_plane(2, 5), data[:, :, 5])  # 20 chunks in part: none kept
        assert len(reader.cache) == 16


def test_unwritten_chunks_read_as_the_fill_value_and_big_endian_files_as_native(tmp_path):
    data = smooth((20, 40, 40), "uint16")
    path = tmp_path / "partial.h5"
    plain_h5py(path, data, chunks=(4, 16, 16), shuffle=True, fill=7, written=[(0, 6), (12, 14)], dtype=">u2")
    expected = np.full(data.shape, 7, np.uint16)
    expected[0:6], expected[12:14] = data[0:6], data[12:14]
    with h5py.File(path) as f:  # what h5py makes of the same file
        assert np.array_equal(f["data"][...], expected)
    with Hdf5Source(path) as source:
        assert source._chunks is not None and source.dtype == np.dtype("uint16")
        assert np.array_equal(source.read_slab(0, 20), expected)
        assert np.array_equal(source.read_region(slice(5, 13), slice(10, 30), slice(0, 3)), expected[5:13, 10:30, :3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_written_files_are_standard_gzip_hdf5_identical_to_h5pys(dtype, tmp_path):
    data = smooth(SHAPE, dtype)
    info = VolumeInfo(SHAPE, dtype)
    with create_writer(tmp_path / "fast.h5", info) as writer:
        assert writer._chunks is not None
        for z0, z1 in [(0, 3), (3, 16), (16, 17), (17, 21)]:  # whole layers, parts of layers, the short last one
            writer.write_slab(z0, data[z0:z1])
            writer.mark_done(z1)
    plain_h5py(tmp_path / "plain.h5", data, chunks=(16, 256, 256), shuffle=np.dtype(dtype).itemsize > 1)
    with h5py.File(tmp_path / "fast.h5") as f:
        ds = f["data"]
        assert (ds.compression, ds.compression_opts, ds.shuffle) == ("gzip", 1, np.dtype(dtype).itemsize > 1)
        plist = ds.id.get_create_plist()
        codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        assert codes == ([SHUFFLE] if np.dtype(dtype).itemsize > 1 else []) + [DEFLATE]
        assert np.array_equal(ds[...], data)
    assert stored_chunks(tmp_path / "fast.h5") == stored_chunks(tmp_path / "plain.h5")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_chunk_writer_stores_what_h5py_stores(dtype, shuffle, tmp_path):
    data = smooth((23, 70, 45), dtype)
    plain_h5py(tmp_path / "plain.h5", data, chunks=(5, 16, 24), shuffle=shuffle)
    with h5py.File(tmp_path / "fast.h5", "w") as f:
        ds = f.create_dataset("data", shape=data.shape, dtype=data.dtype, chunks=(5, 16, 24), compression="gzip",
                              compression_opts=1, shuffle=shuffle)
        writer = ChunkWriter(ds, ChunkCodec.of(ds))
        for z0, z1 in [(0, 7), (7, 8), (8, 20), (20, 23)]:
            writer.write(z0, data[z0:z1])
        writer.flush()
    assert stored_chunks(tmp_path / "fast.h5") == stored_chunks(tmp_path / "plain.h5")
    with h5py.File(tmp_path / "fast.h5") as f:
        assert f["data"].compression == "gzip" and f["data"].shuffle == shuffle
        assert np.array_equal(f["data"][...], data)


@pytest.mark.parametrize("dtype, shuffle", [("uint8", False), ("uint16", True), ("float32", True)])
def test_chunks_are_stored_as_hdf5s_own_filters_store_them(dtype, shuffle, tmp_path):
    """Our decoder reads the chunks HDF5 encoded, and our encoder stores what HDF5 stores for the same
    block (edge chunks padded, incompressible noise deflated all the same), byte for byte when h5py's
    zlib and Python's compress alike."""
    rng = np.random.default_rng(1)
    data = smooth((4, 20, 20), dtype)
    data[:, :16, :16] = rng.integers(0, 100, (4, 16, 16)) if dtype != "float32" else rng.random((4, 16, 16))
    path = tmp_path / "c.h5"
    plain_h5py(path, data, chunks=(4, 16, 16), shuffle=shuffle)
    with h5py.File(path, "r+") as f:
        ds = f["data"]
        codec = ChunkCodec.of(ds)
        assert codec.filters == ((SHUFFLE,) if shuffle else ()) + (DEFLATE,) and codec.level == 1
        for offset in [(0, 0, 0), (0, 16, 16)]:
            block = data[:, offset[1]:offset[1] + 16, offset[2]:offset[2] + 16]
            mask, raw = ds.id.read_direct_chunk(offset)
            assert np.array_equal(codec.decode(raw, mask)[:, :block.shape[1], :block.shape[2]], block)
            mine = codec.encode(block)
            assert np.array_equal(codec.decode(mine[1], mine[0]), codec.decode(raw, mask))
            same_zlib = zlib.decompress(raw) == zlib.decompress(mine[1])  # one payload, two zlibs?
            if same_zlib and zlib.compress(zlib.decompress(raw), 1) == raw:
                assert mine == (mask, raw)
            ds.id.write_direct_chunk(offset, mine[1], mine[0])
        assert np.array_equal(ds[...], data)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shuffle_is_hdf5s_byte_transpose(dtype):
    values = smooth((3, 5, 7), dtype)
    shuffled = shuffle_bytes(values)
    size = values.dtype.itemsize
    raw = values.reshape(-1).view(np.uint8)
    assert np.array_equal(shuffled[:values.size], raw[::size])  # all first bytes first
    assert np.array_equal(unshuffle_bytes(shuffled.tobytes(), size), raw)


def test_writes_in_any_order_and_rewrites(tmp_path):
    data = smooth((40, 30, 20), "uint16")
    info = VolumeInfo(data.shape, np.uint16)
    with create_writer(tmp_path / "v.h5", info) as writer:
        writer.write_slab(33, data[33:40])
        writer.write_slab(0, np.zeros_like(data[:20]))
        writer.write_slab(20, data[20:33])
        writer.write_slab(2, data[2:20])  # rewrites slices of a stored layer
        writer.write_slab(0, data[:2])
    assert np.array_equal(load_volume(tmp_path / "v.h5").array, data)


def test_resume_after_a_write_stopped_inside_a_chunk_layer(tmp_path):
    data = smooth((40, 30, 20), "int16")
    info, path = VolumeInfo(data.shape, np.int16), tmp_path / "v.h5"
    with pytest.raises(RuntimeError):
        with create_writer(path, info, resume=True) as writer:
            writer.write_slab(0, data[:21])
            writer.mark_done(21)
            assert writer._ds.attrs["done_slices"] == 21
            assert np.array_equal(writer._ds[:21], data[:21])  # in the file (through HDF5), not only in memory
            writer.write_slab(21, data[21:23])
            raise RuntimeError("stopped")
    with create_writer(path, info, resume=True) as writer:
        assert writer.done_slices == 21  # what was marked done; slices 21, 22 are redone
        writer.write_slab(21, data[21:])
        writer.mark_done(40)
    assert np.array_equal(load_volume(path).array, data)


def test_other_filters_use_h5pys_path(tmp_path):
    data = smooth((10, 20, 30), "uint16")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(4, 8, 8), compression="gzip", fletcher32=True)
    with Hdf5Source(tmp_path / "f.h5") as source:
        assert source._chunks is None and np.array_equal(source.read_all(), data)
    writer = Hdf5Writer(tmp_path / "l.h5", VolumeInfo(data.shape, np.uint16), compression="lzf")
    with writer:
        assert writer._chunks is None
        writer.write_slab(0, data)
    assert np.array_equal(load_volume(tmp_path / "l.h5").array, data)


def test_a_damaged_chunk_is_a_clear_error(tmp_path):
    data = smooth((16, 40, 40), "uint8")
    path = tmp_path / "d.h5"
    plain_h5py(path, data, chunks=(16, 40, 40), shuffle=False)
    with h5py.File(path) as f:
        info = f["data"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 4:info.byte_offset + 20] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    with Hdf5Source(path) as source, pytest.raises(CorruptFileError, match="damaged"):
        source.read_slab(0, 2)


def test_thread_count_comes_from_the_environment(monkeypatch, tmp_path):
    data = smooth((20, 64, 64), "uint16")
    monkeypatch.setenv(IO_THREADS_ENV, "1")
    assert io_threads() == 1
    save = tmp_path / "one.h5"
    with create_writer(save, VolumeInfo(data.shape, np.uint16)) as writer:
        writer.write_slab(0, data)
    monkeypatch.setenv(IO_THREADS_ENV, "3")
    with Hdf5Source(save) as source:
        assert np.array_equal(source.read_all(), data)
    monkeypatch.setenv(IO_THREADS_ENV, "many")
    with pytest.raises(ConfigError, match=IO_THREADS_ENV):
        io_threads()


def test_resume_points_inside_a_chunk_layer_are_stored_at_most_every_checkpoint_interval(tmp_path, monkeypatch):
    """Blocks that end inside a chunk layer: the first resume point stores the waiting slices; until the
    checkpoint interval has passed, later ones end at that layer's start (no layer compressed again), and
    a completed layer counts at once. Closing after a failure stores every written slice."""
    import bone_avizo.io.hdf5 as hdf5
    data = smooth((40, 30, 20), "int16")
    info, path = VolumeInfo(data.shape, np.int16), tmp_path / "v.h5"
    stores = []
    with pytest.raises(RuntimeError):
        with create_writer(path, info, resume=True) as writer:
            real_store = writer._chunks._store
            monkeypatch.setattr(writer._chunks, "_store", lambda layer, d: (stores.append(layer), real_store(layer, d)))
            recorded = []
            for z0 in range(0, 38, 3):
                writer.write_slab(z0, data[z0:z0 + 3])
                writer.mark_done(z0 + 3)
                recorded.append(int(writer._ds.attrs["done_slices"]))
            assert recorded[:6] == [3, 3, 3, 3, 3, 16]  # layer 0 completes in block 15..18; 16, 17 wait
            assert recorded[-1] == 32  # layers 0 and 1 stored; slices 32..38 wait for layer 2
            assert stores == [0, 0, 1]  # layer 0 once for the first resume point, then once complete
            monkeypatch.setattr(hdf5, "CHECKPOINT_SECONDS", 0.0)
            writer._next_checkpoint = 0.0
            writer.mark_done(39)  # the interval has passed: the waiting slices are stored
            assert int(writer._ds.attrs["done_slices"]) == 39
            raise RuntimeError("stopped")
    with create_writer(path, info, resume=True) as writer:
        assert writer.done_slices == 39
        writer.write_slab(39, data[39:])
        writer.mark_done(40)
    assert np.array_equal(load_volume(path).array, data)
