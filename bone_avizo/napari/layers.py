"""napari layers <-> the core's volumes: geometry, class names and colours, lazy data.

A layer's ``scale`` is the voxel size (z, y, x) and its ``translate`` the origin (the centre of the
first voxel, z, y, x), so layers from files of different voxel sizes overlay in physical units. A
label layer carries its class names in ``metadata["bone_avizo"]["class_names"]`` and as a ``class`` feature (napari
shows it under the cursor), and one colour per class (the colours of the Slicer segmentations the
core writes). Volumes above :data:`IN_MEMORY_LIMIT_BYTES` are shown lazily: napari reads the slices
it displays from the file (:func:`_lazy_array`).
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from bone_avizo.errors import InvalidVolumeError
from bone_avizo.io.base import ArraySource, VolumeSource
from bone_avizo.io.nrrd_format import segment_colour
from bone_avizo.volume import VolumeInfo

# a volume up to this size is read into memory when opened; a larger one is read slice by slice on display
IN_MEMORY_LIMIT_BYTES = 1 << 30
METADATA_KEY = "bone_avizo"  # layer.metadata[METADATA_KEY]: the VolumeInfo fields of the layer's volume


class SourceArray:
    """A read-only array view of a :class:`VolumeSource` (z, y, x): indexing reads only the region asked.

    napari (through dask) indexes it with integers and step-1 slices; reads are serialised because a
    source's file handle is not shared between threads."""

    def __init__(self, source: VolumeSource):
        self.source = source
        self.shape = source.shape
        self.dtype = source.dtype
        self.ndim = 3
        self._lock = threading.Lock()

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        if not all(_plain(k) for k in key):  # steps, arrays: rare; numpy indexes the whole volume
            return np.asarray(self)[key]
        region, squeeze = [], []
        for axis, item in enumerate(key):
            if isinstance(item, slice):
                region.append(slice(*item.indices(self.shape[axis])[:2]))
            else:
                index = int(item) % self.shape[axis]
                region.append(slice(index, index + 1))
                squeeze.append(axis)
        with self._lock:
            data = self.source.read_region(*region)
        return np.squeeze(data, axis=tuple(squeeze)) if squeeze else data

    def __array__(self, dtype=None, copy=None):
        with self._lock:
            data = self.source.read_all()
        return data if dtype is None else data.astype(dtype)


def _plain(item: Any) -> bool:
    return isinstance(item, (int, np.integer)) or (isinstance(item, slice) and item.step in (None, 1))


def _lazy_array(source: VolumeSource):
    """A dask array (z, y, x) over ``source`` in one chunk per slice: napari reads what it shows."""
    import dask.array as da

    z, y, x = source.shape
    return da.from_array(SourceArray(source), chunks=(1, y, x), asarray=False, fancy=False, lock=False)


def layer_data(source: VolumeSource):
    """The voxels of ``source`` for a layer: in memory up to :data:`IN_MEMORY_LIMIT_BYTES`, else lazy."""
    if source.info.nbytes <= IN_MEMORY_LIMIT_BYTES:
        return source.read_all()
    return _lazy_array(source)


def _class_colours(class_names: Sequence[str]) -> dict[Any, Any]:
    """napari's direct label colours: background transparent, then one RGBA per class (by its name)."""
    colours: dict[Any, Any] = {0: (0.0, 0.0, 0.0, 0.0), None: (0.0, 0.0, 0.0, 1.0)}
    for value, name in enumerate(class_names[1:], start=1):
        colours[value] = (*segment_colour(name, value), 1.0)
    return colours


def layer_kwargs(info: VolumeInfo, *, labels: bool, name: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_image`` / ``add_labels`` (and of a reader's layer tuple) for
    a volume with ``info``: name, scale, translate, metadata, and for labels class names and colours."""
    kwargs: dict[str, Any] = {
        "name": name or info.name, "scale": tuple(info.voxel_size), "translate": tuple(info.origin),
        "metadata": {METADATA_KEY: {"unit": info.unit, "calibrated": info.calibrated,
                                    "class_names": list(info.class_names or ())}}}
    if labels:
        from napari.utils.colormaps import DirectLabelColormap

        names = info.class_names or ()
        if names:
            kwargs["colormap"] = DirectLabelColormap(color_dict=_class_colours(names))
            kwargs["features"] = {"class": list(names)}
    return kwargs


def _layer_info(layer: Any, *, labels: bool = False) -> VolumeInfo:
    """The VolumeInfo of a 3-D napari layer: its shape and dtype, voxel size from ``scale``, origin from
    ``translate``, class names from its metadata (labels)."""
    data = layer.data
    if getattr(layer, "multiscale", False) or getattr(layer, "rgb", False) or len(data.shape) != 3:
        kind = "multiscale" if getattr(layer, "multiscale", False) else "RGB" if getattr(layer, "rgb", False) \
            else f"{len(data.shape)}-D"
        raise InvalidVolumeError(f"layer {layer.name!r} is {kind} (shape {tuple(data.shape)}); choose a 3-D "
                                 "single-channel layer (z, y, x)")
    saved = dict(layer.metadata.get(METADATA_KEY, {}))
    names = tuple(saved.get("class_names") or layer.metadata.get("class_names") or ()) or None
    scale, translate = tuple(layer.scale)[-3:], tuple(layer.translate)[-3:]
    calibrated = saved.get("calibrated", tuple(scale) != (1.0, 1.0, 1.0))
    return VolumeInfo(tuple(data.shape), np.dtype(data.dtype), scale, translate, str(layer.name),
                      names if labels else None, saved.get("unit", "mm"), calibrated)


class LayerSource(VolumeSource):
    """A layer's voxels as a VolumeSource (z, y, x): slabs are taken from ``layer.data`` as it is held
    (a numpy array, or a lazy array read on demand)."""

    def __init__(self, layer: Any, *, labels: bool = False):
        self.info = _layer_info(layer, labels=labels)
        self.data = layer.data

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self._check_slab(z0, z1)
        return np.array(self.data[z0:z1])

    def read_region(self, z: slice, y: slice, x: slice) -> np.ndarray:
        return np.array(self.data[z, y, x])


def layer_source(layer: Any, *, labels: bool = False) -> VolumeSource:
    """A source over ``layer``: the array itself when it is in memory, else read slab by slab."""
    if isinstance(layer.data, np.ndarray):
        return ArraySource(layer.data, _layer_info(layer, labels=labels))
    return LayerSource(layer, labels=labels)
