"""Parallel HDF5 chunk I/O: gzip (deflate) and shuffle chunks decoded and encoded by threads.

Through h5py, HDF5's filter pipeline runs one chunk at a time under h5py's lock. Here chunks are
read and stored raw (``read_direct_chunk`` / ``write_direct_chunk``) while zlib, which releases the
GIL, works in the shared I/O threads (:mod:`bone_avizo.io.threads`). The stored chunks are what HDF5's
own deflate and shuffle filters write (same filter ids, filter mask and layout), so every HDF5 reader
(h5py, Fiji, Avizo) opens the files. Datasets with any other filter use h5py's normal path.
"""
from __future__ import annotations

import itertools
import math
import sys
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import h5py
import numpy as np

from bone_avizo.io.threads import parallel_imap, parallel_map

DEFLATE, SHUFFLE = h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE


WORDS = {2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")} if sys.byteorder == "little" else {}


def shuffle_bytes(data: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter: the bytes of n elements of size s, (n, s) transposed to (s, n) (uint8, flat).
    Element sizes 2, 4 and 8 take byte k of each element with shifts, much faster than a byte transpose."""
    size = data.dtype.itemsize
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if size == 1:
        return raw
    if size not in WORDS:
        return np.ascontiguousarray(raw.reshape(-1, size).T).reshape(-1)
    words = raw.view(WORDS[size])
    out = np.empty(raw.size, np.uint8)
    for k in range(size):
        out[k * words.size:(k + 1) * words.size] = words >> (8 * k)  # the low byte is kept
    return out


def unshuffle_bytes(raw: bytes, size: int) -> np.ndarray:
    """The inverse of :func:`shuffle_bytes`: (s, n) bytes back to n elements of s bytes (uint8, flat)."""
    data = np.frombuffer(raw, np.uint8)
    if size == 1 or data.size % size:
        return data  # HDF5 leaves such buffers as they are
    if size not in WORDS:
        return np.ascontiguousarray(data.reshape(size, -1).T).reshape(-1)
    n = data.size // size
    words = data[:n].astype(WORDS[size])
    for k in range(1, size):
        words |= data[k * n:(k + 1) * n].astype(WORDS[size]) << (8 * k)
    return words.view(np.uint8)


@dataclass(frozen=True)
class ChunkCodec:
    """The filter pipeline of a chunked dataset made only of deflate and shuffle: ``filters`` in pipeline
    (encoding) order, the deflate ``level``, the file's element ``dtype`` and the ``chunks`` shape."""

    filters: tuple[int, ...]
    level: int
    dtype: np.dtype
    chunks: tuple[int, ...]
    fill: object = 0

    @classmethod
    def of(cls, ds: h5py.Dataset) -> ChunkCodec | None:
        """The codec of ``ds``, or None when it is not chunked or has a filter other than deflate/shuffle."""
        if ds.chunks is None or ds.dtype.kind not in "iuf" or ds.dtype.itemsize > 8:
            return None
        plist = ds.id.get_create_plist()
        filters, level = [], 6
        for index in range(plist.get_nfilters()):
            code, _flags, values, _name = plist.get_filter(index)
            if code not in (DEFLATE, SHUFFLE):
                return None
            if code == DEFLATE:
                level = int(values[0]) if values else 6
            filters.append(code)
        if filters.count(DEFLATE) != 1 or filters.count(SHUFFLE) > 1:
            return None
        return cls(tuple(filters), level, ds.dtype, tuple(ds.chunks), ds.fillvalue)

    @property
    def chunk_bytes(self) -> int:
        return math.prod(self.chunks) * self.dtype.itemsize

    def decode(self, raw: bytes, mask: int) -> np.ndarray:
        """A stored chunk -> array of ``chunks`` shape; filters whose bit is set in ``mask`` were skipped."""
        data = raw
        for index in reversed(range(len(self.filters))):
            if mask >> index & 1:
                continue
            if self.filters[index] == DEFLATE:
                try:
                    data = zlib.decompress(data, bufsize=self.chunk_bytes)
                except zlib.error as exc:
                    raise OSError(f"a gzip chunk does not decompress ({exc})") from exc
            else:
                data = unshuffle_bytes(data, self.dtype.itemsize)
        if len(data) != self.chunk_bytes:
            raise OSError(f"a chunk holds {len(data)} bytes instead of {self.chunk_bytes}")
        return np.frombuffer(data, self.dtype).reshape(self.chunks)

    def encode(self, block: np.ndarray) -> tuple[int, bytes]:
        """(filter mask, stored bytes) of ``block``, padded with the fill value to the chunk shape: what
        HDF5's filters store (as HDF5 does, even a chunk that grows is stored compressed)."""
        if block.shape != self.chunks:
            full = np.full(self.chunks, self.fill, self.dtype)
            full[tuple(slice(0, n) for n in block.shape)] = block
            block = full
        data = np.ascontiguousarray(block, self.dtype).reshape(-1).view(np.uint8)
        for code in self.filters:
            data = shuffle_bytes(data.view(self.dtype)) if code == SHUFFLE else zlib.compress(data, self.level)
        return 0, bytes(data)


def store_chunk(ds: h5py.Dataset, offset: tuple, data: bytes, mask: int) -> None:
    """Store one encoded chunk of ``ds`` at ``offset`` (the one place chunks reach the file)."""
    ds.id.write_direct_chunk(offset, data, mask)


def _spans(start: int, stop: int, chunk: int, extent: int):
    """Per chunk along one axis: (chunk start, slice in the chunk, slice in the region, whole chunk used)."""
    for origin in range(start - start % chunk, stop, chunk):
        lo, hi = max(start, origin), min(stop, origin + chunk)
        whole = lo == origin and hi == min(origin + chunk, extent)
        yield origin, slice(lo - origin, hi - origin), slice(lo - start, hi - start), whole


class ChunkReader:
    """Reads regions of a deflate(/shuffle) dataset by decoding the chunks they touch in threads.

    Chunks a read uses only in part (e.g. a 16-slice chunk read by a 3-slice slab) stay decoded in a
    least-recently-used cache of ``cache_bytes``, so reading slab after slab decodes each chunk once.
    A read that uses more chunks in part than the cache holds (a plane across the whole z range)
    keeps none: memory stays within the cache plus one chunk per thread."""

    def __init__(self, ds: h5py.Dataset, codec: ChunkCodec, *, cache_bytes: int):
        self.ds, self.codec = ds, codec
        self.cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # one read at a time (each one parallel inside)
        self.cache_slots = max(1, cache_bytes // codec.chunk_bytes)
        stored = []
        ds.id.chunk_iter(lambda info: stored.append(info.chunk_offset))
        self.stored = frozenset(stored)

    def read(self, region: tuple[slice, slice, slice], dtype: np.dtype) -> np.ndarray:
        """The region (step-1 slices of z, y, x) as a new array of ``dtype``; safe from several threads."""
        with self._lock:
            return self._read(region, dtype)

    def _read(self, region: tuple[slice, slice, slice], dtype: np.dtype) -> np.ndarray:
        bounds = [r.indices(n)[:2] for r, n in zip(region, self.ds.shape)]
        out = np.empty([max(0, b - a) for a, b in bounds], dtype)
        if out.size == 0:
            return out
        axes = [list(_spans(a, b, c, n)) for (a, b), c, n in zip(bounds, self.codec.chunks, self.ds.shape)]
        todo = []
        for parts in itertools.product(*axes):
            offset = tuple(p[0] for p in parts)
            inside, target = tuple(p[1] for p in parts), tuple(p[2] for p in parts)
            cached = self.cache.get(offset)
            if cached is not None:
                self.cache.move_to_end(offset)
                out[target] = cached[inside]
            elif offset not in self.stored:
                out[target] = self.codec.fill
            else:
                todo.append((offset, inside, target, not all(p[3] for p in parts)))
        if sum(job[3] for job in todo) > self.cache_slots:
            todo = [job[:3] + (False,) for job in todo]

        def load(job):
            offset, inside, target, keep = job
            mask, raw = self.ds.id.read_direct_chunk(offset)
            chunk = self.codec.decode(raw, mask)
            out[target] = chunk[inside]
            return offset, chunk if keep else None

        for offset, chunk in parallel_map(load, todo):
            if chunk is not None:
                self._remember(offset, chunk)
        return out

    def _remember(self, offset: tuple, chunk: np.ndarray) -> None:
        self.cache[offset] = chunk
        while len(self.cache) > self.cache_slots:
            self.cache.popitem(last=False)


class _Layer:
    """The slices of one chunk layer (depth, y, x) while it is incomplete; unwritten slices hold the fill
    value, as in the file. ``dirty``: written slices not yet stored."""

    def __init__(self, depth: int, plane: tuple[int, int], dtype: np.dtype, fill):
        self.array = np.full((depth,) + tuple(plane), fill, dtype)
        self.written = np.zeros(depth, bool)
        self.dirty = False


class ChunkWriter:
    """Writes slabs of a deflate(/shuffle) dataset chunk layer by chunk layer: a layer's chunks are
    compressed in threads and stored with ``write_direct_chunk``.

    Slices of an incomplete layer wait in memory (at most ``max_pending`` layers) and are stored, the
    rest of the layer holding the fill value, when :meth:`persist` asks for them (a resume point). A layer
    once stored is fresh no more: later writes into it go through h5py's normal path."""

    def __init__(self, ds: h5py.Dataset, codec: ChunkCodec, *, done: int = 0, max_pending: int = 1):
        self.ds, self.codec = ds, codec
        self.depth = codec.chunks[0]
        self.pending: dict[int, _Layer] = {}
        self.max_pending = max_pending
        layer = done // self.depth
        self.stored = {n for n in range(layer + 1) if self.layer_bounds(n)[1] <= done}  # complete on resume
        start, stop = self.layer_bounds(layer)
        if start < done < stop:  # hold the already written slices of the resume point's layer
            self._gather(layer, 0, self.ds[start:done])
            self.pending[layer].dirty = False

    def layer_bounds(self, layer: int) -> tuple[int, int]:
        return layer * self.depth, min((layer + 1) * self.depth, self.ds.shape[0])

    def write(self, z0: int, slab: np.ndarray) -> None:
        """Store slab (n, y, x) at slices z0..z0+n-1."""
        z1 = z0 + slab.shape[0]
        for layer in range(z0 // self.depth, (z1 - 1) // self.depth + 1):
            l0, l1 = self.layer_bounds(layer)
            a, b = max(z0, l0), min(z1, l1)
            part = slab[a - z0:b - z0]
            if layer in self.stored and layer not in self.pending:
                self.ds[a:b] = part
            elif (a, b) == (l0, l1) and layer not in self.pending:
                self._store(layer, part)
            else:
                self._gather(layer, a - l0, part)
        while len(self.pending) > self.max_pending:
            self._store_pending(min(self.pending))

    def _gather(self, layer: int, start: int, part: np.ndarray) -> None:
        if layer not in self.pending:
            l0, l1 = self.layer_bounds(layer)
            self.pending[layer] = _Layer(l1 - l0, self.ds.shape[1:], part.dtype, self.codec.fill)
        held = self.pending[layer]
        held.array[start:start + len(part)] = part
        held.written[start:start + len(part)] = True
        held.dirty = True
        if held.written.all():
            self._store_pending(layer)

    def _store_pending(self, layer: int) -> None:
        self._store(layer, self.pending.pop(layer).array)

    def _store(self, layer: int, data: np.ndarray) -> None:
        """Compress the chunks of a whole layer (its slices, all of y and x) in threads and store them."""
        z0, (_, cy, cx) = self.layer_bounds(layer)[0], self.codec.chunks
        ny, nx = data.shape[1:]
        offsets = [(z0, y, x) for y in range(0, ny, cy) for x in range(0, nx, cx)]
        blocks = [data[:, y:y + cy, x:x + cx] for _, y, x in offsets]
        for offset, (mask, stored) in zip(offsets, parallel_imap(self.codec.encode, blocks)):
            store_chunk(self.ds, offset, stored, mask)  # while the threads compress the next chunks
        self.stored.add(layer)

    def persist(self, z_end: int) -> None:
        """Store the waiting slices below ``z_end`` (their layers stay in memory until complete)."""
        for layer, held in sorted(self.pending.items()):
            if held.dirty and self.layer_bounds(layer)[0] < z_end:
                self._store(layer, held.array)
                held.dirty = False

    def persisted_end(self, z_end: int) -> int:
        """How far slices 0..z_end-1 are in the file: ``z_end``, or the first slice of the first layer below
        it whose written slices wait in memory (see :meth:`persist`)."""
        waiting = (self.layer_bounds(layer)[0] for layer, held in self.pending.items() if held.dirty)
        return min((start for start in waiting if start < z_end), default=z_end)

    def flush(self) -> bool:
        """Store every waiting layer as it is; True if one held slices not stored yet."""
        dirty = any(held.dirty for held in self.pending.values())
        for layer in sorted(self.pending):
            self._store_pending(layer)
        return dirty
