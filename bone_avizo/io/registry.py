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
    "image-folder": "bone_avizo.io.image_folder",
    "dicom": "bone_avizo.io.dicom",
    "nifti": "bone_avizo.io.nifti",
    "nrrd": "bone_avizo.io.nrrd_format",
    "seg-nrrd": "bone_avizo.io.nrrd_format",
    "isq": "bone_avizo.io.scanco",
    "aim": "bone_avizo.io.scanco",
}

# what a folder of slices holds -> its format (the first kind found wins, in this order)
FOLDER_SUFFIXES = {
    "tiff-folder": (".tif", ".tiff"),
    "image-folder": (".png", ".bmp", ".jpg", ".jpeg"),
    "dicom": (".dcm", ".dicom", ".ima"),
}
DICOM_SNIFF_FILES = 16  # files without extension looked at for the DICOM magic
DICOM_MAGIC_OFFSET = 128  # 'DICM' follows a 128-byte preamble in DICOM files (often without extension)


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
    for double in (".ome.tiff", ".ome.tif", ".ome.zarr", ".nii.gz", ".seg.nrrd"):
        if name.endswith(double):
            return double
    return path.suffix.lower()


def detect_format(path: str | Path, *, for_writing: bool = False) -> str:
    """The format name of ``path`` from its extension, or of a folder from the slices it holds."""
    path = Path(path)
    suffix = _suffix(path)
    extensions = all_extensions()
    if suffix in extensions:
        return extensions[suffix]
    if path.is_dir():
        return _detect_folder(path)
    if for_writing and suffix == "":
        return "tiff-folder"
    if not for_writing and not path.exists():
        raise InputFileError(f"{path} does not exist; check the path")
    raise FormatError(f"cannot tell the format of {path} from its extension {suffix!r}; use one of "
                      f"{', '.join(sorted(extensions))}, a folder of TIFF/PNG/BMP/JPEG/DICOM slices, or name the "
                      "format")


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(DICOM_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _detect_folder(path: Path) -> str:
    """The format of a folder of slices from the files it holds: TIFF, PNG/BMP/JPEG or DICOM (files named
    .dcm, or files without extension starting like DICOM); 'tiff-folder' when it holds none of them."""
    files = [p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()]
    suffixes = {p.suffix.lower() for p in files}
    for name, known in FOLDER_SUFFIXES.items():
        if suffixes & set(known):
            return name
    unnamed = sorted(p for p in files if p.suffix == "" or p.suffix[1:].isdigit())
    if any(_is_dicom(p) for p in unnamed[:DICOM_SNIFF_FILES]):
        return "dicom"
    return "tiff-folder"
