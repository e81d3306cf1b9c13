"""Volume input/output: lazy sources and atomic writers for every supported format.

``open_volume(path)`` returns a :class:`VolumeSource` that reads slabs on demand;
``load_volume``/``save_volume`` move whole :class:`Volume` objects; ``create_writer`` streams
slabs into any format through a temporary name that is renamed on commit.
"""
from __future__ import annotations

import os
from pathlib import Path

from bone_avizo.errors import ConfigError, InputFileError
from bone_avizo.io.base import ArraySource, VolumeSource, VolumeWriter
from bone_avizo.io.registry import FORMAT_MODULES, Format, detect_format, get_format
from bone_avizo.io.threads import io_threads
from bone_avizo.volume import Volume, VolumeInfo

__all__ = ["ArraySource", "VolumeSource", "VolumeWriter", "Format", "FORMAT_MODULES", "open_volume",
           "load_volume", "save_volume", "create_writer", "detect_format", "get_format"]


def open_volume(path: str | os.PathLike, *, format: str | None = None, **options) -> VolumeSource:
    """Open ``path`` lazily. ``format`` overrides detection; options are format-specific
    (e.g. ``dataset=`` for HDF5, ``shape=``/``dtype=`` for raw)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist; check the path")
    io_threads()  # a bad BONE_AVIZO_IO_THREADS fails here, before any work
    fmt = get_format(format or detect_format(path))
    _check_options(fmt.open, options, f"reading {fmt.name}")
    return fmt.open(path, **options)


def _check_options(function, options: dict, what: str) -> None:
    """Refuse keyword options ``function`` does not take, naming the ones it does."""
    import inspect

    params = inspect.signature(function).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [name for name, p in params.items() if p.kind == p.KEYWORD_ONLY or
             (p.kind == p.POSITIONAL_OR_KEYWORD and name not in ("path", "self"))]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"option(s) {', '.join(unknown)} are not valid for {what}; valid options: "
                          f"{', '.join(valid) or 'none'}")


def load_volume(path: str | os.PathLike, **options) -> Volume:
    """Read a whole volume into memory."""
    with open_volume(path, **options) as source:
        return source.to_volume()


def create_writer(path: str | os.PathLike, info: VolumeInfo, *, overwrite: bool = False,
                  resume: bool = False, format: str | None = None, **options) -> VolumeWriter:
    """A writer for ``path`` in the format of its extension (or ``format``)."""
    io_threads()  # a bad BONE_AVIZO_IO_THREADS fails here, before any output exists
    fmt = get_format(format or detect_format(path, for_writing=True))
    _check_options(fmt.writer.__init__, options, f"writing {fmt.name}")
    return fmt.writer(path, info, overwrite=overwrite, resume=resume, **options)


def save_volume(volume: Volume, path: str | os.PathLike, *, overwrite: bool = False,
                format: str | None = None, **options) -> Path:
    """Write a whole volume atomically; returns the final path."""
    with create_writer(path, volume.info, overwrite=overwrite, format=format, **options) as writer:
        writer.write_slab(0, volume.array)
    return writer.path
