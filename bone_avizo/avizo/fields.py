"""Avizo fields <-> :class:`~bone_avizo.volume.Volume`.

Axis order and memory: Avizo's ``field.get_array()`` indexes voxels (x, y, z) and keeps x fastest
in memory, i.e. it is Fortran-ordered in (x, y, z). Its transpose is therefore the C-ordered
(z, y, x) array of the core *without a copy*: :func:`xyz_to_zyx` returns that transposed view, and
:func:`field_to_volume` keeps it (read-only, so the core cannot write into Avizo's data by
accident). Only when the field's array is C-ordered in (x, y, z) (not Avizo's own layout) is the
transpose non-contiguous; then ``contiguous=True`` (the default) makes one C-ordered copy.
In the other direction :func:`volume_to_field` hands ``set_array`` the transposed view of the
(z, y, x) volume, which is exactly Avizo's x-fastest layout.

Geometry: ``bounding_box`` is ((xmin, ymin, zmin), (xmax, ymax, zmax)) from the first to the last
voxel *centre*, so voxel size = (max - min) / (n - 1), and 1 on an axis of one voxel (where Avizo's
box cannot carry a size). The origin of a Volume is the first voxel centre, i.e. the box minimum.

Dtypes: Avizo has no uint32, uint64 or int64 fields; they become uint16 / int32 when the values fit,
else :class:`~bone_avizo.errors.UnsupportedDtypeError`. bool becomes uint8 and float16 float32.
Label fields hold uint8 (up to 255) or uint16 labels; their materials, in order, name the labels.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from bone_avizo.avizo.safety import note_created
from bone_avizo.errors import (InvalidVolumeError, LabelError, ShapeMismatchError,
                               UnsupportedDtypeError)
from bone_avizo.volume import Volume

log = logging.getLogger(__name__)

SCALAR_FIELD = "HxUniformScalarField3"
LABEL_FIELD = "HxUniformLabelField3"

_NARROWED: dict[np.dtype, np.dtype] = {np.dtype(np.uint32): np.dtype(np.uint16), np.dtype(np.uint64): np.dtype(np.uint16),
             np.dtype(np.int64): np.dtype(np.int32), np.dtype(np.bool_): np.dtype(np.uint8),
             np.dtype(np.float16): np.dtype(np.float32)}

Box = tuple[tuple[float, float, float], tuple[float, float, float]]


def xyz_to_zyx(array: np.ndarray) -> np.ndarray:
    """(x, y, z) -> (z, y, x): a transposed view, never a copy."""
    return array.transpose(2, 1, 0)


def zyx_to_xyz(array: np.ndarray) -> np.ndarray:
    """(z, y, x) -> (x, y, z): a transposed view, never a copy."""
    return array.transpose(2, 1, 0)


def avizo_dtype(array: np.ndarray, what: str = "volume") -> np.ndarray:
    """``array`` in a dtype Avizo has fields for (see the module docstring); unchanged when it has."""
    target = _NARROWED.get(array.dtype)
    if target is None:
        return array
    if target.kind in "iu" and array.dtype.kind != "b" and array.size:
        low, high, info = array.min(), array.max(), np.iinfo(target)
        if low < info.min or high > info.max:
            raise UnsupportedDtypeError(
                f"{what}: {array.dtype} values {low}..{high} do not fit {target} (Avizo has no {array.dtype} "
                f"fields); rescale the data or convert it to float32 first")
    return array.astype(target)


def is_label_field(field: Any) -> bool:
    """True for Avizo label fields (HxUniformLabelField3 and relatives).

    Two signals, either suffices, so that the answer holds whether or not Python types mirror
    Avizo's C++ classes: a class named ``...LabelField...`` in the type's chain, or a non-empty
    ``Materials`` bundle in the field's parameters (every Avizo label field has one, Exterior at
    least; see ``python -m bone_avizo.avizo doctor``).
    """
    return label_type_named(field) or has_materials(field)


def type_chain(obj: Any) -> list[str]:
    """The class names of ``obj``'s Python type, most derived first."""
    return [klass.__name__ for klass in type(obj).__mro__]


def label_type_named(obj: Any) -> bool:
    """True when a class in ``obj``'s type chain is named like a label field."""
    return any("LabelField" in name for name in type_chain(obj))


def has_materials(field: Any) -> bool:
    """True when ``field.parameters`` holds a non-empty ``Materials`` bundle (False when unreadable)."""
    try:
        parameters = field.parameters
        return "Materials" in parameters and len(parameters["Materials"]) > 0
    except Exception:  # noqa: BLE001 - an object without parameters is no label field
        return False


