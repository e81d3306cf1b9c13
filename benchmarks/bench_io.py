"""Volume I/O speed: plain library calls (before) vs bone_avizo's sources and writers (after), side by side.

    python benchmarks/bench_io.py                                  # 64 x 1024 x 1024, every format
    python benchmarks/bench_io.py --slices 8 --size 128 --json io.json

A uint16 scan (smooth structure plus noise, as micro-CT) and uint8 labels (3 classes) of the same shape
are written and read slab by slab (``--slab`` slices) in every format the predictor uses, from the page
cache. Mvoxel/s = voxels / seconds, best of ``--repeat``. Rows:
HDF5 gzip level 1 (+ shuffle for uint16): h5py's own filter pipeline vs chunks compressed and
decompressed in threads; TIFF zlib-compressed reads: page after page vs tifffile's workers;
uncompressed TIFF label writes: one tifffile.imwrite call vs the writer's memory map; Zarr zstd: zarr
with one chunk at a time vs zarr's defaults vs ours. Prints a table and one JSON line (also to --json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bone_avizo.io import create_writer, open_volume  # noqa: E402
from bone_avizo.io.hdf5 import chunk_shape, compression_args  # noqa: E402
from bone_avizo.io.threads import io_threads  # noqa: E402
from bone_avizo.volume import VolumeInfo  # noqa: E402


def make_scan(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 scan, uint8 labels 0/1/2): smooth shapes plus noise, as a micro-CT scan compresses."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    y, x = np.ogrid[:ny, :nx]
    scan = np.empty(shape, np.uint16)
    labels = np.empty(shape, np.uint8)
    for z in range(nz):
        field = np.sin(y / 23.0 + z / 9.0) * np.cos(x / 31.0 - z / 13.0)
        labels[z] = np.digitize(field, (-0.2, 0.45)).astype(np.uint8)
        scan[z] = (labels[z] * 9000.0 + 8000 + rng.normal(0, 400, (ny, nx))).clip(0, 65535).astype(np.uint16)
    return scan, labels


def best_of(repeat: int, run, cleanup=None) -> float:
    """The shortest of ``repeat`` timed calls of ``run()`` (``cleanup()`` after each, untimed)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if cleanup:
            cleanup()
    return min(times)


def figure(value: float) -> float:
    """Four significant digits."""
    return float(f"{value:.4g}")


def slabs(n: int, size: int):
    return [(z0, min(z0 + size, n)) for z0 in range(0, n, size)]


# --- before: plain library calls --------------------------------------------------------------
def h5py_write(path: Path, data: np.ndarray, slab: int) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset("data", shape=data.shape, dtype=data.dtype, chunks=chunk_shape(data.shape),
                              **compression_args("gzip", None, data.dtype.itemsize))
        for z0, z1 in slabs(len(data), slab):
            ds[z0:z1] = data[z0:z1]


def h5py_read(path: Path, slab: int) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        ds = f["data"]
        for z0, z1 in slabs(ds.shape[0], slab):
            ds[z0:z1]


def tiff_pages_read(path: Path, slab: int) -> None:
    """Page after page, one thread: the reader before tifffile's workers were used."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = tif.series[0].pages
        for z0, z1 in slabs(len(pages), slab):
            np.stack([pages[z].asarray() for z in range(z0, z1)])


def tiff_imwrite(path: Path, data: np.ndarray, slab: int) -> None:
    import tifffile

    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})


def zarr_write(path: Path, data: np.ndarray, slab: int) -> None:
    from bone_avizo.io.zarr_format import compressor, import_zarr

    zarr = import_zarr()
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=chunk_shape(data.shape), dtype=data.dtype,
                              compressors=compressor("zstd", 3))
    for z0, z1 in slabs(len(data), slab):
        array[z0:z1] = data[z0:z1]


def zarr_read(path: Path, slab: int) -> None:
    from bone_avizo.io.zarr_format import import_zarr

    array = import_zarr().open_array(str(path), mode="r")
    for z0, z1 in slabs(array.shape[0], slab):
        array[z0:z1]


# --- after: bone_avizo ------------------------------------------------------------------------
def ours_write(path: Path, data: np.ndarray, slab: int, **options) -> None:
    with create_writer(path, VolumeInfo(data.shape, data.dtype), overwrite=True, **options) as writer:
        for z0, z1 in slabs(len(data), slab):
            writer.write_slab(z0, data[z0:z1])
            writer.mark_done(z1)


def ours_read(path: Path, slab: int) -> None:
    with open_volume(path) as source:
        for z0, z1 in slabs(source.shape[0], slab):
            source.read_slab(z0, z1)


def zarr_settings(settings: dict | None):
    """Reset zarr's thread pool and apply ``settings`` (None: ours, as bone_avizo sizes them)."""
    import zarr
    import zarr.core.sync

    from bone_avizo.io import zarr_format

    zarr.core.sync.cleanup_resources()
    zarr.config.reset()
    zarr_format._zarr_threads_sized = False
    if settings is None:
        zarr_format.import_zarr()
    else:
        zarr.config.set(settings)
        zarr_format._zarr_threads_sized = True
    return {"async.concurrency": zarr.config.get("async.concurrency"),
            "threading.max_workers": zarr.config.get("threading.max_workers")}


