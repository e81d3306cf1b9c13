"""The format registry: one entry per file format, found by name or by extension."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bone_avizo.errors import FormatError, InputFileError
from bone_avizo.io.base import VolumeSource, VolumeWriter


@dataclass(frozen=True)
class Format:
    """A file format: how to open a lazy source and which writer class writes it.

    ``open(path, **options) -> VolumeSource``; ``writer(path, info, overwrite=, resume=, **options)``.
    """

    name: str
    extensions: tuple[str, ...]
    open: Callable[..., VolumeSource]
    writer: type[VolumeWriter]
    description: str
    is_folder: bool = False


# format name -> module defining FORMAT; imported on first use so optional extras stay optional
FORMAT_MODULES = {
    "tiff": "bone_avizo.io.tiff",
    "tiff-folder": "bone_avizo.io.tiff",
    "hdf5": "bone_avizo.io.hdf5",
    "zarr": "bone_avizo.io.zarr_format",
    "npy": "bone_avizo.io.npy",
    "raw": "bone_avizo.io.raw",
    "mhd": "bone_avizo.io.raw",
    "am": "bone_avizo.io.amira",
}


def get_format(name: str) -> Format:
    """The Format called ``name``; the error lists valid names."""
    if name not in FORMAT_MODULES:
        raise FormatError(f"unknown format {name!r}; valid formats: {', '.join(FORMAT_MODULES)}")
    module = importlib.import_module(FORMAT_MODULES[name])
    return module.FORMATS[name]


def all_extensions() -> dict[str, str]:
    """Map each known extension (lower case, with dot) to its format name (formats whose module
    cannot be imported here are left out)."""
    extensions = {}
    for name in FORMAT_MODULES:
        try:
            fmt = get_format(name)
        except ImportError:
            continue
        extensions.update({ext: fmt.name for ext in fmt.extensions})
    return extensions


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for double in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.endswith(double):
            return double
    return path.suffix.lower()


def detect_format(path: str | Path, *, for_writing: bool = False) -> str:
    """The format name of ``path`` from its extension, or 'tiff-folder' for a folder of TIFFs."""
    path = Path(path)
    suffix = _suffix(path)
    extensions = all_extensions()
    if suffix in extensions:
        return extensions[suffix]
    if path.is_dir() or (for_writing and suffix == ""):
        return "tiff-folder"
    if not for_writing and not path.exists():
        raise InputFileError(f"{path} does not exist; check the path")
    raise FormatError(f"cannot tell the format of {path} from its extension {suffix!r}; use one of "
                      f"{', '.join(sorted(extensions))}, a folder of TIFF slices, or name the format")
