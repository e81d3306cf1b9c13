"""Out-of-core fusion of class probabilities from several slicing planes.

Probabilities are quantised to 0..65535 // planes per plane (precision 1/21845 for three
planes) and summed in a uint16 HDF5 buffer of shape
(K, z, y, x) in a temporary folder, so RAM stays bounded whatever the volume size. The final
pass reads z-slabs, takes the argmax, and divides by the number of planes for probability maps.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

CHUNK = (16, 32, 32)  # (z, y, x) per class: efficient for z-, y- and x-slabs alike


class FusionBuffer:
    """Sum of quantised probabilities, (K, z, y, x) uint16, on disk."""

    @staticmethod
    def scale_for(planes: int) -> int:
        """The largest per-plane integer scale whose sum over ``planes`` fits in uint16."""
        return 65535 // planes

    def __init__(self, num_classes: int, shape: tuple[int, int, int], *, folder: str | Path | None = None,
                 cache_bytes: int = 64 << 20):
        self.folder = Path(tempfile.mkdtemp(prefix="bone_avizo_fusion_", dir=folder))
        self.shape = (num_classes, *shape)
        chunks = (1, *(min(c, s) for c, s in zip(CHUNK, shape)))
        self._file = h5py.File(self.folder / "fusion.h5", "w", rdcc_nbytes=cache_bytes, rdcc_nslots=10007)
        self._data = self._file.create_dataset("sum", shape=self.shape, dtype=np.uint16, chunks=chunks,
                                               fillvalue=0)
        self.planes_added = 0

    def add(self, axis: int, start: int, quantised: np.ndarray) -> None:
        """Add quantised probabilities (K, z, y, x) covering ``start..`` along ``axis`` (0..2)."""
        region = [slice(None)] * 4
        region[axis + 1] = slice(start, start + quantised.shape[axis + 1])
        region = tuple(region)
        current = self._data[region]
        current += quantised.astype(np.uint16)
        self._data[region] = current

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Summed probabilities of slices z0..z1-1 as (K, z1-z0, y, x) uint16."""
        return self._data[:, z0:z1]

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
