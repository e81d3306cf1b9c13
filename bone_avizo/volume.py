"""The Volume type: a 3-D array in (z, y, x) order with its geometry."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from bone_avizo.errors import InvalidVolumeError

__all__ = ["Volume", "VolumeInfo"]

Triple = tuple[float, float, float]


def _as_triple(values: Sequence[float] | float, what: str) -> Triple:
    """Return ``values`` as a tuple of three floats (a scalar is repeated)."""
    if np.isscalar(values):
        values = (values, values, values)
    values = tuple(float(v) for v in values)  # type: ignore[union-attr]
    if len(values) != 3:
        raise InvalidVolumeError(f"{what} must have 3 values (z, y, x), got {len(values)}: {values}")
    return values  # type: ignore[return-value]


def _check_voxel_size(voxel_size: Sequence[float] | float) -> Triple:
    """Validate a voxel size (z, y, x): three finite positive numbers."""
    vs = _as_triple(voxel_size, "voxel size")
    if not all(np.isfinite(v) and v > 0 for v in vs):
        raise InvalidVolumeError(f"voxel size must be three positive finite numbers (z, y, x), got {vs}; "
                                 "set it explicitly (e.g. --voxel-size 0.0195)")
    return vs


def _check_array(array: np.ndarray, name: str = "volume") -> None:
    """Raise InvalidVolumeError unless ``array`` is a non-empty 3-D numeric array without NaN/inf."""
    if array.ndim != 3:
        raise InvalidVolumeError(f"{name} must be 3-D (z, y, x), got {array.ndim}-D shape {array.shape}; "
                                 "stack 2-D slices into a volume or drop extra axes (e.g. colour channels)")
    if 0 in array.shape:
        raise InvalidVolumeError(f"{name} is empty: shape {array.shape} has a zero-length axis")
    if array.dtype.kind not in "biuf":
        raise InvalidVolumeError(f"{name} has dtype {array.dtype}; use an integer or float array")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InvalidVolumeError(f"{name} contains {bad} NaN or infinite values; replace them "
                                 "(e.g. numpy.nan_to_num) before segmenting")


@dataclass(frozen=True)
class VolumeInfo:
    """Geometry and metadata of a volume, without its voxels.

    shape and voxel_size are (z, y, x); origin is the centre of the first voxel (z, y, x).
    class_names is set for label volumes (index = label value). ``calibrated`` is False when the file
    records no voxel size (e.g. a plain TIFF) and the reader assumed 1 x 1 x 1.
    """

    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: Triple = (1.0, 1.0, 1.0)
    origin: Triple = (0.0, 0.0, 0.0)
    name: str = "volume"
    class_names: tuple[str, ...] | None = None
    unit: str = "mm"
    calibrated: bool = True

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "voxel_size", _check_voxel_size(self.voxel_size))
        object.__setattr__(self, "origin", _as_triple(self.origin, "origin"))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise InvalidVolumeError(f"volume shape must be 3 positive sizes (z, y, x), got {self.shape}")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def with_(self, **changes) -> "VolumeInfo":
        return replace(self, **changes)


def _from_info(name: str) -> property:
    return property(lambda self: getattr(self.info, name), doc=f"``info.{name}``")


@dataclass(frozen=True, init=False)
class Volume:
    """A 3-D array in (z, y, x) order and its :class:`VolumeInfo` (voxel size (z, y, x), origin, name,
    class names, unit); the info's shape and dtype are the array's.

    ``Volume(array, info)``, or ``Volume(array, voxel_size=..., name=...)`` with any of VolumeInfo's
    fields but shape and dtype. Without a voxel size the volume is uncalibrated (``calibrated`` False,
    voxel size 1 x 1 x 1). The info's fields read through: ``volume.voxel_size`` is ``volume.info.voxel_size``.
    """

    array: np.ndarray
    info: VolumeInfo

    voxel_size = _from_info("voxel_size")
    origin = _from_info("origin")
    name = _from_info("name")
    class_names = _from_info("class_names")
    unit = _from_info("unit")
    calibrated = _from_info("calibrated")

    def __init__(self, array: np.ndarray, info: VolumeInfo | None = None, **geometry):
        array = np.asarray(array)
        if info is not None and not isinstance(info, VolumeInfo):
            raise TypeError(f"Volume(array, info) takes a VolumeInfo, got {type(info).__name__}; give the "
                            "geometry by keyword (voxel_size=..., origin=..., name=...)")
        _check_array(array, geometry.get("name", info.name if info else "volume"))
        if info is None:
            info = VolumeInfo(array.shape, array.dtype, **_calibrated(geometry))
        else:
            info = info.with_(shape=array.shape, dtype=array.dtype, **geometry)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "info", info)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def is_label(self) -> bool:
        return self.class_names is not None

    def with_array(self, array: np.ndarray, **changes) -> "Volume":
        """A new Volume with the same geometry and another array (and optional changes of the info's fields)."""
        return Volume(array, self.info, **changes)


def _calibrated(geometry: dict) -> dict:
    """VolumeInfo's fields for a new volume: without a voxel size, 1 x 1 x 1 and uncalibrated."""
    if geometry.get("voxel_size") is None:
        return dict(geometry, voxel_size=(1.0, 1.0, 1.0), calibrated=bool(geometry.get("calibrated", False)))
    return dict(geometry, calibrated=geometry.get("calibrated", True) is not False)
