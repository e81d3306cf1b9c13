"""Shared tools of the reliability tests: tiny models and scans, folder snapshots, the CLI run in-process
or in a forked child that can be killed, and a simulated full disk.

Arrays are (z, y, x). Models are tiny U-Nets on a small timm encoder (about 1 MB, fast on one CPU thread).
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bone_avizo.io import save_volume
from bone_avizo.models import ModelMetadata, build_model, save_model
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.volume import Volume

ENCODER = "tu-mobilenetv3_small_050"
ARCH_OPTIONS = {"encoder_depth": 3, "decoder_channels": (8, 8, 8)}
CLASSES = ("background", "bone", "pores")
# the smallest useful training run: 32 px patches, 2 steps of 2 slices x 2 patches per epoch, one thread
FIT_FLAGS = ["--encoder", ENCODER, "--encoder-depth", "3", "--decoder-channels", "8", "8", "8",
             "--patch-size", "32", "--batch-size", "2", "--steps-per-epoch", "2", "--patches-per-slice", "2",
             "--val-slices", "2", "--no-plot", "--threads", "1"]
FIT_OPTIONS = dict(encoder=ENCODER, encoder_depth=3, decoder_channels=(8, 8, 8), patch_size=32, batch_size=2,
                   steps_per_epoch=2, patches_per_slice=2, val_slices=2, plot=False, threads=1)
PREDICT_FLAGS = ["--backend", "torch", "--device", "cpu", "--threads", "1"]


# -- data ---------------------------------------------------------------------------------------
def write_tiny_model(path: Path, *, in_channels: int = 1, seed: int = 0) -> Path:
    """A 3-class U-Net model file (2D, or 2.5D with ``in_channels`` context slices)."""
    torch.manual_seed(seed)
    module = build_model("unet", ENCODER, in_channels=in_channels, num_classes=len(CLASSES), **ARCH_OPTIONS)
    meta = ModelMetadata("unet", ENCODER, in_channels, len(CLASSES), 32, class_names=CLASSES,
                         context_slices=in_channels, arch_options=ARCH_OPTIONS)
    return save_model(path, module.eval(), meta, overwrite=True)


def scan_array(shape=(7, 13, 29), seed: int = 0) -> np.ndarray:
    """A uint16 (z, y, x) scan with values 1..2999 (every voxel > 0)."""
    return np.random.default_rng(seed).integers(1, 3000, shape).astype(np.uint16)


def write_scan(path: Path, shape=(7, 13, 29), seed: int = 0, **options) -> Path:
    return save_volume(Volume(scan_array(shape, seed), voxel_size=(0.03, 0.02, 0.02), name="scan"), path,
                       overwrite=True, **options)


def write_phantom_pairs(folder: Path, *, count: int = 3, shape=(5, 40, 48),
                        seed: int = 0) -> list[tuple[Path, Path]]:
    """``count`` phantom scans (uint8 image, labels 0..2) as .npy files: [(image, labels), ...]."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for k in range(count):
        image, labels = make_phantom(PhantomConfig(shape=shape, seed=seed + k))
        pair = (folder / f"scan{k}.npy", folder / f"scan{k}_labels.npy")
        np.save(pair[0], image.array)
        np.save(pair[1], labels.array)
        pairs.append(pair)
    return pairs


def fit_argv(pairs, output: Path, *extra: str) -> list[str]:
    images = [str(p[0]) for p in pairs]
    labels = [str(p[1]) for p in pairs]
    return ["fit", "--images", *images, "--labels", *labels, "--output", str(output), *FIT_FLAGS, *extra]


