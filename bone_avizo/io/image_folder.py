"""Folders of PNG, BMP or JPEG slices (Bruker SkyScan NRecon / CTAn exports and the like), read with Pillow.

Arrays are (z, y, x): file i of the naturally sorted folder (the TIFF folder's sort and checks) is slice
z=i. Voxel size (z, y, x) in mm comes from, in order: the ``bone_avizo.json`` this module writes beside
the slices, a NRecon/CTAn ``.log`` (or ``.txt``) in the folder (``Pixel Size (um)=...``, isotropic),
else 1 (with a warning). SkyScan's slice names ``<prefix>_rec00000123.bmp`` are recognised; the spy
and preview images beside them (``*_spr.bmp``, ``*preview*``, ``*thumb*``) are skipped.
Reads open one file per slice they cover. Writing makes 8- or 16-bit PNG slices.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np

from bone_avizo.errors import ConfigError, CorruptFileError, FormatError, InvalidVolumeError, UnsupportedDtypeError
from bone_avizo.io.base import VolumeWriter
from bone_avizo.io.npy import native_dtype, volume_attrs, write_json_atomic
from bone_avizo.io.registry import Format
from bone_avizo.io.tiff import TiffFolderSource, list_slices
from bone_avizo.volume import VolumeInfo

try:
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow is a default dependency
    Image = None

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
SIDECAR = "bone_avizo.json"
SKYSCAN_SLICE = re.compile(r"_rec\d+$", re.IGNORECASE)
NOT_A_SLICE = re.compile(r"(^|[_\-. ])(spr|spy|preview|thumb|thumbnail)([_\-. ]|$)", re.IGNORECASE)
PIXEL_SIZE = re.compile(r"^\s*pixel\s+size\s*\(um\)\s*=\s*([0-9.eE+-]+)", re.IGNORECASE | re.MULTILINE)
# Pillow mode -> the dtype of the array it gives (colour modes are reduced to one grey channel)
MODE_DTYPES = {"1": np.uint8, "L": np.uint8, "P": np.uint8, "LA": np.uint8, "RGB": np.uint8, "RGBA": np.uint8,
               "I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16, "I": np.int32, "F": np.float32}


def _require_pillow() -> None:
    if Image is None:
        raise FormatError("reading and writing PNG/BMP/JPEG slices needs the Pillow package: pip install Pillow")


def _slice_files(folder: Path) -> list[Path]:
    """The slice images of ``folder`` in natural order: SkyScan ``*_rec<digits>`` files when present,
    else every image except spy/preview/thumbnail images; one file type (the most common) only."""
    images = list_slices(folder, IMAGE_SUFFIXES)
    skyscan = [p for p in images if SKYSCAN_SLICE.search(p.stem)]
    images = skyscan or [p for p in images if not NOT_A_SLICE.search(p.stem)]
    if not images:
        return []
    counts = Counter(p.suffix.lower() for p in images)
    suffix = max(counts, key=lambda s: (counts[s], -IMAGE_SUFFIXES.index(s) if s in IMAGE_SUFFIXES else 0))
    return [p for p in images if p.suffix.lower() == suffix]


def _log_pixel_size_mm(folder: Path) -> float | None:
    """The isotropic voxel size (mm) from a NRecon/CTAn ``.log`` or ``.txt`` in ``folder``
    (``Pixel Size (um)=...``), or None. Reconstruction logs are preferred to others."""
    logs = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".log", ".txt")), key=lambda p: p.name)
    found = []
    for path in logs:
        try:
            text = path.read_text(encoding="latin-1")
        except OSError:
            continue
        match = PIXEL_SIZE.search(text)
        if match:
            found.append((0 if "[reconstruction]" in text.lower() else 1, path, float(match.group(1))))
    if not found:
        return None
    _, path, micrometres = min(found, key=lambda f: f[0])
    if not micrometres > 0:
        raise CorruptFileError(f"{path} gives Pixel Size (um)={micrometres}; fix the log or remove it")
    log.info("voxel size %.6g um from %s", micrometres, path)
    return micrometres * 1e-3


class ImageFolderSource(TiffFolderSource):
    """A folder of PNG/BMP/JPEG slices (z, y, x), read file by file with Pillow."""

    def __init__(self, path):
        _require_pillow()
        path = Path(path)
        if path.is_file():
            raise InvalidVolumeError(f"{path} is one 2-D image; give the folder holding all the slices "
                                     f"({path.parent})")
        super().__init__(path)

    def _list_files(self) -> list[Path]:
        files = _slice_files(self.path)
        if not files:
            raise FormatError(f"folder {self.path} holds no .png/.bmp/.jpg slices; give a folder of image slices")
        return files

    def _header(self, path: Path) -> tuple[tuple[int, int], np.dtype]:
        with _open_image(path) as image:
            if image.mode not in MODE_DTYPES:
                raise InvalidVolumeError(f"{path} has Pillow image mode {image.mode!r}, which is not supported; "
                                         "save grey-value slices (8 or 16 bit)")
            return (image.height, image.width), np.dtype(MODE_DTYPES[image.mode])

    def _attrs(self) -> dict:
        sidecar = self.path / SIDECAR
        if sidecar.is_file():
            try:
                return json.loads(sidecar.read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:
                raise CorruptFileError(f"metadata file {sidecar} is not valid JSON ({exc}); fix or delete it") from exc
        size = _log_pixel_size_mm(self.path)
        if size is None:
            log.warning("%s has no voxel size (no NRecon/CTAn .log with 'Pixel Size (um)'); using 1 x 1 x 1",
                        self.path)
            return {}
        return {"voxel_size": [size, size, size], "unit": "mm"}

    def _read_file(self, path: Path) -> np.ndarray:
        with _open_image(path) as image:
            try:
                return grey(image, path)
            except OSError as exc:
                raise CorruptFileError(f"{path}: the slice cannot be read ({exc}); the file is damaged") from exc


def _open_image(path: Path):
    try:
        return Image.open(path)
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise CorruptFileError(f"{path} is not a readable image ({exc}); re-export the slice") from exc


def grey(image, path: Path) -> np.ndarray:
    """A Pillow image as a (y, x) grey-value array; a colour image must be grey (R = G = B)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGB")
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        array = np.asarray(image)
        return array.astype(MODE_DTYPES[mode]) if mode == "1" else array.astype(MODE_DTYPES[mode], copy=False)
    array = np.asarray(image)
    if mode == "LA":
        return np.ascontiguousarray(array[..., 0])
    rgb = array[..., :3]
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise InvalidVolumeError(f"{path} is a colour image; save grey-value slices (8 or 16 bit)")
    return np.ascontiguousarray(rgb[..., 0])


