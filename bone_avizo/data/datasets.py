"""Torch datasets of training patches and validation slices, read lazily from the scans.

Training: :class:`PatchDataset` is a map-style dataset whose keys are :class:`SampleKey`
(epoch, global position, slice). Each key's crops and augmentations come from a generator
seeded by (seed, epoch, position), so a sample is the same whichever worker or process makes it,
and a resumed run sees the same samples as an uninterrupted one. :class:`EpochSampler` lists the
keys of one epoch for one process (rank ``r`` of ``w`` takes every w-th slice of the shuffled
epoch, like DistributedSampler). ``collate_patches`` stacks B slices x n crops into one batch:
images (B*n, C, P, P) float32, labels (B*n, P, P) int64.

Sources are opened in the process that reads them (each DataLoader worker opens its own), so
file handles are never shared across processes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from bone_avizo.data.augment import Augmenter
from bone_avizo.data.normalize import NormStats, normalize
from bone_avizo.data.sampling import SliceReader, SliceRef, crop_positions, epoch_order
from bone_avizo.data.scans import ScanSpec, open_location

VALIDATION_EPOCH = -1  # the "epoch" whose seeds place the fixed validation patches


@dataclass(frozen=True)
class SampleKey:
    epoch: int
    position: int
    ref: SliceRef


@dataclass(frozen=True)
class PatchSettings:
    """How crops are taken and prepared: see FitConfig for the meaning of each field."""

    patch_size: int
    patches_per_slice: int = 4
    max_overlap: float = 0.3
    foreground_crops: float = 0.0
    context: int = 1
    normalization: str = "zscore"
    seed: int = 0
    cache_slices: int = 64


class ScanReaders:
    """Lazily opened sources of the scans, reopened in each process that reads them."""

    def __init__(self, specs: Sequence[ScanSpec], *, context: int, cache_slices: int):
        self.specs = list(specs)
        self.context = context
        self.cache_slices = cache_slices
        self._pid: int | None = None
        self._reader: SliceReader | None = None
        self._sources: list = []

    @property
    def reader(self) -> SliceReader:
        if self._reader is None or self._pid != os.getpid():
            self._open()
        return self._reader  # type: ignore[return-value]

    def _open(self) -> None:
        self._sources = []  # sources of a parent process are dropped, never closed from here
        images = [open_location(s.image, s.image_options) for s in self.specs]
        labels = [open_location(s.labels, s.label_options) for s in self.specs]
        self._sources = images + labels
        self._reader = SliceReader(images, labels, context=self.context, cache_slices=self.cache_slices)
        self._pid = os.getpid()

    def close(self) -> None:
        if self._pid == os.getpid():
            for source in self._sources:
                source.close()
        self._sources, self._reader, self._pid = [], None, None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_pid=None, _reader=None, _sources=[])
        return state


def _sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0x5A3F, epoch + 1, position])


class PatchDataset(Dataset):
    """Crops of training slices: ``dataset[SampleKey]`` -> (images (n, C, P, P) float32,
    labels (n, P, P) int64) with n = patches_per_slice."""

    def __init__(self, specs: Sequence[ScanSpec], stats: Sequence[NormStats], settings: PatchSettings, *,
                 augmenter: Augmenter | None = None):
        self.readers = ScanReaders(specs, context=settings.context, cache_slices=settings.cache_slices)
        self.stats = list(stats)
        self.settings = settings
        self.augmenter = augmenter

    def __len__(self) -> int:  # keys are not integers; the sampler decides the epoch's length
        return 0

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        return _make_crops(self.readers.reader, self.stats[key.ref.scan], self.settings, key, self.augmenter)


def _make_crops(reader: SliceReader, stats: NormStats, s: PatchSettings, key: SampleKey,
               augmenter: Augmenter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The crops of one sample: images (n, C, P, P) float32 normalised (and augmented), labels
    (n, P, P) int64; every random choice from the generator seeded by (seed, epoch, position)."""
    rng = _sample_rng(s.seed, key.epoch, key.position)
    labels = reader.label_plane(key.ref)
    stack = reader.image_stack(key.ref)
    fg = np.argwhere(labels > 0) if s.foreground_crops > 0 else None
    corners = crop_positions(labels.shape[0], labels.shape[1], s.patch_size, s.patches_per_slice, rng,
                             max_overlap=s.max_overlap, foreground=fg, foreground_crops=s.foreground_crops)
    images, targets = [], []
    for y, x in corners:
        crop = normalize(stack[:, y:y + s.patch_size, x:x + s.patch_size], stats, s.normalization)
        target = torch.from_numpy(labels[y:y + s.patch_size, x:x + s.patch_size].astype(np.int64))
        if augmenter is not None:
            crop, target = augmenter(crop, target, rng)
        images.append(crop)
        targets.append(target)
    return torch.stack(images), torch.stack(targets)


def collate_patches(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """B items of n crops -> images (B*n, C, P, P), labels (B*n, P, P)."""
    return torch.cat([i for i, _ in items]), torch.cat([t for _, t in items])


def steps_for(num_slices: int, *, batch_size: int, world_size: int = 1, steps_per_epoch: int = 0) -> int:
    """Optimiser batches per epoch and process: the given number, or enough to visit every slice once."""
    if steps_per_epoch:
        return steps_per_epoch
    return max(1, math.ceil(num_slices / (batch_size * world_size)))


class EpochSampler(Sampler):
    """The SampleKeys one process reads in one epoch (set with :meth:`set_epoch`), in batch order.

    The epoch's global sequence of ``steps * batch_size * world_size`` slices is a seeded shuffle of
    ``refs``; rank r takes positions r, r + w, r + 2w, ...
    """

    def __init__(self, refs: Sequence[SliceRef], *, seed: int, steps: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, epoch: int = 0):
        self.refs = list(refs)
        self.seed = seed
        self.steps = steps
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def __iter__(self) -> Iterator[SampleKey]:
        total = self.steps * self.batch_size * self.world_size
        order = epoch_order(self.refs, seed=self.seed, epoch=self.epoch, count=total)
        for position in range(self.rank, total, self.world_size):
            yield SampleKey(self.epoch, position, order[position])


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: seed torch/numpy from the worker's base seed (samples draw their own
    seeded generators, so this only guards code that uses the global generators)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    torch.set_num_threads(1)


class SliceSet:
    """Whole slices for validation: ``get(ref)`` -> (image (C, h, w) float32 normalised, labels (h, w)
    int64). ``patches(ref, position)`` -> fixed seeded crops (n, C, P, P), (n, P, P) instead."""

    def __init__(self, specs: Sequence[ScanSpec], stats: Sequence[NormStats], settings: PatchSettings):
        self.readers = ScanReaders(specs, context=settings.context, cache_slices=settings.cache_slices)
        self.stats = list(stats)
        self.settings = settings

    def get(self, ref: SliceRef) -> tuple[torch.Tensor, torch.Tensor]:
        reader = self.readers.reader
        image = normalize(reader.image_stack(ref), self.stats[ref.scan], self.settings.normalization)
        return image, torch.from_numpy(reader.label_plane(ref).astype(np.int64))

    def patches(self, ref: SliceRef, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _make_crops(self.readers.reader, self.stats[ref.scan], self.settings,
                          SampleKey(VALIDATION_EPOCH, position, ref))

    def close(self) -> None:
        self.readers.close()
