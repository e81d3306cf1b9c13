"""DICOM series (a folder of single-slice files) and enhanced multi-frame files, read with pydicom.

Slices are ordered by geometry, not by file name: by ``ImagePositionPatient`` projected on the slice
normal (the cross product of the ``ImageOrientationPatient`` row and column directions). Arrays are
(z, y, x): z along the normal, y down the columns (``PixelSpacing[0]``), x along a row
(``PixelSpacing[1]``). The z voxel size is the mean distance between neighbouring slice positions
(``SpacingBetweenSlices``/``SliceThickness`` only without positions); the origin (z, y, x) is the first
slice's position projected on the normal, column and row directions, in mm.

Values are ``stored * RescaleSlope + RescaleIntercept`` (per slice or frame): the stored type when there is
no rescaling, int16 when slope and intercept are whole numbers and the stored range fits (CT Hounsfield
units), else float32. A folder holding several series needs ``series=`` (its SeriesInstanceUID, else its
SeriesNumber, else its position 1.. in the listed order). Opening reads every file's header; a slab reads only
the files (or frames) it covers. Compressed transfer syntaxes need a decoder package; the error names it.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bone_avizo.errors import (ConfigError, CorruptFileError, FormatError, InvalidVolumeError,
                               ShapeMismatchError)
from bone_avizo.io.medical import ReadOnlyWriter, rescaled_dtype
from bone_avizo.io.npy import ReopeningSource, require_file
from bone_avizo.io.registry import Format
from bone_avizo.io.tiff import natural_key, stream_region
from bone_avizo.volume import VolumeInfo

try:
    import pydicom
    import pydicom.pixels
    from pydicom.errors import InvalidDicomError
except ImportError:  # pragma: no cover - pydicom is a default dependency
    pydicom = None
    InvalidDicomError = Exception

log = logging.getLogger(__name__)

HEADER_TAGS = ["SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "ImagePositionPatient",
               "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing", "Rows", "Columns", "BitsAllocated",
               "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "SamplesPerPixel",
               "NumberOfFrames", "InstanceNumber", "SliceThickness", "SpacingBetweenSlices"]
UNEVEN_SPACING = 0.01  # slice distances differing by more than this fraction of their mean are reported


def _require_pydicom() -> None:
    if pydicom is None:
        raise FormatError("reading DICOM needs the pydicom package: pip install pydicom")


@dataclass
class Plane:
    """One slice of the volume: the file, the frame in it (None: a single-frame file), its position along
    the normal, and its rescaling."""

    path: Path
    frame: int | None
    position: float | None
    slope: float
    intercept: float


def _floats(value, count: int | None = None) -> list[float] | None:
    """A DICOM number or multi-value as floats (None when absent, malformed or not ``count`` long)."""
    if value is None:
        return None
    values = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return numbers if count is None or len(numbers) == count else None


def _read_header(path: Path, tags: list[str] | None = None):
    """The header of one DICOM file (no pixel data; only ``tags`` when given), or None when it is not a
    DICOM image."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return ds if "Rows" in ds and "Columns" in ds else None


def _decoder_error(ds, path: Path) -> FormatError | None:
    """The error for pixel data compressed with a transfer syntax no installed package decodes, or None."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return None
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError:
        return FormatError(f"{path} uses the transfer syntax {syntax.name} ({syntax}), which pydicom cannot "
                           "decode; convert the series to uncompressed DICOM")
    if decoder.is_available:
        return None
    options = []
    for line in decoder.missing_dependencies:
        plugin, _, needs = line.partition(" - requires ")
        packages = [re.split(r"[<>=!]", p.strip())[0] for p in needs.split(" and ")]
        options.append("pip install " + " ".join(p for p in packages if p != "numpy"))
    return FormatError(f"{path} is compressed with {syntax.name}, which needs a decoder package: "
                       f"{' or '.join(options) or 'see the pydicom documentation'}")


def _stored_dtype(ds, path: Path) -> tuple[np.dtype, tuple[int, int]]:
    """The stored pixel type and the range BitsStored allows."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InvalidVolumeError(f"{path} holds colour images ({ds.SamplesPerPixel} samples per pixel); a "
                                 "grey-value series is needed")
    bits = int(ds.get("BitsAllocated", 16))
    stored = int(ds.get("BitsStored", bits))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise FormatError(f"{path} has {bits} bits allocated per pixel, which is not supported")
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    return dtype, (low, high)


def _series_name(ds, default: str) -> str:
    return str(ds.get("SeriesDescription", "") or "").strip() or default