class PngFolderWriter(VolumeWriter):
    """Writes a folder of PNG slices ``<prefix>_00000.png``... (8-bit for uint8/bool, 16-bit for uint16) into
    ``<folder>.partial/``, with ``bone_avizo.json`` (voxel size, origin, name, class names) and, for a
    voxel size equal in y and x, a NRecon-style ``<prefix>.log`` (``Pixel Size (um)=``) other tools read.
    Option ``prefix`` (default: the folder's name without extension)."""

    def __init__(self, path, info: VolumeInfo, *, overwrite: bool = False, resume: bool = False,
                 prefix: str | None = None):
        _require_pillow()
        path = Path(path)
        if path.suffix and path.suffix.lower() != ".png":
            raise ConfigError(f"slice folders are written as PNG; name the output {path.with_suffix('.png').name} "
                              "or a folder without extension with format image-folder")
        dtype = native_dtype(info.dtype, where="a volume to write as PNG slices")
        if dtype.kind not in "bu" or dtype.itemsize > 2:
            raise UnsupportedDtypeError(f"PNG slices store 8- or 16-bit unsigned values, not {dtype}; cast the "
                                        "volume to uint8 or uint16 first")
        self.dtype = np.dtype(np.uint16 if dtype.itemsize == 2 else np.uint8)
        self.prefix = prefix or (path.stem if path.suffix else path.name)
        self._digits = max(5, len(str(info.shape[0] - 1)))
        super().__init__(path, info, overwrite=overwrite, resume=resume)

    def slice_name(self, z: int) -> str:
        return f"{self.prefix}_{z:0{self._digits}d}.png"

    def _open(self) -> None:
        self.temp_path.mkdir()

    def _write(self, z0: int, slab: np.ndarray) -> None:
        for i, plane in enumerate(slab.astype(self.dtype, copy=False)):
            Image.fromarray(np.ascontiguousarray(plane)).save(self.temp_path / self.slice_name(z0 + i))

    def _before_commit(self) -> None:
        write_json_atomic(self.temp_path / SIDECAR, volume_attrs(self.info))
        vz, vy, vx = self.info.voxel_size
        if vy == vx and self.info.unit == "mm":
            (self.temp_path / f"{self.prefix}.log").write_text(
                f"[Reconstruction]\nPixel Size (um)={vx * 1e3:.6g}\n", encoding="latin-1")

    def _close(self) -> None:
        """Nothing to flush: each slice file is complete when written."""


FORMATS = {
    "image-folder": Format("image-folder", IMAGE_SUFFIXES, ImageFolderSource, PngFolderWriter,
                           "folder of PNG/BMP/JPEG slices (SkyScan/NRecon/CTAn), voxel size from the .log; "
                           "written as PNG", is_folder=True),
}
