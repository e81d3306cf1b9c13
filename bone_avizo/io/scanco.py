"""Scanco .ISQ volumes (Scanco µCT/XtremeCT scanners): a 512-byte header block and int16 data, memory-mapped.

Header layout (little-endian int32 unless noted; the layout ITK's Scanco reader and BoneJ's ISQ reader
decode): bytes 0-15 ``CTDATA-HEADER_V1``; 44/48/52 dimensions x, y, z in pixels; 56/60/64 the scanned
extent x, y, z in µm; 88 ``mu_scaling``; 128-167 the patient/sample name (ASCII); 508 the data offset in
512-byte blocks after the first. The data start at ``(offset + 1) * 512``: int16, x fastest, i.e. (z, y, x)
in C order. Voxel size (z, y, x) = extent / dimensions (µm, returned in mm). Values are kept as stored
(linear attenuation x ``mu_scaling``, no density calibration applied).

Scanco .AIM volumes (packed or run-length compressed data, two header versions) are read whole through
ITK's Scanco reader (``itk-ioscanco``, the optional extra ``[scanco]``: about 111 MB of ITK wheels).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from bone_avizo.errors import ConfigError, CorruptFileError, FormatError
from bone_avizo.io.base import ArraySource
from bone_avizo.io.medical import ReadOnlyWriter
from bone_avizo.io.npy import MappedSource, require_file
from bone_avizo.io.registry import Format
from bone_avizo.volume import Volume, VolumeInfo

ISQ_MAGIC = b"CTDATA-HEADER_V1"
BLOCK = 512


def _read_isq_header(path: Path) -> dict:
    """The fields of an ISQ header: dims (x, y, z) in pixels, extent_um (x, y, z), mu_scaling, name, data
    offset in bytes."""
    with open(require_file(path), "rb") as fh:
        block = fh.read(BLOCK)
    if len(block) < BLOCK or not block.startswith(ISQ_MAGIC):
        raise FormatError(f"{path} is not a Scanco ISQ file (it does not start with {ISQ_MAGIC.decode()}); check "
                          "the file or its extension")
    dims = struct.unpack_from("<3i", block, 44)
    extent = struct.unpack_from("<3i", block, 56)
    mu_scaling, = struct.unpack_from("<i", block, 88)
    name = block[128:168].split(b"\0")[0].decode("latin-1").strip()
    offset_blocks, = struct.unpack_from("<i", block, 508)
    if min(dims) < 1 or min(extent) < 1 or offset_blocks < 0:
        raise CorruptFileError(f"{path} has a damaged ISQ header (dimensions {dims}, extent {extent} um, data "
                               f"offset {offset_blocks}); re-export it")
    return {"dims": dims, "extent_um": extent, "mu_scaling": mu_scaling, "name": name,
            "data_offset": (offset_blocks + 1) * BLOCK}


class IsqSource(MappedSource):
    """A memory-mapped Scanco ISQ volume (z, y, x), int16 as stored."""

    def __init__(self, path: str | os.PathLike):
        self.path = require_file(Path(path))
        self._remember(self.path)
        header = _read_isq_header(self.path)
        nx, ny, nz = header["dims"]
        voxel_um = [e / n for e, n in zip(header["extent_um"][::-1], (nz, ny, nx))]
        needed = header["data_offset"] + nx * ny * nz * 2
        size = self.path.stat().st_size
        if size < needed:
            raise CorruptFileError(f"{self.path} is truncated: its {nx}x{ny}x{nz} int16 data need {needed} bytes, "
                                   f"the file has {size}; copy it again")
        self.info = VolumeInfo((nz, ny, nx), np.dtype(np.int16), tuple(v * 1e-3 for v in voxel_um), (0, 0, 0),
                               header["name"] or self.path.stem)
        self.mu_scaling = header["mu_scaling"]
        self._array = np.memmap(self.path, dtype="<i2", mode="r", offset=header["data_offset"], shape=(nz, ny, nx))


def _itk():
    """ITK with its Scanco reader, or a one-line error saying what to install."""
    try:
        import itk
        itk.ScancoImageIO  # noqa: B018 - present (loaded lazily) when itk-ioscanco is installed
    except (ImportError, AttributeError):
        raise ConfigError('reading Scanco .aim files needs ITK\'s Scanco reader: pip install "bone-avizo[scanco]" '
                          "(itk-ioscanco, about 111 MB), or export the scan as ISQ or DICOM on the scanner") from None
    return itk


class AimSource(ArraySource):
    """A Scanco AIM volume (z, y, x), read whole (AIM data are packed or compressed) by ITK's Scanco reader;
    voxel size and origin as ITK reports them (mm)."""

    def __init__(self, path: str | os.PathLike):
        path = require_file(Path(path))
        itk = _itk()
        try:
            image = itk.imread(str(path))
        except Exception as exc:  # noqa: BLE001 - ITK raises RuntimeError and others for a damaged file
            raise CorruptFileError(f"{path} cannot be read as a Scanco AIM file ({str(exc).splitlines()[0]}); check "
                                   "the file or export it again") from None
        array = np.ascontiguousarray(itk.array_from_image(image))
        if array.ndim != 3:
            raise FormatError(f"{path} holds a {array.ndim}-D image of shape {array.shape}, not a 3-D volume (z, y, x)")
        spacing = tuple(float(v) for v in image.GetSpacing())[::-1]
        origin = tuple(float(v) for v in image.GetOrigin())[::-1]
        super().__init__(Volume(array, voxel_size=spacing, origin=origin, name=path.stem))


FORMATS = {
    "isq": Format("isq", (".isq",), IsqSource, ReadOnlyWriter, "Scanco ISQ (read only): int16, memory-mapped"),
    "aim": Format("aim", (".aim",), AimSource, ReadOnlyWriter,
                  "Scanco AIM (read only, whole): through ITK's Scanco reader, extra [scanco]"),
}