def zarr_installed() -> bool:
    try:
        import zarr  # noqa: F401
    except ImportError:
        print("zarr is not installed: no Zarr rows", flush=True)
        return False
    return True


def remove(path: Path):
    return lambda: shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def run(args) -> dict:
    import h5py
    import tifffile

    shape = (args.slices, args.size, args.size)
    scan, labels = make_scan(shape)
    folder = Path(tempfile.mkdtemp(prefix="bench_io_", dir=args.workdir))
    rows = []

    def row(fmt: str, what: str, data: np.ndarray, before: float, after: float, **extra) -> None:
        mvox = data.size / 1e6
        rows.append({"format": fmt, "what": what, "dtype": str(data.dtype), "before_mvox_s": figure(mvox / before),
                     "after_mvox_s": figure(mvox / after), "ratio": figure(before / after), **extra})
        print(f"{fmt:5} {what:44} {data.dtype!s:6} before {mvox / before:8.1f}  after {mvox / after:8.1f} Mvoxel/s"
              f"  x{before / after:.2f}", flush=True)

    try:
        for name, data in (("labels", labels), ("scan", scan)):
            plain, ours = folder / f"plain_{name}.h5", folder / f"ours_{name}.h5"
            before = best_of(args.repeat, lambda: h5py_write(plain, data, args.slab))
            after = best_of(args.repeat, lambda: ours_write(ours, data, args.slab))
            row("HDF5", f"write {name}, gzip-1 (h5py vs threads)", data, before, after)
            before = best_of(args.repeat, lambda: h5py_read(plain, args.slab))
            after = best_of(args.repeat, lambda: ours_read(plain, args.slab))
            row("HDF5", f"read {name}, gzip-1 (h5py vs threads)", data, before, after)
            with h5py.File(ours) as f:
                assert np.array_equal(f["data"][...], data)  # h5py reads what the threads stored

        tif = folder / "scan_zlib.tif"
        tifffile.imwrite(tif, scan, compression="zlib", imagej=True, metadata={"axes": "ZYX"})
        before = best_of(args.repeat, lambda: tiff_pages_read(tif, args.slab))
        after = best_of(args.repeat, lambda: ours_read(tif, args.slab))
        row("TIFF", "read scan, zlib (page by page vs workers)", scan, before, after)
        plain, ours = folder / "plain_labels.tif", folder / "ours_labels.tif"
        before = best_of(args.repeat, lambda: tiff_imwrite(plain, labels, args.slab), remove(plain))
        after = best_of(args.repeat, lambda: ours_write(ours, labels, args.slab), remove(ours))
        row("TIFF", "write labels, uncompressed (one imwrite vs ours)", labels, before, after)

        for name, data in (("labels", labels), ("scan", scan)) if zarr_installed() else ():
            path = folder / f"{name}.zarr"
            figures = {}
            for setting, settings in (("serial", {"async.concurrency": 1, "threading.max_workers": 1}),
                                      ("zarr default", {}), ("ours", None)):
                used = zarr_settings(settings)
                write = best_of(args.repeat, lambda: zarr_write(path, data, args.slab), remove(path))
                zarr_write(path, data, args.slab)
                read = best_of(args.repeat, lambda: zarr_read(path, args.slab))
                remove(path)()
                figures[setting] = (write, read, used)
            for k, what in enumerate(("write", "read")):
                serial, default, ours = (figures[s][k] for s in ("serial", "zarr default", "ours"))
                row("Zarr", f"{what} {name}, zstd (1 chunk at a time vs ours)", data, serial, ours,
                    zarr_default_mvox_s=figure(data.size / 1e6 / default),
                    settings={s: figures[s][2] for s in figures})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"shape": list(shape), "slab_slices": args.slab, "repeat": args.repeat, "io_threads": io_threads(),
            "cpu_count": os.cpu_count(), "machine": machine(), "date": datetime.datetime.now(
                datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": versions(), "rows": rows}


def machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}, {os.cpu_count()} CPUs"


def versions() -> dict:
    import h5py
    import tifffile

    found = {"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "tifffile": tifffile.__version__}
    try:
        import zarr
        found["zarr"] = zarr.__version__
    except ImportError:
        pass
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024, help="slice height and width")
    parser.add_argument("--slab", type=int, default=16, help="slices per read or write call")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per row (the best is kept)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary files (default: the system's)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = run(args)
    text = json.dumps(figures)
    if args.json:  # first: a closed stdout (| head) must not lose the figures
        Path(args.json).write_text(text + "\n")
    print(f"threads {figures['io_threads']} | {figures['machine']} | {figures['date']}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