def _normal(orientation: list[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row, column and normal unit vectors from ImageOrientationPatient."""
    if orientation is None:
        return None
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    if not np.linalg.norm(normal) > 0:
        return None
    return row, column, normal / np.linalg.norm(normal)


class DicomSource(ReopeningSource):
    """A DICOM volume (z, y, x) from a folder holding a series of single-slice files, or from one enhanced
    multi-frame file. Option ``series``: which series of a folder holding several."""

    def __init__(self, path: str | os.PathLike, *, series: str | int | None = None):
        _require_pydicom()
        self.path = require_file(Path(path))
        self._remember(self.path, series=series)
        if self.path.is_dir():
            self._open_folder(self.path, series)
        else:
            header = _read_header(self.path)
            if header is None:
                raise FormatError(f"{self.path} is not a DICOM image; check the file or its extension")
            if int(header.get("NumberOfFrames", 1) or 1) > 1:
                self._open_multiframe(header)
            else:  # one slice of a series: read the whole series from its folder
                own = str(header.get("SeriesInstanceUID", ""))
                self._open_folder(self.path.parent, series if series is not None else own)

    # -- a folder of single-slice files ----------------------------------------------------------
    def _open_folder(self, folder: Path, series) -> None:
        files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.name.upper() != "DICOMDIR"), key=lambda p: natural_key(p.name))
        headers = [(p, h) for p in files if (h := _read_header(p, HEADER_TAGS)) is not None]
        if not headers:
            raise FormatError(f"folder {folder} holds no DICOM images; give a folder of DICOM slices")
        groups: dict[str, list] = {}
        for p, h in headers:
            groups.setdefault(str(h.get("SeriesInstanceUID", "")), []).append((p, h))
        chosen = self._choose_series(folder, groups, series)
        if len(chosen) == 1 and int(chosen[0][1].get("NumberOfFrames", 1) or 1) > 1:
            self.path = chosen[0][0]
            self._open_multiframe(pydicom.dcmread(self.path, stop_before_pixels=True))
            return
        first = chosen[0][1]
        planes = [Plane(p, None, None, float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0))
                  for p, h in chosen]
        self._check_same_size(chosen)
        axes = _normal(_floats(first.get("ImageOrientationPatient"), 6))
        positions = [_floats(h.get("ImagePositionPatient"), 3) for _, h in chosen]
        spacing = _floats(first.get("PixelSpacing"), 2) or _floats(first.get("ImagerPixelSpacing"), 2)
        self._finish(first, chosen[0][0], planes, axes, positions, spacing, name=_series_name(first, folder.name))

    def _choose_series(self, folder: Path, groups: dict, series) -> list:
        """The (path, header) pairs of the requested series: ``series`` is a SeriesInstanceUID, else a
        SeriesNumber, else a position 1.. in the listed order; FormatError listing them when unclear."""
        listed = sorted(groups.items(), key=lambda kv: (int(kv[1][0][1].get("SeriesNumber", 0) or 0), kv[0]))
        if series is None:
            if len(listed) == 1:
                return listed[0][1]
            described = "; ".join(f"{i} = SeriesNumber {items[0][1].get('SeriesNumber', '?')} "
                                  f"'{_series_name(items[0][1], '')}' ({len(items)} files, UID {uid})"
                                  for i, (uid, items) in enumerate(listed, 1))
            raise FormatError(f"folder {folder} holds {len(listed)} DICOM series ({described}); choose one with "
                              "series=<number, SeriesNumber or UID>")
        wanted = str(series).strip()
        for uid, items in listed:
            if wanted == uid:
                return items
        matches = [items for uid, items in listed if str(items[0][1].get("SeriesNumber", "")) == wanted]
        if len(matches) == 1:
            return matches[0]
        if wanted.isdigit() and 1 <= int(wanted) <= len(listed):
            return listed[int(wanted) - 1][1]
        raise ConfigError(f"series={series!r} matches none of the {len(listed)} DICOM series in {folder}; give a "
                          "SeriesInstanceUID, a SeriesNumber or a position 1.." + str(len(listed)))

    def _check_same_size(self, chosen: list) -> None:
        path0, first = chosen[0]
        size = (int(first.Rows), int(first.Columns))
        for p, h in chosen[1:]:
            if (int(h.Rows), int(h.Columns)) != size:
                raise ShapeMismatchError(f"slice {p.name} is {int(h.Rows)}x{int(h.Columns)} pixels, but {path0.name} "
                                         f"is {size[0]}x{size[1]}; all slices of a series must have the same size")

    # -- an enhanced multi-frame file ---------------------------------------------------------
    def _open_multiframe(self, ds) -> None:
        frames = int(ds.NumberOfFrames)
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
        per_frame = ds.get("PerFrameFunctionalGroupsSequence", [None] * frames)

        def item(sequence: str, keyword: str, index: int):
            """``keyword`` of frame ``index`` from its functional group ``sequence``, the shared one, or the
            top-level dataset."""
            for source in (per_frame[index] if index < len(per_frame) else None, shared):
                if source is not None and sequence in source and len(source[sequence].value):
                    value = source[sequence][0].get(keyword)
                    if value is not None:
                        return value
            return ds.get(keyword)

        planes, positions = [], []
        for i in range(frames):
            slope = item("PixelValueTransformationSequence", "RescaleSlope", i)
            intercept = item("PixelValueTransformationSequence", "RescaleIntercept", i)
            planes.append(Plane(self.path, i, None, float(slope if slope is not None else 1),
                                float(intercept if intercept is not None else 0)))
            positions.append(_floats(item("PlanePositionSequence", "ImagePositionPatient", i), 3))
        axes = _normal(_floats(item("PlaneOrientationSequence", "ImageOrientationPatient", 0), 6))
        spacing = _floats(item("PixelMeasuresSequence", "PixelSpacing", 0), 2)
        self._finish(ds, self.path, planes, axes, positions, spacing,
                     name=_series_name(ds, self.path.stem))

    # -- geometry, type, info ----------------------------------------------------------------------
    def _finish(self, ds, path: Path, planes: list[Plane], axes, positions, pixel_spacing, *, name: str) -> None:
        if (missing := _decoder_error(ds, path)) is not None:
            raise missing
        stored, stored_range = _stored_dtype(ds, path)
        z_size, origin_z, origin_yx, planes = self._order(ds, planes, axes, positions, path)
        if pixel_spacing is None:
            log.warning("%s has no PixelSpacing; using 1 x 1 mm pixels", path)
            pixel_spacing = [1.0, 1.0]
        self.planes = planes
        dtype = rescaled_dtype(stored, [p.slope for p in planes], [p.intercept for p in planes], stored_range)
        log.info("%s: %d slices, stored %s, values %s (rescale slope/intercept applied)", path, len(planes),
                 stored, dtype)
        self.info = VolumeInfo((len(planes), int(ds.Rows), int(ds.Columns)), dtype,
                               (z_size, float(pixel_spacing[0]), float(pixel_spacing[1])),
                               (origin_z,) + origin_yx, name)

    def _order(self, ds, planes, axes, positions, path: Path):
        """Planes sorted along the slice normal, the z spacing and the origin (z, (y, x))."""
        if axes is None or any(p is None for p in positions):
            log.warning("%s: slices without ImagePositionPatient/ImageOrientationPatient are kept in instance or "
                        "frame order; z spacing from SpacingBetweenSlices or SliceThickness", path)
            z = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
            return abs(z), 0.0, (0.0, 0.0), planes
        row, column, normal = axes
        for plane, position in zip(planes, positions):
            plane.position = float(np.dot(position, normal))
        order = sorted(range(len(planes)), key=lambda i: planes[i].position)
        planes = [planes[i] for i in order]
        steps = np.diff([p.position for p in planes])
        if len(steps) and steps.min() <= 1e-6:
            i = int(np.argmin(steps))
            raise CorruptFileError(f"{planes[i].path.name} and {planes[i + 1].path.name} lie at the same slice "
                                   "position; the folder mixes several acquisitions: keep one")
        z = float(steps.mean()) if len(steps) else float(ds.get("SliceThickness", 0) or 1.0)
        if len(steps) and steps.max() - steps.min() > UNEVEN_SPACING * z:
            log.warning("%s: uneven slice spacing (%.4g..%.4g mm); using the mean %.4g mm", path, steps.min(),
                        steps.max(), z)
        first = np.asarray(positions[order[0]])
        return z, float(np.dot(first, normal)), (float(np.dot(first, column)), float(np.dot(first, row))), planes

    # -- reading ---------------------------------------------------------------------------------
    def _plane(self, z: int) -> np.ndarray:
        plane = self.planes[z]
        try:
            pixels = pydicom.pixels.pixel_array(str(plane.path), index=plane.frame)
        except Exception as exc:  # pydicom raises ValueError, RuntimeError, OSError, decoder errors
            raise CorruptFileError(f"{plane.path}: slice {z} cannot be read ({exc}); the file is damaged") from exc
        pixels = pixels.reshape(self.shape[1:])
        if plane.slope != 1 or plane.intercept != 0:
            pixels = pixels * plane.slope + plane.intercept
        return pixels.astype(self.dtype, copy=False)

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        full = slice(None)
        return stream_region(self._plane, self.info, slice(z0, z1), full, full)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return stream_region(self._plane, self.info, z, y, x)


FORMATS = {
    "dicom": Format("dicom", (".dcm", ".dicom"), DicomSource, ReadOnlyWriter,
                    "DICOM series (folder of single-slice files) or enhanced multi-frame file, ordered by geometry",
                    is_folder=True),
}
