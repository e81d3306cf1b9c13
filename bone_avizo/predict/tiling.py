"""Split -> predict -> merge of 2-D images into overlapping tiles, with blending weights.

Images are batches (N, C, H, W); a tile predictor maps (B, C, th, tw) to (B, K, th, tw).
Images smaller than a tile are reflection-padded up to the multiple of the network's stride it
needs (``bone_avizo.models.modelfile.input_multiple``: none for networks that take any size, such as
smp's U-Net, so a slice smaller than the tile goes through whole and unpadded, as a whole-slice
prediction does; 32 for most others), tiles are placed on an even grid whose last tile ends at the
image edge, tiles of many images share batches, and outputs are merged as sum(w * out) / sum(w).
A pointwise predictor passes through unchanged.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bone_avizo.predict.windows import blend_window

TilePredictor = Callable[[torch.Tensor], torch.Tensor]
ALIGN = 32

log = logging.getLogger(__name__)


def positions(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = max(1, int(round(tile * (1.0 - overlap))))
    count = math.ceil((length - tile) / step) + 1
    return sorted({round(i * (length - tile) / (count - 1)) for i in range(count)})


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one padded image size: tile (th, tw), padded size (hp, wp) and start offsets."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    padded_h: int
    padded_w: int
    starts: tuple[tuple[int, int], ...]

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: float, *, align: int = ALIGN) -> "TileGrid":
        """``align``: the multiple a tile's sides must be (the network's input multiple; 1 = any size).
        Grids are immutable and asked for on every forward pass: each is built once (cached)."""
        return _cached_grid(cls, height, width, tile, overlap, align)

    @classmethod
    def _build(cls, height: int, width: int, tile: int, overlap: float, align: int) -> "TileGrid":
        tile_h = min(tile, _ceil_to(height, align))
        tile_w = min(tile, _ceil_to(width, align))
        padded_h, padded_w = max(height, tile_h), max(width, tile_w)
        starts = tuple((y, x) for y in positions(padded_h, tile_h, overlap)
                       for x in positions(padded_w, tile_w, overlap))
        return cls(height, width, tile_h, tile_w, padded_h, padded_w, starts)

    def images_per_pass(self, batch: int) -> int:
        """How many images a forward pass of ``batch`` tiles covers (at least 1)."""
        return max(1, batch // len(self.starts))

    @property
    def tile_pixels(self) -> int:
        return self.tile_h * self.tile_w * len(self.starts)


@functools.lru_cache(maxsize=256)
def _cached_grid(cls, height: int, width: int, tile: int, overlap: float, align: int) -> TileGrid:
    return cls._build(height, width, tile, overlap, align)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def reflect_pad(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right to (height, width) by mirroring (repeated if needed)."""
    while images.shape[-2] < height or images.shape[-1] < width:
        pad_h = min(height - images.shape[-2], images.shape[-2] - 1)
        pad_w = min(width - images.shape[-1], images.shape[-1] - 1)
        if pad_h <= 0 and pad_w <= 0:  # a 1-pixel axis cannot be mirrored: repeat it
            return F.pad(images, (0, width - images.shape[-1], 0, height - images.shape[-2]),
                         mode="replicate")
        images = F.pad(images, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode="reflect")
    return images