def _geometry_from_box(box: Box, shape_xyz: Sequence[int], what: str = "field"):
    """Voxel size and origin, both (z, y, x), from an Avizo bounding box and an (x, y, z) shape."""
    low, high = (tuple(float(v) for v in corner) for corner in box)
    voxel_xyz = tuple((h - l) / (n - 1) if n > 1 else 1.0 for l, h, n in zip(low, high, shape_xyz))
    if not all(np.isfinite(v) and v > 0 for v in voxel_xyz):
        raise InvalidVolumeError(
            f"{what}: bounding box {box} gives voxel size (x, y, z) {voxel_xyz}; every size must be positive: "
            "set the voxel size of the field in Avizo (e.g. in the Crop Editor) and try again")
    return voxel_xyz[::-1], low[::-1]


def _box_from_volume(volume: Volume) -> Box:
    """The Avizo bounding box (first to last voxel centre, (x, y, z)) of ``volume``."""
    low = tuple(float(v) for v in volume.origin[::-1])
    sizes = zip(low, volume.voxel_size[::-1], volume.shape[::-1])
    high = tuple(o + (n - 1) * v for o, v, n in sizes)
    return low, high  # type: ignore[return-value]


def field_to_volume(field: Any, *, contiguous: bool = True) -> Volume:
    """A Volume (z, y, x) viewing an Avizo field's voxels, with its voxel size, origin and name.

    No copy is made when the field's array is in Avizo's x-fastest layout (or when
    ``contiguous=False``); the Volume's array is then a read-only view of the field's memory.
    uint32/uint64/int64/bool/float16 arrays are narrowed as in :func:`avizo_dtype` (a copy). Label
    fields get ``class_names`` from their materials, padded with "class<i>" for labels that have none.
    """
    name = str(getattr(field, "name", "") or "volume")
    xyz = np.asarray(field.get_array())
    if xyz.ndim != 3:
        raise InvalidVolumeError(f"{name}: Avizo returned a {xyz.ndim}-D array of shape {xyz.shape}; "
                                 "only 3-D uniform fields can be segmented")
    zyx = xyz_to_zyx(avizo_dtype(xyz, name))
    if contiguous and not zyx.flags.c_contiguous:
        zyx = np.ascontiguousarray(zyx)
    if np.may_share_memory(zyx, xyz):
        zyx = zyx.view()
        zyx.flags.writeable = False
    voxel_size, origin = _geometry_from_box(field.bounding_box, xyz.shape, name)
    class_names = _label_names(field, zyx) if is_label_field(field) else None
    return Volume(zyx, voxel_size=voxel_size, origin=origin, name=name, class_names=class_names)


def volume_to_field(volume: Volume, project: Any, *, label: bool = False, name: str | None = None,
                    like: Any = None, like_shape: Sequence[int] | None = None, into: Any = None):
    """Create an Avizo field holding ``volume`` in ``project`` (``hx_project``) and return it.

    ``label=True`` makes an HxUniformLabelField3 (uint8/uint16 labels, materials named after
    ``volume.class_names``), else an HxUniformScalarField3. ``name`` defaults to the volume's name.
    ``like``: an Avizo field of the same shape whose bounding box is copied exactly (outputs that
    must overlay their input); otherwise the box comes from the volume's origin and voxel size.
    ``like_shape``: that field's (x, y, z) shape when the caller knows it (no ``get_array()`` then).
    ``into``: an existing field of the right kind (label or scalar) to overwrite instead of creating
    one, as Avizo's compute modules reuse their result object (modules connected to it stay connected).
    Everything is checked before the field is created, and a field that fails half-way is removed
    from the project before the error propagates.
    """
    if label:
        array, top = _label_array(volume.array, volume.name)
        class_names = _checked_class_names(volume.class_names, top, volume.name)
    else:
        array, class_names = avizo_dtype(volume.array, volume.name), None
    xyz = zyx_to_xyz(array)
    box = _box_like(like, like_shape, xyz.shape, volume.name) if like is not None else _box_from_volume(volume)
    if into is not None and is_label_field(into) != label:
        raise TypeError(f"cannot write a {'label' if label else 'scalar'} volume into {type(into).__name__}")
    field = into if into is not None else project.create(LABEL_FIELD if label else SCALAR_FIELD)
    try:
        field.bounding_box = box
        field.set_array(xyz)
        field.name = name or volume.name
        if class_names:
            write_material_names(field, class_names)
    except BaseException:
        if into is None:
            _discard(project, field)
        raise
    if into is None:
        note_created(field)
    return field


