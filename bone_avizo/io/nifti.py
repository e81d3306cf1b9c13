"""NIfTI-1/NIfTI-2 volumes (.nii, .nii.gz) through nibabel.

NIfTI stores axes i, j, k (i fastest, usually x); arrays here are (z, y, x) = (k, j, i). The voxel size
is the length of each axis' column of the image affine (sform, else qform, else pixdim), in the header's
spatial unit (mm, micron or metre; unknown: mm); the origin is the affine's translation along the world
axis each array axis follows. An oblique affine raises FormatError. Scaled data (``scl_slope``,
``scl_inter``) are read scaled: int16 when the scaling is whole numbers and fits, else float32.

``.nii`` is read slab by slab (nibabel seeks to the bytes it needs). ``.nii.gz`` has no random access:
the first read decompresses the whole volume into memory, once (a warning above
``GZIP_WARN_BYTES``); gunzip the file to read it slab by slab.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from bone_avizo.errors import CorruptFileError, FormatError, InvalidVolumeError, UnsupportedDtypeError
from bone_avizo.io.medical import ScratchWriter, axis_aligned, read_stream_into, rescaled_dtype
from bone_avizo.io.npy import ReopeningSource, check_dtype, native_dtype, require_file, to_mm, volume_attrs
from bone_avizo.io.registry import Format
from bone_avizo.volume import VolumeInfo

try:
    import nibabel
except ImportError:  # pragma: no cover - nibabel is a default dependency
    nibabel = None

log = logging.getLogger(__name__)

GZIP_WARN_BYTES = 1 << 30  # a .nii.gz larger than this (uncompressed) is worth a warning: it is read whole
COMMENT_CODE = 6  # NIfTI extension code "comment": holds our JSON metadata (class names, name)
META_KEY = "bone_avizo"
NIFTI_UNITS = {"mm": "mm", "micron": "um", "meter": "m", "unknown": "mm"}


def _require_nibabel() -> None:
    if nibabel is None:
        raise FormatError("reading and writing NIfTI needs the nibabel package: pip install nibabel")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _our_metadata(header) -> dict:
    """The metadata this module stores in a NIfTI comment extension, or {}."""
    for extension in getattr(header, "extensions", ()):
        if extension.get_code() != COMMENT_CODE:
            continue
        try:
            value = json.loads(bytes(extension.get_content()).decode("utf-8").rstrip("\0"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and isinstance(value.get(META_KEY), dict):
            return value[META_KEY]
    return {}


def _exact(extra: dict, voxel, origin) -> tuple:
    """Our metadata's voxel size and origin (full float64 precision) when they agree with the header's
    (single precision in NIfTI-1), else the header's."""
    try:
        mine = [tuple(float(v) for v in extra[key]) for key in ("voxel_size", "origin")]
    except (KeyError, TypeError, ValueError):
        return voxel, origin
    if extra.get("unit", "mm") == "mm" and all(len(m) == 3 for m in mine) and \
            np.allclose(mine[0], voxel, rtol=1e-6, atol=1e-9) and np.allclose(mine[1], origin, rtol=1e-6, atol=1e-6):
        return mine[0], mine[1]
    return voxel, origin