# -- folders ------------------------------------------------------------------------------------
def tree_state(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: relative path -> sha256 of the content ('dir' for folders)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


# -- the CLI ------------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``python -m bone_avizo.standalone ARGV`` in this process: (exit code, stdout, stderr)."""
    from bone_avizo.standalone.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def cli_error(argv: list[str]) -> str:
    """Run the CLI expecting a bad-input failure: exit code 2, no traceback, and exactly one error line,
    the last one, ``bone-avizo <command>: error: <message>``. Returns the message."""
    code, _, err = run_cli(["-q", *argv])
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert code == 2 and len(errors) == 1 and lines and lines[-1] == errors[0], (code, err)
    prefix = f"bone-avizo {argv[0]}: error: "
    assert errors[0].startswith(prefix), errors[0]
    return errors[0][len(prefix):]


def _marker_bar(log_fd: int, step_delay: float):
    """A progress_bar replacement that appends ``progress DONE/TOTAL MESSAGE`` to the log (the progress
    marker the killing side waits for) and slows each step down by ``step_delay`` seconds."""

    @contextlib.contextmanager
    def progress_bar(label):
        def report(done, total, message):
            os.write(log_fd, f"progress {done}/{total} {message}\n".encode())
            time.sleep(step_delay)

        yield report

    return progress_bar


def _child_main(argv: list[str], log_path: str, step_delay: float, prepare) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    torch.set_num_threads(1)
    from bone_avizo.standalone import cmd_fit, cmd_predict
    from bone_avizo.standalone.__main__ import main

    cmd_fit.progress_bar = cmd_predict.progress_bar = _marker_bar(fd, step_delay)
    if prepare is not None:
        prepare()
    try:
        code = main(argv)
    except BaseException:  # noqa: BLE001 - a child must never return into the test runner
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_cli_child(argv: list[str], log_path: Path, *, step_delay: float = 0.0, prepare=None):
    """The CLI in a forked child process (this process's imports are reused, so it starts in
    milliseconds) with stdout and stderr appended to ``log_path``; ``prepare()`` runs in the child first.
    Returns the Process (kill() sends SIGKILL)."""
    process = multiprocessing.get_context("fork").Process(
        target=_child_main, args=([str(a) for a in argv], str(log_path), step_delay, prepare), daemon=True)
    process.start()
    return process


def wait_for(predicate, *, timeout: float = 120.0, process=None) -> bool:
    """Poll ``predicate()`` every 5 ms until it is true (True) or ``process`` has ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process is not None and not process.is_alive():
            return bool(predicate())
        time.sleep(0.005)
    raise TimeoutError("the awaited condition did not come")


def progress_done(log_path: Path) -> int:
    """The last ``done`` count of the progress markers in the log (0 before the first)."""
    if not log_path.exists():
        return 0
    markers = [line.split()[1] for line in log_path.read_text(errors="replace").splitlines()
               if line.startswith("progress ")]
    return int(markers[-1].split("/")[0]) if markers else 0


# -- a disk that fills up -----------------------------------------------------------------------
class SimulatedDisk:
    """A disk with ``free`` bytes left for files under ``folder``: Python file writes, block
    reservations (``os.posix_fallocate``), h5py dataset writes, stored HDF5 chunks and ``torch.save`` into the folder fail
    with OSError(ENOSPC) once they would exceed it, after writing what still fits; once it is full,
    flushing an HDF5 file in the folder fails as h5py reports it (RuntimeError naming errno 28).

    Install with :meth:`install` (a pytest monkeypatch undoes it). Memory-mapped writes cannot be
    intercepted; the writers that use them reserve their blocks first, which is what fails here.
    """

    def __init__(self, folder: Path, free: int):
        self.folder = str(Path(folder).resolve())
        self.free = int(free)
        self.used = 0
        self._open = builtins.open
        self._fallocate = getattr(os, "posix_fallocate", None)

    def install(self, monkeypatch) -> "SimulatedDisk":
        import h5py

        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(io, "open", self.open)
        monkeypatch.setattr(os, "posix_fallocate", self.posix_fallocate, raising=False)
        original_setitem = h5py.Dataset.__setitem__

        def h5_setitem(dataset, key, value):
            if self.inside(dataset.file.filename):
                self.spend(np.asarray(value).nbytes)
            return original_setitem(dataset, key, value)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", h5_setitem)
        from bone_avizo.io import hdf5_chunks

        original_store = hdf5_chunks.store_chunk

        def store_chunk(dataset, offset, data, mask):  # the HDF5 writer's direct chunk writes
            if self.inside(dataset.file.filename):
                self.spend(len(data))
            return original_store(dataset, offset, data, mask)

        monkeypatch.setattr(hdf5_chunks, "store_chunk", store_chunk)
        original_flush = h5py.File.flush

        def h5_flush(file):
            if self.inside(file.filename) and self.used >= self.free:  # as h5py words it
                raise RuntimeError("Unable to synchronously flush file (file write failed: errno = 28, error "
                                   "message = 'No space left on device')")
            return original_flush(file)

        monkeypatch.setattr(h5py.File, "flush", h5_flush)
        original_save = torch.save

        def torch_save(obj, f, *args, **kwargs):
            if not isinstance(f, (str, os.PathLike)) or not self.inside(f):
                return original_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            original_save(obj, buffer, *args, **kwargs)
            with self.open(f, "wb") as fh:
                fh.write(buffer.getvalue())

        monkeypatch.setattr(torch, "save", torch_save)
        return self

    def inside(self, path) -> bool:
        return str(Path(os.fspath(path)).resolve()).startswith(self.folder + os.sep)

    def spend(self, nbytes: int) -> None:
        if self.used + nbytes > self.free:
            self.used = self.free
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.used += nbytes

    def open(self, file, mode="r", *args, **kwargs):
        handle = self._open(file, mode, *args, **kwargs)
        writing = any(c in mode for c in "wax+")
        if writing and isinstance(file, (str, os.PathLike)) and self.inside(file):
            return _LimitedFile(handle, self)
        return handle

    def posix_fallocate(self, fd: int, offset: int, length: int) -> None:
        self.spend(length)
        if self._fallocate is not None:
            self._fallocate(fd, offset, length)


class _LimitedFile:
    """A file object whose writes draw on a SimulatedDisk's free bytes."""

    def __init__(self, handle, disk: SimulatedDisk):
        self._handle = handle
        self._disk = disk

    def write(self, data):
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        room = self._disk.free - self._disk.used
        if size > room:
            if room > 0:
                self._handle.write(data[:room] if isinstance(data, str) else memoryview(data).cast("B")[:room])
            self._disk.spend(size)  # raises ENOSPC
        self._disk.used += size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __iter__(self):
        return iter(self._handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()
