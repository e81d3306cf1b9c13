"""Training scans: pairs of an image volume and a label volume, opened lazily and checked.

A scan is an image volume (z, y, x) and a label volume of the same shape holding integer classes
0..N-1, in any format :func:`bone_avizo.io.open_volume` reads. BONe's layout (one folder of TIFF
slices per scan, with a parallel folder of mask slices) is found by :func:`discover_scan_folders`.

Before any training, :func:`open_scans` checks every pair in one streamed pass over the labels
(shapes match, labels are non-negative integers, the same number of classes in every scan) and
collects per-slice foreground counts along z, y and x for sampling.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from bone_avizo.errors import ConfigError, InputFileError, InvalidVolumeError, LabelError, ShapeMismatchError
from bone_avizo.labels import DEFAULT_MAX_CLASSES, SUPPORTED_CLASSES, not_a_label_volume
from bone_avizo.data.lazy import BoundedSource
from bone_avizo.io.base import VolumeSource

if TYPE_CHECKING:  # normalize imports torch: only where statistics are computed
    from bone_avizo.data.normalize import NormStats

log = logging.getLogger(__name__)

SCAN_FOLDER_ALIAS = "_Scan"  # a folder with this name takes its parent's name (BONe's layout)
PATCH_MULTIPLE = 32
PASS_VOXELS = 1 << 22  # voxels per slab of the checking pass (bounds its temporary memory)
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class ScanSpec:
    """Where one training scan lives: image and label paths (or in-memory sources), a name, and
    reader options.

    ``image`` / ``labels`` may be :class:`~bone_avizo.io.base.VolumeSource` s (e.g. an
    ``ArraySource`` over a field already in memory, as DLFit in Avizo passes its connected fields):
    they are read where they are, never copied to files.
    """

    image: Path | VolumeSource
    labels: Path | VolumeSource
    name: str = ""
    image_options: dict = field(default_factory=dict)
    label_options: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("image", "labels"):
            if not isinstance(getattr(self, key), VolumeSource):
                object.__setattr__(self, key, Path(getattr(self, key)))
        if not self.name:
            image = self.image
            object.__setattr__(self, "name", image.info.name if isinstance(image, VolumeSource) else scan_name(image))

    def to_dict(self, *, options: bool = True) -> dict[str, Any]:
        """The scan as a JSON-able record: name, image and labels (paths as text, ``in memory (<name>)``
        for an in-memory source) and, with ``options``, the reader options. Study tasks and training
        checkpoints keep these records: :meth:`from_dict` must read every one ever written."""
        record: dict[str, Any] = {"name": self.name, "image": location_text(self.image),
                                  "labels": location_text(self.labels)}
        if options:
            record.update(image_options=dict(self.image_options), label_options=dict(self.label_options))
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "ScanSpec":
        """The ScanSpec of a record of :meth:`to_dict` (or of any dict of ScanSpec's fields)."""
        return cls(**dict(record, image_options=dict(record.get("image_options", {})),
                          label_options=dict(record.get("label_options", {}))))


def as_specs(scans: Sequence) -> list[ScanSpec]:
    """ScanSpecs from ScanSpecs, records (dicts, see :meth:`ScanSpec.from_dict`) or (image, labels[, name])
    tuples."""
    return [item if isinstance(item, ScanSpec) else ScanSpec.from_dict(item) if isinstance(item, dict)
            else ScanSpec(*item) for item in scans]


def location_text(location: Path | VolumeSource) -> str:
    """A path as text, or ``in memory (<name>)`` for an in-memory source."""
    if isinstance(location, VolumeSource):
        return f"in memory ({location.info.name})"
    return str(location)


def open_location(location: Path | VolumeSource, options: dict) -> VolumeSource:
    """A source for a scan's image or labels: an in-memory source as it is, a path opened lazily."""
    if isinstance(location, VolumeSource):
        return location
    return BoundedSource(location, **options)


def scan_name(path: str | os.PathLike) -> str:
    """A scan's name from its path: the file stem, or the folder name (a ``_Scan`` folder takes
    its parent's name, as in BONe's layout)."""
    path = Path(path)
    if path.is_dir():
        return path.parent.name if path.name == SCAN_FOLDER_ALIAS else path.name
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def pair_specs(images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike], *,
               image_options: dict | None = None, label_options: dict | None = None,
               flags: tuple[str, str] = ("--images", "--labels")) -> list[ScanSpec]:
    """ScanSpecs from parallel lists of image and label paths; names made unique. A missing path is
    an InputFileError naming its option (``flags``: the names of the image and label options)."""
    if len(images) != len(labels):
        raise ConfigError(f"{len(images)} image volume(s) but {len(labels)} label volume(s); give one label "
                          "volume per image volume, in the same order")
    for paths, flag in zip((images, labels), flags):
        for path in paths:
            if not Path(path).exists():
                raise InputFileError(f"{flag}: {path} does not exist; check the path")
    specs = [ScanSpec(i, l, image_options=dict(image_options or {}), label_options=dict(label_options or {}))
             for i, l in zip(images, labels)]
    return unique_names(specs)