def _label_array(array: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    if array.dtype.kind not in "biu":
        raise LabelError(f"{what}: labels must be integers, got {array.dtype}; threshold or round the "
                         "volume first, or write it as a scalar field")
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0 or high > 65535:
        raise LabelError(f"{what}: label values {low}..{high} are outside 0..65535, which Avizo label "
                         "fields can hold; relabel the classes as 0..N-1")
    return array.astype(np.uint8 if high <= 255 else np.uint16, copy=False), high


def _checked_class_names(names, top: int, what: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    if len(set(names)) != len(names) or not all(str(n).strip() for n in names):
        raise LabelError(f"{what}: class names {list(names)} must be non-empty and unique to name Avizo "
                         "materials")
    if top >= len(names):
        raise LabelError(f"{what}: label value {top} has no class name ({len(names)} names: "
                         f"{', '.join(names)}); give one name per class 0..{top}")
    return tuple(names)


def _box_like(like: Any, like_shape: Sequence[int] | None, shape_xyz: tuple[int, ...], what: str) -> Box:
    like_shape = tuple(like_shape) if like_shape is not None else tuple(np.shape(like.get_array()))
    if like_shape != tuple(shape_xyz):
        raise ShapeMismatchError(f"{what}: shape (x, y, z) {tuple(shape_xyz)} differs from the field "
                                 f"{getattr(like, 'name', '?')} {like_shape} whose geometry it should take")
    return like.bounding_box


def _discard(project: Any, obj: Any) -> None:
    try:
        project.remove(obj)
    except Exception:  # noqa: BLE001 - the original error matters more
        log.warning("could not remove the unfinished object %s from the project", getattr(obj, "name", obj))


def _read_material_names(field: Any) -> list[str]:
    """Material names of a label field in label order ([] when there are none or they cannot be read).

    Materials are ``field.parameters['Materials']``, one sub-bundle per material; when every
    material has an integer ``Id`` they are ordered by it (AmiraMesh files store label + 1 there),
    else by their position in the bundle.
    """
    try:
        parameters = field.parameters
        if "Materials" not in parameters:
            return []
        materials = parameters["Materials"]
        names = [str(getattr(entry, "name", entry)) for entry in materials]
        ids = [_material_id(materials, n) for n in names]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("cannot read the materials of %s (%s); using generic class names",
                    getattr(field, "name", "?"), exc)
        return []
    if None not in ids and len(set(ids)) == len(ids):
        names = [n for _, n in sorted(zip(ids, names))]
    return names


def _material_id(materials: Any, name: str) -> int | None:
    entry = materials[name]
    try:
        return int(entry["Id"]) if "Id" in entry else None
    except (TypeError, ValueError):
        return None


def write_material_names(field: Any, names: Sequence[str]) -> None:
    """Name the materials of a label field, label 0 first. A failure is logged, not raised:
    the label values, which are what matters, are already in the field."""
    try:
        field.parameters["Materials"] = {str(n): {} for n in names}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("could not name the materials of %s (%s); the labels are correct, only unnamed",
                    getattr(field, "name", "?"), exc)


def _label_names(field: Any, zyx: np.ndarray) -> tuple[str, ...]:
    names = _read_material_names(field)
    needed = int(zyx.max()) + 1 if zyx.size else 1
    return tuple(names) + tuple(f"class{i}" for i in range(len(names), needed))


def describe_volume(volume: Volume) -> dict[str, str]:
    """Short lines describing ``volume`` as Avizo users think of it (x, y, z first)."""
    nz, ny, nx = volume.shape
    vz, vy, vx = volume.voxel_size
    oz, oy, ox = volume.origin
    dims = f"{nx} x {ny} x {nz} voxels (x, y, z), {volume.dtype}"
    voxel = f"{vx:g} x {vy:g} x {vz:g} (x, y, z), first voxel centre at ({ox:g}, {oy:g}, {oz:g})"
    if volume.is_label:
        names = volume.class_names or ()
        kind = f"label field, {len(names)} classes: {', '.join(names)}"
    else:
        low, high = (volume.array.min(), volume.array.max()) if volume.array.size else (0, 0)
        kind = f"scalar field, values {low:g}..{high:g}"
    return {"dimensions": dims, "voxel_size": voxel, "content": kind}
