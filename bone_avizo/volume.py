"""The Volume type: a 3-D array in (z, y, x) order with its geometry."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from bone_avizo.errors import InvalidVolumeError

Triple = tuple[float, float, float]


def as_triple(values: Sequence[float] | float, what: str) -> Triple:
    """Return ``values`` as a tuple of three floats (a scalar is repeated)."""
    if np.isscalar(values):
        values = (values, values, values)
    values = tuple(float(v) for v in values)  # type: ignore[union-attr]
    if len(values) != 3:
        raise InvalidVolumeError(f"{what} must have 3 values (z, y, x), got {len(values)}: {values}")
    return values  # type: ignore[return-value]


def check_voxel_size(voxel_size: Sequence[float] | float) -> Triple:
    """Validate a voxel size (z, y, x): three finite positive numbers."""
    vs = as_triple(voxel_size, "voxel size")
    if not all(np.isfinite(v) and v > 0 for v in vs):
        raise InvalidVolumeError(f"voxel size must be three positive finite numbers (z, y, x), got {vs}; "
                                 "set it explicitly (e.g. --voxel-size 0.0195)")
    return vs


def check_array(array: np.ndarray, name: str = "volume") -> None:
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
        object.__setattr__(self, "voxel_size", check_voxel_size(self.voxel_size))
        object.__setattr__(self, "origin", as_triple(self.origin, "origin"))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise InvalidVolumeError(f"volume shape must be 3 positive sizes (z, y, x), got {self.shape}")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def with_(self, **changes) -> "VolumeInfo":
        return replace(self, **changes)


@dataclass(frozen=True)
class Volume:
    """A 3-D array in (z, y, x) order with voxel size (z, y, x), origin, name and class names.

    Without a voxel size the volume is uncalibrated (``calibrated`` False, voxel size 1 x 1 x 1).
    """

    array: np.ndarray
    voxel_size: Triple | None = None
    origin: Triple = (0.0, 0.0, 0.0)
    name: str = "volume"
    class_names: tuple[str, ...] | None = None
    unit: str = "mm"
    calibrated: bool | None = None
    _info: VolumeInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        array = np.asarray(self.array)
        check_array(array, self.name)
        object.__setattr__(self, "array", array)
        if self.calibrated is None:
            object.__setattr__(self, "calibrated", self.voxel_size is not None)
        if self.voxel_size is None:
            object.__setattr__(self, "voxel_size", (1.0, 1.0, 1.0))
        info = VolumeInfo(array.shape, array.dtype, self.voxel_size, self.origin, self.name,
                          self.class_names, self.unit, self.calibrated)
        object.__setattr__(self, "voxel_size", info.voxel_size)
        object.__setattr__(self, "origin", info.origin)
        object.__setattr__(self, "class_names", info.class_names)
        object.__setattr__(self, "_info", info)

    @classmethod
    def from_info(cls, array: np.ndarray, info: VolumeInfo) -> "Volume":
        return cls(array, info.voxel_size, info.origin, info.name, info.class_names, info.unit, info.calibrated)

    @property
    def info(self) -> VolumeInfo:
        return self._info

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
        """A new Volume with the same geometry and another array (and optional field changes)."""
        fields = dict(voxel_size=self.voxel_size, origin=self.origin, name=self.name,
                      class_names=self.class_names, unit=self.unit, calibrated=self.calibrated)
        fields.update(changes)
        return Volume(array, **fields)