def unique_names(specs: list[ScanSpec]) -> list[ScanSpec]:
    """Append _2, _3 ... to repeated scan names so each scan is named once."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        count = seen.get(spec.name, 0) + 1
        seen[spec.name] = count
        out.append(spec if count == 1 else ScanSpec(spec.image, spec.labels, f"{spec.name}_{count}",
                                                    spec.image_options, spec.label_options))
    return out


def _holds_tiffs(folder: Path) -> bool:
    return any(p.suffix.lower() in _TIFF_SUFFIXES for p in folder.iterdir() if p.is_file())


def discover_scan_folders(image_root: str | os.PathLike, mask_root: str | os.PathLike) -> list[ScanSpec]:
    """BONe's layout: every folder of TIFF slices below ``image_root`` is a scan whose masks are the
    folder at the same relative path below ``mask_root``. A folder named ``_Scan`` takes its parent's
    name. Scans are returned in sorted order of their relative paths."""
    image_root, mask_root = Path(image_root), Path(mask_root)
    for root, what in ((image_root, "image"), (mask_root, "mask")):
        if not root.is_dir():
            raise InputFileError(f"{what} folder {root} does not exist or is not a folder")
    folders = sorted(p for p in [image_root, *image_root.rglob("*")] if p.is_dir() and _holds_tiffs(p))
    if not folders:
        raise InputFileError(f"no folder of TIFF slices found below {image_root}; BONe's layout is one "
                             "folder of slices per scan with a parallel folder of masks")
    specs = []
    for folder in folders:
        masks = mask_root / folder.relative_to(image_root)
        if not masks.is_dir() or not _holds_tiffs(masks):
            raise InputFileError(f"scan {folder} has no mask folder {masks} with TIFF slices; each scan "
                                 "folder needs a parallel mask folder")
        specs.append(ScanSpec(folder, masks, scan_name(folder)))
    return unique_names(specs)


# ---------------------------------------------------------------------------------------------
# opened and checked scans
@dataclass
class LabelSummary:
    """What one streamed pass over a label volume found.

    counts: voxels per class; foreground[axis]: voxels with label > 0 in each slice along
    axis 0 (z), 1 (y) and 2 (x).
    """

    max_label: int
    counts: np.ndarray
    foreground: tuple[np.ndarray, np.ndarray, np.ndarray]
    dtype: np.dtype = np.dtype(np.uint8)

    @property
    def distinct(self) -> int:
        """How many different values the volume holds."""
        return int(np.count_nonzero(self.counts))

    def found(self) -> str:
        """What the volume holds, for messages: dtype, number of distinct values, the largest."""
        return f"{self.dtype}, {self.distinct} distinct values, the largest {self.max_label}"


@dataclass
class Scan:
    """One opened training scan: lazy image and label sources, name, statistics and label summary."""

    spec: ScanSpec
    image: VolumeSource
    labels: VolumeSource
    stats: NormStats
    summary: LabelSummary
    index: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.image.shape

    def close(self) -> None:
        self.image.close()
        self.labels.close()


def _check_label_slab(slab: np.ndarray, z0: int, where: str) -> np.ndarray:
    """The slab as int64 after checking it holds non-negative integers; LabelError otherwise."""
    if slab.dtype.kind == "f":
        if not np.isfinite(slab).all() or not np.array_equal(slab, np.round(slab)):
            raise LabelError(f"labels of {where} are not integers (slices from z={z0}); label volumes "
                             "hold class numbers 0..N-1")
    elif slab.dtype.kind not in "biu":
        raise LabelError(f"labels of {where} have dtype {slab.dtype}; use an integer label volume")
    if slab.size and slab.min() < 0:
        raise LabelError(f"labels of {where} contain negative values (slices from z={z0}); classes "
                         "must be 0..N-1")
    return slab.astype(np.int64, copy=False)


def _pass_slices(shape) -> int:
    """Slices per slab of a streamed pass: about 4 M voxels."""
    return max(1, PASS_VOXELS // (int(shape[1]) * int(shape[2])))


def _summarize_labels(source: VolumeSource, *, where: str, slab_slices: int = 0) -> LabelSummary:
    """Stream ``source`` once: check the values and count classes and per-slice foreground."""
    nz, ny, nx = source.shape
    slab_slices = slab_slices or _pass_slices(source.shape)
    counts = np.zeros(256, np.int64)
    fg = (np.zeros(nz, np.int64), np.zeros(ny, np.int64), np.zeros(nx, np.int64))
    for z0 in range(0, nz, slab_slices):
        slab = _check_label_slab(source.read_slab(z0, min(nz, z0 + slab_slices)), z0, where)
        top = int(slab.max()) if slab.size else 0
        if top >= SUPPORTED_CLASSES:
            raise not_a_label_volume(f"the label volume of {where}", dtype=source.dtype, distinct=np.unique(slab).size,
                                     largest=top, limit=SUPPORTED_CLASSES, at_least=True)
        counts += np.bincount(slab.reshape(-1), minlength=256)
        mask = slab > 0
        fg[0][z0:z0 + slab.shape[0]] = mask.sum((1, 2))
        fg[1][:] += mask.sum((0, 2))
        fg[2][:] += mask.sum((0, 1))
    max_label = int(np.flatnonzero(counts)[-1]) if counts.any() else 0
    return LabelSummary(max_label, counts, fg, np.dtype(source.dtype))


def _image_stats(source: VolumeSource, *, where: str, mask: str = "positive") -> NormStats:
    """Normalisation statistics over the voxels ``mask`` selects (streamed), refusing NaN or infinite voxels."""
    from bone_avizo.data.normalize import StatsAccumulator

    acc = StatsAccumulator(mask)
    step = _pass_slices(source.shape)
    for z0 in range(0, source.shape[0], step):
        slab = source.read_slab(z0, min(source.shape[0], z0 + step))
        if slab.dtype.kind == "f" and not np.isfinite(slab).all():
            first = z0 + int(np.flatnonzero(~np.isfinite(slab).reshape(slab.shape[0], -1).all(1))[0])
            raise InvalidVolumeError(f"{where} contains NaN or infinite values (the first in slice z={first}); "
                                     "replace them (e.g. numpy.nan_to_num) before training")
        acc.add(slab)
    return acc.result()


def _open_pair(spec: ScanSpec) -> tuple[VolumeSource, VolumeSource]:
    image = open_location(spec.image, spec.image_options)
    try:
        labels = open_location(spec.labels, spec.label_options)
    except BaseException:
        image.close()
        raise
    if image.shape != labels.shape:
        image.close()
        labels.close()
        raise ShapeMismatchError(f"scan {spec.name}: image {location_text(spec.image)} has shape {image.shape} "
                                 f"(z, y, x) but labels {location_text(spec.labels)} have {labels.shape}; give the "
                                 "label volume made for "
                                 "this image")
    return image, labels


def open_scan(spec: ScanSpec, index: int = 0, *, mask: str = "positive") -> Scan:
    """Open one scan and run its checks and statistics over the voxels ``mask`` selects (one streamed
    pass over image and labels)."""
    from bone_avizo.data.normalize import MASK_WORDS, StatsMask

    image, labels = _open_pair(spec)
    try:
        summary = _summarize_labels(labels, where=f"scan {spec.name} ({location_text(spec.labels)})")
        stats = _image_stats(image, where=spec.name, mask=mask)
    finally:
        image.close()  # BoundedSources reopen on the next read: nothing stays mapped meanwhile
        labels.close()
    log.info("scan %s: shape %s, labels 0..%d, mean %.4g, std %.4g over %s", spec.name, image.shape,
             summary.max_label, stats.mean, stats.std, MASK_WORDS[StatsMask(mask)])
    return Scan(spec, image, labels, stats, summary, index)


def resolve_num_classes(scans: Sequence[Scan], *, num_classes: int = 0, class_names: Sequence[str] = (),
                        max_classes: int = DEFAULT_MAX_CLASSES) -> int:
    """The number of classes: explicit (num_classes or class_names) or max label + 1, which must then
    agree across scans (BONe's rule) and stay within ``max_classes``. LabelError names the scans that
    disagree or overflow, with what their labels hold."""
    explicit = num_classes or len(class_names)
    if explicit:
        over = [f"{s.name} ({s.summary.found()})" for s in scans if s.summary.max_label >= explicit]
        if over:
            raise LabelError(f"labels exceed the {explicit} declared classes (0..{explicit - 1}) in "
                             f"{', '.join(over)}; fix the labels or declare more classes")
        return explicit
    for s in scans:
        if s.summary.max_label >= max_classes:
            raise not_a_label_volume(f"the label volume of scan {s.name} ({s.spec.labels})", dtype=s.summary.dtype,
                                     distinct=s.summary.distinct, largest=s.summary.max_label, limit=max_classes)
    found = {s.name: s.summary.max_label + 1 for s in scans}
    if len(set(found.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in found.items())
        raise LabelError(f"scans have different numbers of classes (max label + 1): {listing}; relabel them "
                         "consistently, or declare the classes (--num-classes / --class-names) if some "
                         "scans simply lack a class")
    n = next(iter(found.values()))
    if n < 2:
        raise LabelError("every label volume holds only class 0; labels must mark at least one class > 0")
    return n


def _largest_patch(height: int, width: int) -> int:
    """The largest multiple of 32 that fits a (height, width) slice (0 when none does)."""
    return min(height, width) // PATCH_MULTIPLE * PATCH_MULTIPLE


def plane_shape(shape: Sequence[int], axis: int) -> tuple[int, int]:
    """(height, width) of the slices along ``axis`` of a (z, y, x) shape."""
    rest = [int(s) for i, s in enumerate(shape) if i != axis]
    return rest[0], rest[1]


def check_patch_fits(scans: Sequence[Scan], patch_size: int, axes: Sequence[int]) -> None:
    """ConfigError (with the largest valid patch size) when a patch does not fit some scan's slices."""
    for scan in scans:
        for axis in axes:
            h, w = plane_shape(scan.shape, axis)
            if patch_size > min(h, w):
                best = min(_largest_patch(*plane_shape(s.shape, a)) for s in scans for a in axes)
                hint = f"use --patch-size {best}" if best else "the slices are smaller than 32 px"
                raise ConfigError(f"patch size {patch_size} does not fit the {h} x {w} slices of scan "
                                  f"{scan.name} along axis {'zyx'[axis]}; {hint}")


def open_scans(specs: Sequence[ScanSpec], *, mask: str = "positive") -> list[Scan]:
    """Open and check every scan (statistics over the voxels ``mask`` selects); on an error the scans
    opened so far are closed."""
    if not specs:
        raise ConfigError("no training scans given; give --images and --labels")
    scans: list[Scan] = []
    try:
        for i, spec in enumerate(specs):
            scans.append(open_scan(spec, i, mask=mask))
    except BaseException:
        close_scans(scans)
        raise
    return scans


def close_scans(scans: Sequence[Scan]) -> None:
    for scan in scans:
        scan.close()


def describe(scans: Sequence[Scan]) -> list[dict[str, Any]]:
    """JSON-ready description of scans (for logs and model metadata)."""
    return [dict(scan.spec.to_dict(options=False), shape=list(scan.shape)) for scan in scans]