class NiftiSource(ReopeningSource):
    """A NIfTI volume (z, y, x): ``.nii`` read slab by slab, ``.nii.gz`` decompressed whole on first read."""

    def __init__(self, path: str | os.PathLike):
        _require_nibabel()
        self.path = require_file(Path(path))
        self._remember(self.path)
        try:
            self._image = nibabel.load(str(self.path))
        except Exception as exc:  # nibabel raises ImageFileError, HeaderDataError, EOFError, OSError...
            raise CorruptFileError(f"{self.path} is not a readable NIfTI file ({exc}); check or re-export "
                                   "it") from exc
        self.gzipped = self.path.name.lower().endswith(".gz")
        self._whole = None
        self._lock = threading.Lock()
        self.info = self._info()
        if self.gzipped and self.info.nbytes > GZIP_WARN_BYTES:
            log.warning("%s is gzip-compressed (%.1f GB uncompressed): gzip has no random access, so the first "
                        "read decompresses the whole volume into memory; gunzip it to .nii for slab-wise reading",
                        self.path, self.info.nbytes / 1e9)

    def _info(self) -> VolumeInfo:
        where = str(self.path)
        shape = self._image.shape
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) != 3 or 0 in shape:
            raise InvalidVolumeError(f"{where} holds an image of shape {self._image.shape} (i, j, k, ...), not a "
                                     "3-D volume; save a single 3-D volume")
        self._ijk = shape
        header = self._image.header
        proxy = self._image.dataobj
        stored = native_dtype(header.get_data_dtype(), where=where)
        slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
        self._dtype = rescaled_dtype(stored, [slope], [inter])
        affine = self._image.affine
        spacing, origin = axis_aligned(affine[:3, :3].T, affine[:3, 3], where=where)
        unit = NIFTI_UNITS.get(header.get_xyzt_units()[0], "mm")
        voxel, unit_out = to_mm(spacing[::-1], unit, where=where)
        origin_mm, _ = to_mm(origin[::-1], unit, where=where)
        extra = _our_metadata(header)
        voxel, origin_mm = _exact(extra, voxel, origin_mm)
        names = extra.get("class_names")
        return VolumeInfo(shape[::-1], self._dtype, voxel, origin_mm, str(extra.get("name") or _stem(self.path)),
                          tuple(names) if names else None, unit_out)

    def _read(self, z: slice, y: slice, x: slice) -> np.ndarray:
        """The region [z, y, x] as (z, y, x), converted to the volume's dtype."""
        if self.gzipped:
            with self._lock:
                if self._whole is None:
                    self._whole = self._load_all()
            return np.array(self._whole[z, y, x])
        index = (x, y, z) + (0,) * (len(self._image.shape) - 3)
        try:
            block = np.asarray(self._image.dataobj[index])
        except Exception as exc:  # truncated data: nibabel/numpy raise ValueError, OSError, EOFError
            raise CorruptFileError(f"{self.path} is truncated or damaged ({exc}); re-export it") from exc
        return np.ascontiguousarray(block.T, dtype=self._dtype)

    def _load_all(self) -> np.ndarray:
        """The whole (z, y, x) volume of a .nii.gz, decompressed straight into the array (then scaled)."""
        header = self._image.header
        with gzip.open(self.path, "rb") as stream:
            try:
                stream.seek(int(self._image.dataobj.offset))
            except (OSError, EOFError) as exc:
                raise CorruptFileError(f"{self.path} is truncated or damaged ({exc}); re-export it") from exc
            data = read_stream_into(stream, header.get_data_dtype(), self.shape, where=str(self.path))
        slope, inter = self._image.dataobj.slope, self._image.dataobj.inter
        if slope != 1 or inter != 0:
            data = data * slope + inter
        return data.astype(self._dtype, copy=False)

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        full = slice(None)
        return self._read(slice(z0, z1), full, full)

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return self._read(z, y, x)

    def close(self) -> None:
        self._whole = None


def _nifti_image(array: np.ndarray, info: VolumeInfo):
    """A nibabel Nifti1Image of the (z, y, x) ``array`` (a view as (x, y, z)) with ``info``'s geometry and
    our metadata (name, class names) in a comment extension."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(info.voxel_size[::-1])
    affine[:3, 3] = info.origin[::-1]
    image = nibabel.Nifti1Image(array.T, affine, dtype=info.dtype)
    header = image.header
    header.set_xyzt_units("mm" if info.unit == "mm" else "unknown")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    text = json.dumps({META_KEY: volume_attrs(info)}).encode("utf-8")
    header.extensions.append(nibabel.nifti1.Nifti1Extension(COMMENT_CODE, text))
    return image


class NiftiWriter(ScratchWriter):
    """Writes NIfTI-1 ``.nii`` or ``.nii.gz`` (gzip level ``compression_level``, default 1): voxel size and
    origin in the sform/qform (mm), name and class names in a comment extension. Slabs collect in a scratch
    file; commit writes the NIfTI file slice by slice."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 compression_level: int = 1):
        _require_nibabel()
        dtype = check_dtype(info.dtype, fmt="NIfTI")
        if dtype.kind == "b":
            info = info.with_(dtype=np.dtype(np.uint8))
        else:
            try:
                nibabel.Nifti1Header().set_data_dtype(dtype)
            except Exception as exc:  # nibabel.spatialimages.HeaderDataError
                raise UnsupportedDtypeError(f"NIfTI cannot store data type {dtype}; cast the volume to float32 "
                                            "first") from exc
        self.gzipped = Path(path).name.lower().endswith(".gz")
        self.compression_level = int(compression_level)
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def _encode(self, array: np.ndarray, path: Path) -> None:
        image = _nifti_image(array, self.info)
        with open(path, "wb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=self.compression_level, mtime=0) \
                if self.gzipped else raw
            try:
                image.to_file_map({"image": nibabel.FileHolder(fileobj=stream)})
            finally:
                if stream is not raw:
                    stream.close()


FORMATS = {
    "nifti": Format("nifti", (".nii", ".nii.gz"), NiftiSource, NiftiWriter,
                    "NIfTI-1/2 (.nii slab by slab, .nii.gz read whole), voxel size and origin from the affine"),
}
