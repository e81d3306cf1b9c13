"""The reader and writer contributions: napari opens every format the core reads, and writes label
layers to every format the core writes.

A file whose volume records class names (a label volume written by the core, an Amira label field,
a Slicer segmentation) opens as a Labels layer named by its classes; any other as an Image layer.
Either way the voxel size is the layer's scale and the origin its translate, and a volume above
:data:`~bone_avizo.napari.layers.IN_MEMORY_LIMIT_BYTES` is read lazily, slice by slice.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bone_avizo.errors import BoneAvizoError, LabelError
from bone_avizo.io import create_writer, detect_format, open_volume
from bone_avizo.io.base import VolumeSource
from bone_avizo.io.registry import FOLDER_SUFFIXES
from bone_avizo.napari.layers import METADATA_KEY, layer_data, layer_kwargs
from bone_avizo.volume import VolumeInfo

WRITE_SLAB_BYTES = 64 << 20  # label slices converted and written together
LayerTuple = tuple[Any, dict, str]


def readable(path: str | os.PathLike) -> bool:
    """True when the core reads ``path``: a file of a known extension, or a folder of known slices (a
    folder holding none, which the core would take for an empty TIFF folder, is not claimed)."""
    try:
        fmt = detect_format(path)
    except BoneAvizoError:
        return False
    folder = Path(path)
    if fmt != "tiff-folder" or not folder.is_dir():
        return True
    return any(p.suffix.lower() in FOLDER_SUFFIXES["tiff-folder"] for p in folder.iterdir())


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerTuple]] | None:
    """The reader of ``path`` (or of every path of a list) when the core reads them all, else None."""
    paths = path if isinstance(path, list) else [path]
    return read_layers if all(readable(item) for item in paths) else None


def source_layer(source: VolumeSource, *, class_names: tuple[str, ...] | None = None) -> LayerTuple:
    """A layer tuple for ``source``: labels when it records class names (or ``class_names`` are given,
    e.g. a model's for a format that records none), else an image. A source read into memory is closed;
    a lazy one stays open for napari to read from."""
    info = source.info if not class_names else source.info.with_(class_names=class_names)
    labels = info.class_names is not None
    data = layer_data(source)
    if isinstance(data, np.ndarray):
        source.close()
    return data, layer_kwargs(info, labels=labels), "labels" if labels else "image"


def read_layers(path: str | list[str]) -> list[LayerTuple]:
    """One layer per path (a file or a folder of slices), read by the core."""
    paths = path if isinstance(path, list) else [path]
    return [source_layer(open_volume(item)) for item in paths]


def _label_slab(data: Any, z0: int, z1: int) -> np.ndarray:
    slab = np.asarray(data[z0:z1])
    if slab.dtype == np.uint8:
        return slab
    if slab.dtype.kind not in "iu" or (slab.size and (slab.min() < 0 or slab.max() > 255)):
        low, high = (slab.min(), slab.max()) if slab.size else (0, 0)
        raise LabelError(f"slices {z0}..{z1 - 1} hold labels {low}..{high} ({slab.dtype}); label files hold "
                         "classes 0..255: relabel the layer first")
    return slab.astype(np.uint8)


def _labels_info(data: Any, meta: dict) -> VolumeInfo:
    """The VolumeInfo of a label layer napari hands to a writer (``meta``: the layer's attributes)."""
    from bone_avizo.metrics.iou import default_class_names

    saved = dict((meta.get("metadata") or {}).get(METADATA_KEY, {}))
    names = tuple(saved.get("class_names") or ())
    count = int(np.max(data)) + 1
    return VolumeInfo(tuple(data.shape), np.uint8, tuple(meta.get("scale", (1, 1, 1)))[-3:],
                      tuple(meta.get("translate", (0, 0, 0)))[-3:], str(meta.get("name") or "labels"),
                      default_class_names(max(count, len(names), 2), names), saved.get("unit", "mm"),
                      saved.get("calibrated", True))


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a (z, y, x) label layer to ``path`` in the format of its extension, slab by slab, through a
    temporary name (a failure leaves nothing). Returns the path written."""
    if np.ndim(data) != 3:
        raise LabelError(f"layer {meta.get('name')!r} has {np.ndim(data)} dimensions; label files hold 3-D "
                         "volumes (z, y, x)")
    info = _labels_info(data, meta)
    step = max(1, WRITE_SLAB_BYTES // max(1, info.shape[1] * info.shape[2]))
    with create_writer(path, info, overwrite=True) as writer:
        for z0 in range(0, info.shape[0], step):
            writer.write_slab(z0, _label_slab(data, z0, min(z0 + step, info.shape[0])))
    return [os.fspath(writer.path)]
