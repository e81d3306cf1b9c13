"""What a label volume must look like: whole numbers 0..N-1 and few classes.

A grey-value scan given where labels belong (``fit --labels scan.tif``, ``iou --reference scan.tif``)
has hundreds of distinct values; the limit ``max_classes`` (an option of fit and iou) catches it.
"""
from __future__ import annotations

import numpy as np

from bone_avizo.errors import LabelError

DEFAULT_MAX_CLASSES = 64   # BONe's models have 3; an atlas of named bones a few dozen
SUPPORTED_CLASSES = 256    # labels are stored as uint8


def not_a_label_volume(what: str, *, dtype, distinct: int, largest, limit: int, at_least: bool = False,
                       where: str = "") -> LabelError:
    """The one-line error for a volume whose labels reach ``limit`` or beyond: what was found (``where``:
    the voxel of the largest, if known), and the fix."""
    found = (f"{what} holds {'at least ' if at_least else ''}{distinct} distinct values, the largest {largest:g} "
             f"({f'first at {where}; ' if where else ''}dtype {np.dtype(dtype)})")
    if float(largest) >= SUPPORTED_CLASSES or limit >= SUPPORTED_CLASSES:
        return LabelError(f"{found}; labels 0..{SUPPORTED_CLASSES - 1} are supported: give the label volume, not the "
                          "grey-value scan, or relabel the classes 0..N-1")
    return LabelError(f"{found}; a label volume holds classes 0..N-1 with N at most {limit} (--max-classes): give the "
                      f"label volume, not the grey-value scan, or raise --max-classes above {int(largest)} if it "
                      f"really has {int(largest) + 1} classes")
