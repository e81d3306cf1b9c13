"""The cache of ONNX exports that the onnxruntime backend runs (one file per network and channel count).

Where: ``$BONE_AVIZO_CACHE/onnx`` (default ``~/.cache/bone_avizo/onnx``). Each export is named by a
SHA-256 of the network's weights and of the code of its modules' forward passes (a changed network
with the same weights, e.g. after an upgrade, is exported again), so a model is exported once and
reused by every later prediction.
Bound: ``$BONE_AVIZO_CACHE_MB`` megabytes (default :data:`DEFAULT_LIMIT_MB`); after each export
the least recently used files are deleted until the cache fits (the export in use is always kept).
"Used" is the file's access time, which each use sets explicitly (file systems mounted with noatime
or relatime do not keep it up to date themselves).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bone_avizo.errors import ConfigError

if TYPE_CHECKING:  # annotations only: `bone-avizo cache` and --help do not import torch
    import torch

log = logging.getLogger(__name__)

CACHE_VARIABLE = "BONE_AVIZO_CACHE"
LIMIT_VARIABLE = "BONE_AVIZO_CACHE_MB"
DEFAULT_LIMIT_MB = 1024.0
SUFFIXES = (".onnx", ".onnx.partial")


@dataclass(frozen=True)
class CacheEntry:
    """One cached file: path, size in bytes, last use (seconds since the epoch)."""

    path: Path
    size: int
    last_used: float


def cache_folder() -> Path:
    """Where exported ONNX models are cached: $BONE_AVIZO_CACHE/onnx or ~/.cache/bone_avizo/onnx."""
    root = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "bone_avizo"
    return Path(root) / "onnx"


def cache_limit_bytes() -> int:
    """The size cap from $BONE_AVIZO_CACHE_MB (megabytes, default 1024); ConfigError when malformed."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return int(DEFAULT_LIMIT_MB * 1e6)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"environment variable {LIMIT_VARIABLE}={text!r} is not a size in megabytes; "
                          f"give a number >= 0 (e.g. {LIMIT_VARIABLE}=500), or unset it for {DEFAULT_LIMIT_MB:g}")
    return int(value * 1e6)


def cache_entries(folder: Path | None = None) -> list[CacheEntry]:
    """The cached files (exports and leftovers of interrupted exports), most recently used first."""
    folder = folder or cache_folder()
    if not folder.is_dir():
        return []
    entries = []
    for path in folder.iterdir():
        if path.is_file() and path.name.endswith(SUFFIXES):
            stat = path.stat()
            entries.append(CacheEntry(path, stat.st_size, stat.st_atime))
    return sorted(entries, key=lambda e: e.last_used, reverse=True)


def clear_cache(folder: Path | None = None) -> tuple[int, int]:
    """Delete every cached file; returns (files, bytes) removed."""
    removed = [_remove(e) for e in cache_entries(folder)]
    return sum(1 for size in removed if size), sum(removed)


def _remove(entry: CacheEntry) -> int:
    try:
        entry.path.unlink()
    except FileNotFoundError:  # another process removed it
        return 0
    return entry.size


def evict(keep: Path, *, limit: int | None = None) -> int:
    """Delete least recently used files (never ``keep``) until the cache fits ``limit`` bytes; returns
    the bytes freed."""
    limit = cache_limit_bytes() if limit is None else limit
    entries = cache_entries(keep.parent)
    total = sum(e.size for e in entries)
    freed = 0
    for entry in reversed(entries):  # least recently used first
        if total - freed <= limit:
            break
        if entry.path != keep:
            freed += _remove(entry)
    if freed:
        log.info("ONNX cache %s: removed %.0f MB of least recently used exports (limit %.0f MB, %s)",
                 keep.parent, freed / 1e6, limit / 1e6, LIMIT_VARIABLE)
    return freed


def _mark_used(path: Path) -> None:
    """Record a use of ``path``: its access time becomes now (its modification time is kept)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError as exc:  # a read-only cache still works, only its order is not updated
        log.debug("cannot record the use of %s: %s", path, exc)


def weights_digest(module: torch.nn.Module) -> str:
    """A SHA-256 of the module's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def network_digest(module: torch.nn.Module) -> str:
    """A SHA-256 of what the export records: the weights (:func:`weights_digest`) and, for each class of
    module in the network, its name and the bytecode of its ``forward``."""
    digest = hashlib.sha256(weights_digest(module).encode())
    for cls in sorted({type(m) for m in module.modules()}, key=lambda c: (c.__module__, c.__qualname__)):
        digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        code = getattr(getattr(cls, "forward", None), "__code__", None)
        if code is not None:
            digest.update(code.co_code)
            digest.update(repr((code.co_names, code.co_varnames)).encode())
    return digest.hexdigest()[:32]


def cached_onnx(module: torch.nn.Module, in_channels: int) -> Path:
    """The ONNX export of ``module`` from the cache, exported on first use (then the cache is bounded)."""
    from bone_avizo.models.onnx_export import export_onnx

    if getattr(module, "onnx_path", None) is not None:  # an exported file given as the model: run it as it is
        return Path(module.onnx_path)
    limit = cache_limit_bytes()
    path = cache_folder() / f"{network_digest(module)}_{in_channels}ch.onnx"
    if path.is_file():
        _mark_used(path)
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.mkdtemp(prefix="bone_avizo_onnx_")) / path.name
    log.info("exporting the model to ONNX: %s (a cache, see `bone-avizo cache list`)", path)
    export_onnx(module, path, in_channels=in_channels, overwrite=True)
    evict(path, limit=limit)
    return path
