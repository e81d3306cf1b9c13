"""Surface distances of one class (e.g. bone): mean surface distance, HD95 and Hausdorff distance.

Computed on the whole volume in memory (two bool masks (z, y, x), cropped to the class's bounding
box, plus scipy's Euclidean distance transform, about 30 bytes per voxel of the box), so only for
volumes up to ``surface_max_mvoxels``. The surface of a mask is its voxels that have a face
neighbour outside it (``mask ^ binary_erosion(mask)``, the volume border counts as outside).
Distances respect anisotropic voxel sizes (``sampling=``) and are in mm when the unit is known.
Definitions follow MONAI: the mean surface distance is the mean of both directed distance sets
together; HD95 is the larger of the two directed 95th percentiles.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from bone_avizo.errors import ConfigError, InvalidVolumeError
from bone_avizo.io.base import VolumeSource
from bone_avizo.metrics.iou import MM_PER_UNIT

log = logging.getLogger(__name__)

NOTE = "computed on the whole volume in memory (not streamed)"


def _scipy_ndimage():
    try:
        from scipy import ndimage
    except ImportError:
        raise ConfigError("surface distances (--surface) need scipy, which is not installed; "
                          "pip install scipy, or leave out --surface") from None
    return ndimage


def _class_masks(pred: VolumeSource, ref: VolumeSource, label: int, *, ignore_label: int = -1,
                roi: VolumeSource | None = None, slab_slices: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Bool masks (z, y, x) of ``label`` in prediction and reference; ignored / outside-ROI voxels are False."""
    shape = ref.shape
    mask_p, mask_r = np.zeros(shape, bool), np.zeros(shape, bool)
    for z0 in range(0, shape[0], slab_slices):
        z1 = min(z0 + slab_slices, shape[0])
        r = ref.read_slab(z0, z1)
        counted = np.ones(r.shape, bool) if ignore_label < 0 else r != ignore_label
        if roi is not None:
            counted &= roi.read_slab(z0, z1) != 0
        mask_r[z0:z1] = (r == label) & counted
        mask_p[z0:z1] = (pred.read_slab(z0, z1) == label) & counted
    return mask_p, mask_r


def _crop(*masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """The masks cut to the bounding box of their union, padded by one False voxel on each side."""
    union = np.logical_or.reduce(masks)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(hits[0], hits[-1] + 1))
    return tuple(np.pad(m[tuple(box)], 1) for m in masks)


def surface_distances(pred_mask: np.ndarray, ref_mask: np.ndarray, *,
                      voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, Any]:
    """Mean surface distance, HD95 and Hausdorff distance of two bool masks (z, y, x).

    Distances are in the unit of ``voxel_size`` (z, y, x). When either mask is empty the distances
    are None and ``note`` says why.
    """
    ndimage = _scipy_ndimage()
    out: dict[str, Any] = dict(mean_surface_distance=None, hd95=None, hausdorff=None,
                               surface_voxels_prediction=0, surface_voxels_reference=0)
    has_p, has_r = bool(pred_mask.any()), bool(ref_mask.any())
    if not (has_p and has_r):
        missing = "both volumes" if not (has_p or has_r) else ("the prediction" if not has_p else "the reference")
        out["note"] = f"class absent from {missing}: surface distances are undefined"
        return out
    pred_mask, ref_mask = _crop(pred_mask, ref_mask)
    edge_p = pred_mask ^ ndimage.binary_erosion(pred_mask)
    edge_r = ref_mask ^ ndimage.binary_erosion(ref_mask)
    sampling = tuple(float(v) for v in voxel_size)
    d_pr = ndimage.distance_transform_edt(~edge_r, sampling=sampling)[edge_p]
    d_rp = ndimage.distance_transform_edt(~edge_p, sampling=sampling)[edge_r]
    out.update(mean_surface_distance=float(np.concatenate([d_pr, d_rp]).mean()),
               hd95=float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
               hausdorff=float(max(d_pr.max(), d_rp.max())),
               surface_voxels_prediction=int(edge_p.sum()), surface_voxels_reference=int(edge_r.sum()))
    return out


def _physical_voxel_size(voxel_size, unit: str) -> tuple[tuple[float, ...], str]:
    if voxel_size is None:
        return (1.0, 1.0, 1.0), "voxel"
    factor = MM_PER_UNIT.get(str(unit).strip().lower())
    if factor is None:
        return tuple(voxel_size), unit
    return tuple(v * factor for v in voxel_size), "mm"


def surface_metrics(pred: VolumeSource, ref: VolumeSource, config, *, roi: VolumeSource | None = None,
                    voxel_size=None, unit: str = "mm", class_name: str | None = None) -> dict[str, Any]:
    """Surface distances of class ``config.surface_class``, refused above ``config.surface_max_mvoxels``."""
    voxels = int(np.prod(ref.shape))
    limit = config.surface_max_mvoxels * 1e6
    if voxels > limit:
        raise InvalidVolumeError(f"surface distances need the whole volume in memory: {ref.shape} is "
                                 f"{voxels / 1e6:.1f} Mvoxel, above the limit of {limit / 1e6:g} Mvoxel; "
                                 "leave out --surface, crop the volumes, or raise --surface-max-mvoxels")
    _scipy_ndimage()
    label = config.surface_class
    masks = _class_masks(pred, ref, label, ignore_label=config.ignore_label, roi=roi,
                        slab_slices=config.slab_slices)
    sizes, unit = _physical_voxel_size(voxel_size, unit)
    log.info("surface distances of class %d on %s voxels in memory", label, ref.shape)
    out = surface_distances(*masks, voxel_size=sizes)
    return {"class": label, "name": class_name, "unit": unit, **out,
            "computed_on": NOTE, "definition": "mean_surface_distance: mean of both directed surface distance "
            "sets together; hd95: larger of the two directed 95th percentiles (as MONAI)"}