class Tiler:
    """Predicts batches of images tile by tile with blending; caches grids and normalisers.

    A predictor with ``fixed_batch = True`` (a compiled network) always gets full batches (the last
    one zero-padded), so it never sees a new shape. Out of GPU memory, the batch halves (logged) and
    the same tiles run again; the smaller batch is kept on the predictor (``batch_cap``)."""

    def __init__(self, predictor: TilePredictor, *, tile: int, overlap: float, blend: str,
                 batch_size: int, num_classes: int, align: int = ALIGN):
        self.predictor = predictor
        self.tile = tile
        self.align = align
        self.overlap = overlap
        self.blend = blend
        self.batch_size = batch_size
        self.num_classes = num_classes
        self._norms: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def grid(self, height: int, width: int) -> TileGrid:
        return TileGrid.build(height, width, self.tile, self.overlap, align=self.align)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Blended outputs (N, K, H, W) float32 for images (N, C, H, W)."""
        with torch.no_grad():
            return self._predict(images)

    @property
    def batch(self) -> int:
        """Tiles per forward pass: the configured batch, or less after running out of GPU memory."""
        return max(1, min(self.batch_size, getattr(self.predictor, "batch_cap", self.batch_size)))

    def images_per_pass(self, height: int, width: int) -> int:
        """How many (height, width) images one forward pass covers (at least 1)."""
        return self.grid(height, width).images_per_pass(self.batch)

    def _run(self, tiles: torch.Tensor) -> torch.Tensor:
        """predictor(tiles) (B, K, th, tw) float32, in batches that fit the device's memory."""
        while True:
            try:
                return self._forward(tiles)
            except torch.cuda.OutOfMemoryError:
                if self.batch == 1:
                    raise
                cap = self.batch // 2
                log.warning("out of GPU memory with %d tiles per pass; continuing with %d", self.batch, cap)
                setattr(self.predictor, "batch_cap", cap)  # read back by batch (a plain callable may take it)
                torch.cuda.empty_cache()

    def _forward(self, tiles: torch.Tensor) -> torch.Tensor:
        step = self.batch
        outs = []
        for i in range(0, len(tiles), step):
            part = tiles[i:i + step]
            if getattr(self.predictor, "fixed_batch", False) and len(part) < step:
                padded = part.new_zeros((step, *part.shape[1:]))
                padded[:len(part)] = part
                outs.append(self.predictor(padded)[:len(part)])
            else:
                outs.append(self.predictor(part))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        grid = self.grid(height, width)
        padded = reflect_pad(images, grid.padded_h, grid.padded_w)
        if len(grid.starts) == 1:  # one tile covers the image: no blending needed
            return self._run(padded)[:, :, :height, :width].float()
        th, tw = grid.tile_h, grid.tile_w
        window = blend_window(th, tw, self.blend).to(images.device)
        acc = torch.zeros((n, self.num_classes, grid.padded_h, grid.padded_w), dtype=torch.float32,
                          device=images.device)
        items = [(i, y, x) for i in range(n) for (y, x) in grid.starts]
        chunk = max(self.batch, 1)
        for k in range(0, len(items), chunk):
            batch = items[k:k + chunk]
            tiles = torch.stack([padded[i, :, y:y + th, x:x + tw] for i, y, x in batch])
            for (i, y, x), tile_out in zip(batch, self._run(tiles).float()):
                acc[i, :, y:y + th, x:x + tw].addcmul_(tile_out, window)
        acc /= self._normaliser(grid, images.device, window)
        return acc[:, :, :height, :width]

    def _normaliser(self, grid: TileGrid, device: torch.device, window: torch.Tensor) -> torch.Tensor:
        key = (grid.padded_h, grid.padded_w, device)
        if key not in self._norms:
            norm = torch.zeros((grid.padded_h, grid.padded_w), dtype=torch.float32, device=device)
            for y, x in grid.starts:
                norm[y:y + grid.tile_h, x:x + grid.tile_w] += window
            self._norms = {key: norm}
        return self._norms[key]


AUTO_TILE_MIN = 512
AUTO_TILE_MAX = 1024


@functools.lru_cache(maxsize=64)  # asked for many times a job: a few hundred grids each time
def auto_tile(height: int, width: int, patch_size: int, overlap: float) -> int:
    """The inference tile for (height, width) images when none is given.

    Networks here are fully convolutional, so tiles may be larger than the training patch: larger
    tiles see more context (fewer disagreements with whole-slice prediction) and overlap less.
    Among multiples of 32 in [max(patch, 512), 1024] the tile that computes the fewest pixels for
    this image size wins; ties go to the larger tile. Images up to 1024 px are one tile.
    """
    low = max(patch_size, AUTO_TILE_MIN)
    high = max(low, min(AUTO_TILE_MAX, _ceil_to(max(height, width), ALIGN)))
    best, best_cost = low, None
    for tile in range(low, high + 1, ALIGN):
        cost = TileGrid.build(height, width, tile, overlap).tile_pixels
        if best_cost is None or cost <= best_cost:
            best, best_cost = tile, cost
    return best
