"""DLPred: streaming tiled prediction of whole volumes in bounded memory.

Flow for one volume: (1) a streamed pass collects the normalisation statistics (voxels > 0) from
every slice, or from a sample of slices read until it is precise enough (:mod:`bone_avizo.data.sampled_stats`);
(2) for each slicing plane, blocks of images are read in a background thread, normalised,
stacked into 2.5D channels, predicted tile by tile (with test-time augmentation), and
(3) either streamed straight to the label writer (single xy plane) or summed into an on-disk
fusion buffer whose argmax is written in a final pass. Peak memory is O(block), independent
of the number of slices.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from bone_avizo import kernels
from bone_avizo._memory import BufferPool, bound_heap
from bone_avizo.config import Plane, PredictConfig
from bone_avizo.data.context import check_context, context_indices, halo
from bone_avizo.data.normalize import (MASK_WORDS, Normalization, NormStats, StatsMask, affine, index_dtype,
                                      lookup_table, normalize, scan_stats)
from bone_avizo.data.sampled_stats import sampled_stats
from bone_avizo.errors import ConfigError, InvalidVolumeError, ModelError
from bone_avizo.io import create_writer, detect_format, get_format
from bone_avizo.io.base import ArraySource, MemoryWriter, VolumeSource, check_output_path, partial_path
from bone_avizo.models.metadata import default_class_names, label_count
from bone_avizo.predict import tta
from bone_avizo.predict.backends import REDUCED_PRECISIONS, build_backend, check_precision
from bone_avizo.predict.fusion import FusionBuffer
from bone_avizo.predict.loading import LoadingModel, open_model
from bone_avizo.predict.backends import weights_digest
from bone_avizo.predict.distributed import (PartWriter, barrier, job_fingerprint, merge_parts, owned_blocks, part_path,
                                            remove_parts)
from bone_avizo.predict.parallel import map_blocks
from bone_avizo.predict.retained import RetainedSource
from bone_avizo.streams import BackgroundWriter
from bone_avizo.predict.tiling import Tiler, TileGrid, auto_tile
from bone_avizo.progress import ProgressCallback, ProgressPhase, ProgressTracker
from bone_avizo.runtime import SINGLE, Ranks, ranks_from_env, resolve_device
from bone_avizo.volume import Volume, VolumeInfo

log = logging.getLogger(__name__)

PLANE_AXIS = {Plane.XY: 0, Plane.XZ: 1, Plane.YZ: 2}
TEMPORARIES = 2.5  # measured peak RSS per image in a block / the sum of the arrays named in slab_images
BATCH_PIXELS = {"cpu": 1 << 19, "cuda": 1 << 24}  # tile pixels per forward pass when batch_size is auto
DEVICE_MEMORY_SHARE = 0.25  # of the free GPU memory, for a block's images, logits and labels
RETAINED_SHARE = 0.25  # of the memory limit: the first slices, kept from the statistics pass for the prediction
BLOCK_PASSES = 4  # a GPU block holds up to this many forward passes of images (fewer, longer steps)
# progress: a predicted slice counts PREDICT_UNITS; a slice of the statistics pass (or of the fused argmax
# pass) STATS_UNITS, their measured relative cost (CPU: U-Net/resnet18 on the real scans; CUDA: estimated
# from DESIGN's H200 floors, ~1 Gvoxel/s read + count vs ~0.5 Gvoxel/s predicted)
PREDICT_UNITS = 100
STATS_UNITS = {"cpu": 2, "cuda": 40}
# compile=auto: voxels x passes from which the saving repays a cold compile: on an H200 compiled bf16
# ran 987 Mvoxel/s against 643 for fp16 weights (0.54 ns saved per voxel) and compiling took 17 s
COMPILE_MIN_VOXELS = 3e10
# statistics=auto: voxels from which a sample of slices replaces the exact pass: 256 MB of uint16, the share
# of the default memory limit that the exact pass keeps for the prediction pass (a smaller compressed scan
# is read once either way); below it the exact pass costs little (64 x 1024^2 uint16: 0.04-0.07 s)
SAMPLED_MIN_VOXELS = 1 << 27


@dataclass
class PredictionResult:
    """What a prediction produced: labels and probability maps (in memory when no output path was
    given, else their paths) and the figures of the run."""

    labels: Volume | None
    output: Path | None
    probability_outputs: list[Path]
    stats: NormStats
    seconds: float
    voxels_per_second: float
    tile: int
    batch_size: int
    slab_slices: int
    backend: str
    device: str
    probabilities: list[Volume] = field(default_factory=list)
    statistics: str = ""  # how the normalisation statistics were taken: exact, or sampled (slices read)


def _as_source(data) -> VolumeSource:
    if isinstance(data, VolumeSource):
        return data
    if isinstance(data, Volume):
        return ArraySource(data)
    array = np.asarray(data)
    return ArraySource(Volume(array))


def _load(model):
    """A loaded model as it is; a model file loading in the background (its metadata at once, see
    :mod:`bone_avizo.predict.loading`), or loaded here for the kinds of file that cannot."""
    return open_model(model) if isinstance(model, (str, os.PathLike)) else model


def probability_path(output: Path, class_name: str) -> Path:
    """Where the probability map of one class goes: ``<stem>_prob_<class><suffix>`` beside the output."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in class_name)
    suffix = "".join(output.suffixes) if output.suffix else ""
    stem = output.name[: len(output.name) - len(suffix)] if suffix else output.name
    return output.with_name(f"{stem}_prob_{safe}{suffix}")


class _Plan:
    """Resolved settings of one prediction job (model facts + config + volume geometry)."""

    def __init__(self, source: VolumeSource, loaded, config: PredictConfig, ranks: Ranks = SINGLE):
        meta = loaded.metadata
        self.meta = meta
        self.config = config
        self.context = int(getattr(meta, "context_slices", 1) or 1)
        if meta.in_channels != self.context:
            raise ModelError(f"the model takes {meta.in_channels} input channels but {self.context} "
                             "context slice(s); only grayscale 2D/2.5D models are supported")
        self.label_buffers = BufferPool()  # CPU label blocks, given back once written
        self.helper = _Helper()  # CPU: a pass's labels and the next pass's normalisation while the network runs
        self.channels = int(meta.num_classes)  # the network's outputs: 1 for a binary model's sigmoid logit
        self.num_classes = label_count(self.channels)  # label values, probability maps, class names
        self.class_names = tuple(meta.class_names) or default_class_names(self.channels)
        self.planes = tuple(dict.fromkeys(Plane(p) for p in config.planes))
        for plane in self.planes:
            check_context(source.shape[PLANE_AXIS[plane]], self.context)
        self.patch_size = int(meta.patch_size)
        self.loaded = loaded
        self.ranks = ranks
        self.model_digest = ""  # set for ranked jobs: part files name the weights they came from
        self.statistics = ""  # how the statistics were taken (the statistics pass says)
        self.devices = self._devices(config)
        self.device = self.devices[0]
        self.backend = self._backend_name(config.backend)
        self.shape = source.shape
        self.fused = self.planes != (Plane.XY,)

    @functools.cached_property
    def align(self) -> int:
        """The multiple a tile's sides must be (1: the network takes any size, unpadded): from the header of
        a model file loading in the background, else from the network (waiting for it to load)."""
        known = getattr(self.loaded, "input_multiple", None)
        if known is None:
            from bone_avizo.models.modelfile import input_multiple  # imports the architectures (seconds)
            known = input_multiple(getattr(self.loaded, "module", None))
        return int(known)

    def _devices(self, config: PredictConfig) -> list[torch.device]:
        if config.devices:
            return [resolve_device(d) for d in config.devices]
        return [resolve_device(config.device, self.ranks)]

    def _backend_name(self, name: str) -> str:
        """auto: onnxruntime on CPU where it is installed, else torch; torch when a reduced precision is
        asked (onnxruntime runs fp32)."""
        if name != "auto":
            return name
        if self.config.precision in REDUCED_PRECISIONS:
            return "torch"
        if self.device.type == "cpu":
            try:
                import onnxruntime  # noqa: F401
                return "onnxruntime"
            except ImportError:
                pass
        return "torch"

    def tile(self, plane: Plane) -> int:
        """The config's tile size, or the automatic one for this plane's image size."""
        if self.config.tile_size:
            return self.config.tile_size
        return auto_tile(*self.image_shape(plane), self.patch_size, self.config.overlap)

    def grid(self, plane: Plane) -> TileGrid:
        """The tiles of one image of this plane."""
        return TileGrid.build(*self.image_shape(plane), self.tile(plane), self.config.overlap, align=self.align)

    def batch_size(self, plane: Plane) -> int:
        if self.config.batch_size:
            return self.config.batch_size
        grid = self.grid(plane)
        return max(1, BATCH_PIXELS[self.device.type] // (grid.tile_h * grid.tile_w))

    def pass_images(self, plane: Plane) -> int:
        """Images of this plane that one forward pass covers (at least 1)."""
        return self.grid(plane).images_per_pass(self.batch_size(plane))

    def blocks(self, plane: Plane, in_itemsize: int, start: int = 0) -> list[tuple[int, int]]:
        """The blocks of images along ``plane`` (see :func:`_blocks`)."""
        return _blocks(self.shape[PLANE_AXIS[plane]], self.slab_images(plane, in_itemsize), start=start,
                       first=self.pass_images(plane))

    def image_shape(self, plane: Plane) -> tuple[int, int]:
        axis = PLANE_AXIS[plane]
        return tuple(s for i, s in enumerate(self.shape) if i != axis)  # type: ignore[return-value]

    def slab_images(self, plane: Plane, in_itemsize: int) -> int:
        """Images per block: the config's value, or as many as the memory budget allows (host memory
        for everything on CPU; on a GPU, host memory for the raw and label images only, and a share of
        the free GPU memory for the rest, at most BLOCK_PASSES forward passes' worth)."""
        n = self.shape[PLANE_AXIS[plane]]
        if self.config.slab_slices:
            return min(self.config.slab_slices, n)
        h, w = self.image_shape(plane)
        k, c = self.num_classes, self.context
        passes = 2 if self.config.tta != "none" else 1
        on_device = h * w * (in_itemsize + 4 * (c + 1) + 4 * k * (2 + passes) + 2 * k + 1 + k)
        budget = self.config.memory_limit_gb * (1 << 30) * 0.5
        if self.device.type == "cpu":
            return int(max(1, min(n, budget // (on_device * TEMPORARIES))))
        host = h * w * (in_itemsize + 1 + (k if self.config.probabilities else 0)) * TEMPORARIES
        free, _ = torch.cuda.mem_get_info(self.device)
        images = min(n, budget // host, free * DEVICE_MEMORY_SHARE // on_device, BLOCK_PASSES * self.pass_images(plane))
        return int(max(1, images))

    def sampled_statistics(self, source: VolumeSource) -> bool:
        """Whether the statistics come from a sample of slices (config.statistics; auto: integer scans of
        SAMPLED_MIN_VOXELS or more and z-score models). The choice depends on the scan and the model
        alone, never on its format or the machine: the same scan gets the same statistics everywhere."""
        choice = self.config.statistics
        if choice == "exact":
            return False
        if Normalization(self.meta.normalization) != Normalization.ZSCORE:
            if choice == "sampled":
                log.info("statistics: the model's %s normalisation needs the scan's exact minimum and maximum; "
                         "reading every voxel", self.meta.normalization)
            return False
        if source.dtype.kind not in "iu":
            if choice == "sampled":
                log.info("statistics: a %s scan is read whole (every voxel is checked for NaN and infinity)",
                         source.dtype)
            return False
        return choice == "sampled" or float(np.prod(source.shape)) >= SAMPLED_MIN_VOXELS

    def compile(self, voxels: int) -> bool:
        """Whether to torch.compile the network: asked for, or (auto) on CUDA for a volume whose
        size repays the compile time."""
        choice = self.config.compile
        if choice == "auto":
            passes = len(self.planes) * len(tta.transforms(self.config.tta))
            return self.device.type == "cuda" and self.backend == "torch" and voxels * passes >= COMPILE_MIN_VOXELS
        return choice == "on"


def _read_block(source: VolumeSource, axis: int, lo: int, hi: int) -> np.ndarray:
    """Images lo..hi-1 along ``axis`` as (n, h, w) with the slicing axis first."""
    if axis == 0:
        return source.read_slab(lo, hi)
    region = [slice(None)] * 3
    region[axis] = slice(lo, hi)
    return np.moveaxis(source.read_region(*region), axis, 0)


def _blocks(n: int, size: int, start: int = 0, first: int = 0) -> list[tuple[int, int]]:
    """Images [start, n) in blocks of ``size``; from 0, a first block of ``first`` images (one forward pass)
    lets computing start as soon as one pass is read. The boundaries depend on the settings only, so a
    resumed run (which starts at a finished block's end) meets the same blocks as an uninterrupted one."""
    if start == 0 and 0 < first < min(size, n):
        return [(0, first)] + _blocks(n, size, start=first)
    return [(i, min(i + size, n)) for i in range(start, n, size)]


class _PlanePredictor:
    """Predicts blocks of images along one plane: raw block -> logits (n, K, h, w).

    ``read`` runs in the background reader thread: it reads the block and prepares it for the device
    (on CPU: 8/16-bit voxels as they are, often a view of the source, other dtypes normalised; on CUDA:
    the raw voxels in pinned memory). ``chunks`` runs on the compute thread: each forward pass's images
    are normalised there (CPU, 8/16-bit: just before the network reads them; CUDA: on the device)."""

    def __init__(self, plan: _Plan, plane: Plane, stats: NormStats, backend, dtype):
        self.plan = plan
        self.device = backend.device
        self.axis = PLANE_AXIS[plane]
        self.n = plan.shape[self.axis]
        self.halo = halo(plan.context)
        self.normaliser = Normaliser(stats, plan.meta.normalization, dtype, self.device)
        self.tiler = Tiler(backend, tile=plan.tile(plane), overlap=plan.config.overlap, blend=plan.config.blend,
                           batch_size=plan.batch_size(plane), num_classes=plan.channels, align=plan.align)

    def read(self, source: VolumeSource, block: tuple[int, int]) -> tuple[int, torch.Tensor]:
        lo, hi = max(0, block[0] - self.halo), min(self.n, block[1] + self.halo)
        if self.axis == 0 and self.normaliser.per_pass:
            view = source.view_slab(lo, hi)
            if view is not None:
                return lo, self.normaliser.prepare(view)
        return lo, self.normaliser.prepare(_read_block(source, self.axis, lo, hi))

    def chunks(self, block: tuple[int, int], lo: int, prepared,
               helper: "_Helper | None" = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(i, logits (m, K, h, w) float32) for the block's images i..i+m-1, a forward pass's worth at a
        time, so no more than one pass of logits exists at once. A raw CPU block (:attr:`Normaliser.per_pass`)
        is normalised a pass at a time into pooled buffers: by ``helper``'s thread while the network runs the
        pass before (so the compute thread only runs the network), else on this thread just before."""
        per_pass = self.normaliser.per_pass
        rows = prepared if per_pass else self.normaliser.on_device(prepared)  # (rows, h, w)
        centres = np.arange(*block) - lo
        step = self.tiler.images_per_pass(*rows.shape[-2:])
        starts = range(0, len(centres), step)

        def images_of(i: int):
            return self._pass_images(rows, centres[i:i + step], lo)

        if not per_pass:
            for i in starts:
                yield i, tta.averaged(self.tiler, images_of(i), self.plan.config.tta)
            return
        upcoming = None
        for i in starts:
            normed = upcoming.result() if upcoming is not None else self.normaliser.normalised(images_of(i))
            upcoming = (helper.start(self.normaliser.normalised, images_of(i + step))
                        if helper is not None and i + step < len(centres) else None)
            try:
                logits = tta.averaged(self.tiler, torch.from_numpy(normed), self.plan.config.tta)
            finally:
                self.normaliser.give(normed)
            yield i, logits

    def _pass_images(self, rows, part: np.ndarray, lo: int):
        """The (m, C, h, w) images of one pass centred on block rows ``part`` (a numpy array or a tensor,
        as ``rows`` is): a view for 2D models, the 2.5D context stacks otherwise."""
        if self.plan.context == 1:
            return rows[part[0]:part[-1] + 1, None]
        idx = context_indices(part + lo, self.n, self.plan.context) - lo
        return rows[idx] if isinstance(rows, np.ndarray) else rows[torch.from_numpy(idx).to(rows.device)]


class Normaliser:
    """Raw images (any dtype, any layout) -> normalised float32 tensors on ``device``.

    On CPU, 8/16-bit integer data are normalised one forward pass at a time into a reused float32
    buffer, in one pass over the voxels (:func:`bone_avizo.kernels.normalise_into`: the same float32
    operations as ``normalize``, without torch's threads), so the network reads them from cache; other
    dtypes go through ``normalize`` block by block.
    On CUDA the raw voxels travel (pinned, 1-2 bytes each) and a lookup table (:func:`lookup_table`,
    bit-identical) is applied on the device."""

    def __init__(self, stats: NormStats, mode: str, dtype, device: torch.device):
        self.stats, self.mode, self.device, self.dtype = stats, mode, device, dtype
        self.index_dtype = index_dtype(dtype)  # None unless 8/16-bit integers
        self.on_host = device.type == "cpu"  # else raw voxels travel and the device normalises them
        self.affine = affine(stats, mode)  # (offset, scale, low, high)
        self._buffers = BufferPool()

    @functools.cached_property
    def table(self) -> np.ndarray | None:
        """The lookup table of the device route (None for dtypes without one); built when first used."""
        return lookup_table(self.stats, self.mode, self.dtype)

    @functools.cached_property
    def _device_table(self) -> torch.Tensor | None:
        return torch.from_numpy(self.table).to(self.device) if self.table is not None else None

    @property
    def per_pass(self) -> bool:
        """Whether :meth:`prepare` hands over the raw voxels (CPU, 8/16-bit; a read-only view of the source
        will do) and each forward pass's images are normalised on the compute thread (:meth:`normalised`)
        just before the network reads them, while they are in cache."""
        return self.on_host and self.index_dtype is not None

    def normalised(self, raw: np.ndarray) -> np.ndarray:
        """8/16-bit ``raw`` of any shape normalised into a pooled float32 array (give it back after use)."""
        return kernels.normalise_into(raw, self._buffers.take(raw.shape, np.float32), self.affine)

    def give(self, normed: np.ndarray) -> None:
        """A buffer from :meth:`normalised` that nothing reads any more: it serves the next pass."""
        self._buffers.give(normed)

    def prepare(self, raw: np.ndarray):
        """Background-thread half: normalised on CPU (or raw, see :attr:`per_pass`), or raw (pinned) for a
        device."""
        if self.per_pass:
            return raw
        if self.on_host:
            return normalize(torch.from_numpy(_float_safe(raw)), self.stats, self.mode)
        if self.table is not None:
            signed = raw.view(np.int16 if self.index_dtype is np.uint16 else np.int8)  # torch lacks uint16 ops
            return _pinned(torch.from_numpy(np.ascontiguousarray(signed)))
        return _pinned(torch.from_numpy(np.ascontiguousarray(_float_safe(raw))))

    def on_device(self, prepared: torch.Tensor) -> torch.Tensor:
        """Compute-thread half: the normalised (float32) block on the device."""
        if self.on_host:
            return prepared
        data = prepared.to(self.device, non_blocking=True)
        if self.table is None:
            return normalize(data, self.stats, self.mode)
        mask = 0xFFFF if self.index_dtype is np.uint16 else 0xFF
        return self._device_table[data.to(torch.int32).bitwise_and_(mask)]


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in page-locked memory (fast, asynchronous host-to-device copies), if CUDA can pin it."""
    try:
        return tensor.pin_memory()
    except RuntimeError:
        return tensor


def labels_from_scores(scores: torch.Tensor, *, overwrite: bool = False,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """argmax over classes of (n, K, h, w) scores as uint8 (n, h, w) (or (n, K, *rest) as (n, *rest));
    ties go to the lower class. One channel (K = 1) is a binary model's logit: 1 where it is > 0, else 0.

    On CPU, in this thread, one pass over the scores (:func:`bone_avizo.kernels.labels_into`):
    several times faster than ``argmax(1)`` on this layout, and unlike torch's intra-op threads it does
    not stall when other processes load the cores. It is bound by memory traffic, which a second
    thread does not add to. ``overwrite`` is accepted for callers that no longer need ``scores`` (the
    CPU path never changes them); ``out``, a uint8 (n, h, w) tensor on the scores' device, receives the
    labels (and is returned)."""
    if scores.device.type != "cpu":
        if scores.shape[1] == 1:
            labels = (scores[:, 0] > 0).to(torch.uint8)
        else:
            labels = scores.argmax(1).to(torch.uint8)  # argmax returns the first maximum: the same ties
        return labels if out is None else out.copy_(labels)
    if out is not None and not out.is_contiguous():
        return out.copy_(labels_from_scores(scores))
    if scores.dtype == torch.bfloat16:  # numpy has no bfloat16
        scores = scores.float()
    shape = scores.shape[:1] + scores.shape[2:]
    array = scores.numpy().reshape(scores.shape[0], scores.shape[1], -1)  # (n, K, pixels)
    n = array.shape[0]
    labels = np.empty((n, array.shape[2]), dtype=np.uint8) if out is None else out.numpy().reshape(n, -1)
    kernels.labels_into(array, labels)
    return torch.from_numpy(labels.reshape(shape)) if out is None else out


def _float_safe(raw: np.ndarray) -> np.ndarray:
    """Unsigned 16/32/64-bit data as float32 (torch handles few ops on those dtypes)."""
    return raw.astype(np.float32) if raw.dtype.kind == "u" and raw.dtype.itemsize > 1 else raw


def _class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(n, K, h, w) logits -> (n, K, h, w) class probabilities: softmax; one channel (a binary model's
    logit z) -> (n, 2, h, w): background 1 - sigmoid(z), foreground sigmoid(z)."""
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits)
        return torch.cat([1 - foreground, foreground], 1)
    return torch.softmax(logits, 1)


def _quantise(probabilities: torch.Tensor, scale: int = 255) -> torch.Tensor:
    """Probabilities in [0, 1] as integers 0..scale (uint8 when scale <= 255, else int32)."""
    out = probabilities.mul(float(scale)).round_()
    return out.to(torch.uint8) if scale <= 255 else out.to(torch.int32)


def _finished_outputs(paths: list[Path]) -> set[Path]:
    """When resuming: the outputs a killed run had already finished (it was killed between committing its
    outputs, or after committing them all). They are kept as they are, if every other output of the job is
    still a resumable partial one; otherwise an existing output is refused as usual."""
    if not all(get_format(detect_format(p, for_writing=True)).writer.resumable for p in paths):
        return set()
    finished = {p for p in paths if p.exists() and not partial_path(p).exists()}
    pending = [p for p in paths if partial_path(p).exists()]
    return finished if len(finished) + len(pending) == len(paths) else set()


class _KeptOutput:
    """A finished output of the run being resumed: nothing is written to it, commit leaves it as it is."""

    def __init__(self, path: Path, info: VolumeInfo):
        self.path, self.info, self.done_slices = path, info, info.shape[0]
        log.info("resuming: %s is already complete", path)

    def write_slab(self, z0: int, slab: np.ndarray) -> None:
        pass

    def mark_done(self, z_end: int) -> None:
        pass

    def commit(self) -> Path:
        return self.path


class _Outputs:
    """The label writer and optional probability writers, opened before any work is done."""

    def __init__(self, stack: ExitStack, info: VolumeInfo, plan: _Plan, output, *, overwrite: bool,
                 resume: bool):
        label_info = info.with_(dtype=np.dtype(np.uint8), class_names=plan.class_names,
                                name=f"{info.name}_labels")
        prob_info = info.with_(dtype=np.dtype(np.uint8), class_names=None)
        self.output = Path(output) if output is not None else None
        self.probability_paths: list[Path] = []
        if self.output is None:
            self.labels = stack.enter_context(MemoryWriter(label_info))
            self.probs = [stack.enter_context(MemoryWriter(prob_info.with_(name=f"{info.name}_prob_{n}")))
                          for n in plan.class_names] if plan.config.probabilities else []
            return
        if plan.config.probabilities:
            self.probability_paths = [probability_path(self.output, name) for name in plan.class_names]
        kept = _finished_outputs([self.output, *self.probability_paths]) if resume else set()

        def writer(path: Path, path_info: VolumeInfo):
            if path in kept:
                return _KeptOutput(path, path_info)
            return stack.enter_context(create_writer(path, path_info, overwrite=overwrite, resume=resume))

        self.labels = writer(self.output, label_info)
        self.probs = [writer(path, prob_info.with_(name=f"{info.name}_prob_{name}"))
                      for path, name in zip(self.probability_paths, plan.class_names)]

    @property
    def done_slices(self) -> int:
        return min([self.labels.done_slices] + [w.done_slices for w in self.probs])

    def write(self, z0: int, labels: np.ndarray, quantised: np.ndarray | None) -> None:
        """labels (n, y, x) uint8; quantised (K, n, y, x) uint8 probabilities or None."""
        self.labels.write_slab(z0, labels)
        for k, writer in enumerate(self.probs):
            writer.write_slab(z0, quantised[k])
        z_end = z0 + labels.shape[0]
        for writer in (self.labels, *self.probs):
            writer.mark_done(z_end)


def predict_volume(source, model, config: PredictConfig | None = None, *, output=None,
                   overwrite: bool = False, progress: ProgressCallback | None = None,
                   ranks: Ranks | None = None) -> PredictionResult:
    """Predict a label volume (z, y, x) uint8 from ``source`` with ``model``.

    source: a VolumeSource, Volume or (z, y, x) array. model: a loaded model (``.module``,
    ``.metadata``) or a model file path. output: a path in any writable format, or None to return
    the labels in memory. Probability maps (config.probabilities) go to ``<stem>_prob_<class>``.
    ranks: this process's place in a job (default: from the environment, see :mod:`bone_avizo.runtime`).
    With several ranks the ranks share the volume (see :mod:`bone_avizo.predict.distributed`); every
    rank returns, rank 0 writes the output.
    """
    config = config or PredictConfig()
    bound_heap()
    source = _as_source(source)
    loaded = _load(model)
    plan = _Plan(source, loaded, config, ranks_from_env() if ranks is None else ranks)
    _check_job(plan, output, overwrite)
    if isinstance(loaded, LoadingModel):
        loaded.start()  # its network loads beside the statistics pass
    if plan.ranks.distributed:
        plan.model_digest = weights_digest(loaded.module)
    start = time.perf_counter()
    with ExitStack() as stack, _torch_threads(config.threads):
        outputs = None if plan.ranks.rank else _Outputs(stack, source.info, plan, output, overwrite=overwrite,
                                                         resume=config.resume)
        light = STATS_UNITS.get(plan.device.type, PREDICT_UNITS)
        steps = (source.shape[0] * (1 + plan.fused) * light
                 + PREDICT_UNITS * sum(source.shape[PLANE_AXIS[p]] for p in plan.planes))
        tracker = ProgressTracker(steps, "predicting", progress)
        source = RetainedSource(source, int(config.memory_limit_gb * (1 << 30) * RETAINED_SHARE))
        stack.callback(source.forget)
        stack.callback(plan.helper.close)
        stats, backends = _stats_while_building(source, loaded, plan, tracker.phase(light))
        source.stop_retaining()
        predicting = tracker.phase(PREDICT_UNITS)
        if plan.ranks.distributed:
            _predict_ranked(source, plan, stats, backends, outputs, Path(output), predicting)
        elif plan.fused:
            _predict_fused(source, plan, stats, backends, outputs, predicting, tracker.phase(light))
        else:
            _predict_streamed(source, plan, stats, backends, outputs, predicting)
        labels = outputs.labels.commit() if outputs else None
        probabilities = [writer.commit() for writer in outputs.probs] if outputs else []
    if plan.ranks.distributed:
        barrier(plan.ranks, [])  # the other ranks return once rank 0 has committed
        if plan.ranks.rank == 0:
            remove_parts(Path(output), plan.ranks)
    seconds = time.perf_counter() - start
    voxels = float(np.prod(source.shape))
    log.info("predicted %s voxels in %.1f s (%.2f Mvoxel/s)", f"{voxels:.3g}", seconds, voxels / seconds / 1e6)
    return PredictionResult(
        labels=labels if output is None else None, output=Path(output) if output is not None else None,
        probability_outputs=outputs.probability_paths if outputs else [], stats=stats, seconds=seconds,
        voxels_per_second=voxels / seconds, tile=plan.tile(plan.planes[0]), batch_size=plan.batch_size(plan.planes[0]),
        slab_slices=plan.slab_images(plan.planes[0], source.dtype.itemsize), backend=plan.backend,
        device=",".join(str(d) for d in plan.devices), probabilities=probabilities if output is None else [],
        statistics=plan.statistics)


def _check_job(plan: _Plan, output, overwrite: bool) -> None:
    """Refuse combinations the engine cannot run, before any work."""
    if plan.config.compile == "on" and plan.backend != "torch":
        raise ConfigError(f"--compile on needs --backend torch (the {plan.backend} backend optimises the "
                          "network itself); drop --compile or add --backend torch")
    check_precision(plan.backend, plan.config.precision)
    if plan.config.resume and plan.fused:
        raise ConfigError("--resume works for single-plane (xy) prediction; rerun without --resume")
    if plan.ranks.distributed:
        if output is None:
            raise ConfigError("several ranks (torchrun/SLURM) need an output file; give --output")
        if plan.fused:
            raise ConfigError("multi-plane fusion runs in one process; use --devices cuda:0,cuda:1 to share "
                              "it between GPUs, or predict the xy plane under torchrun")
        check_output_path(Path(output), overwrite=overwrite)


def _stats_while_building(source, loaded, plan: _Plan, tracker: ProgressPhase) -> tuple[NormStats, list]:
    """The statistics pass (this thread, with progress) while the backends are built in another thread
    (an ONNX export or session, CUDA start-up, weights moved to the device): neither needs the other."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bone_avizo-backends") as pool:
        building = pool.submit(_backends, loaded, plan)
        try:
            stats = _stats(source, plan, _StopOnFailure(tracker, building))
        except BaseException:
            building.cancel()
            raise
        return stats, building.result()


class _StopOnFailure:
    """The statistics pass's progress phase, which also ends the pass as soon as the backends have failed
    to build (a damaged model file loading in the background), instead of after the whole scan."""

    def __init__(self, phase: ProgressPhase, building: Future):
        self._phase, self._building = phase, building

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        if self._building.done() and self._building.exception() is not None:
            self._building.result()  # raises the builder's error
        self._phase.advance(steps, message)

    def __getattr__(self, name):
        return getattr(self._phase, name)


def _backends(loaded, plan: _Plan) -> list:
    """One backend per device, each with its own copy of the network (the caller's stays as it is)."""
    backends = []
    for device in plan.devices:
        backends.append(build_backend(loaded.module, backend=plan.backend, device=device,
                                      precision=plan.config.precision, threads=plan.config.threads,
                                      in_channels=plan.context, compile=plan.compile(int(np.prod(plan.shape)))))
    return backends


@contextmanager
def _torch_threads(threads: int):
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _FiniteSource(VolumeSource):
    """Reads through ``source`` and refuses NaN or infinite voxels: they would be segmented silently
    (as class 0), and one infinite voxel spoils the normalisation of the whole scan."""

    def __init__(self, source: VolumeSource):
        self.source, self.info = source, source.info

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        slab = self.source.read_slab(z0, z1)
        bad = np.flatnonzero(~np.isfinite(slab).reshape(len(slab), -1).all(axis=1))
        if bad.size:
            raise InvalidVolumeError(f"{self.name} contains NaN or infinite values (the first in slice "
                                     f"z={z0 + int(bad[0])}); replace them (e.g. numpy.nan_to_num) before segmenting")
        return slab


def _stats(source: VolumeSource, plan: _Plan, tracker: ProgressPhase) -> NormStats:
    mask = getattr(plan.meta, "normalization_mask", StatsMask.POSITIVE)
    if plan.sampled_statistics(source):
        stats, report = sampled_stats(source, mask=mask, progress=tracker)
        plan.statistics = report.describe()
    else:
        slab = plan.slab_images(Plane.XY, source.dtype.itemsize)
        checked = _FiniteSource(source) if source.dtype.kind == "f" else source
        stats = scan_stats(checked, slab_slices=slab, progress=tracker, mask=mask)
        plan.statistics = "exact (every slice)"
    log.info("normalisation (%s over %s, %s): mean %.4g, std %.4g, min %.4g, max %.4g", plan.meta.normalization,
             MASK_WORDS[StatsMask(mask)], plan.statistics, stats.mean, stats.std, stats.minimum, stats.maximum)
    return stats


class _HostArray:
    """A device tensor on its way to host memory: ``get()`` waits for the copy (or, on CPU, for ``ready``:
    the helper thread's last labels of the block) and returns the array; ``release()`` gives a CPU
    tensor's array back to ``pool`` once nothing reads it any more."""

    def __init__(self, tensor: torch.Tensor, pool: BufferPool | None = None, ready: Future | None = None):
        self._event, self._pool, self._ready = None, None, ready
        if tensor.device.type == "cpu":
            self._array, self._pool = tensor.numpy(), pool
            return
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)  # the compute thread goes on while the copy runs
        self._event = torch.cuda.Event()
        self._event.record(torch.cuda.current_stream(tensor.device))
        self._array = host.numpy()

    def get(self) -> np.ndarray:
        if self._ready is not None:
            self._ready.result()  # re-raises the labels' error
            self._ready = None
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._array

    def release(self) -> None:
        if self._pool is not None:
            self._pool.give(self._array)
            self._pool = None


def _labels_and_probabilities(predictor: "_PlanePredictor", block, data, *, probabilities: bool,
                              progress: ProgressPhase | None = None):
    """Compute one xy block: labels (n, y, x) uint8 and quantised probabilities (K, n, y, x) or None,
    each as a :class:`_HostArray`; ``progress`` advances by each forward pass's images."""
    lo, prepared = data
    n, (h, w) = block[1] - block[0], prepared.shape[-2:]
    device = predictor.device
    pool = predictor.plan.label_buffers if device.type == "cpu" else None
    with torch.inference_mode():
        labels = (torch.from_numpy(pool.take((n, h, w), np.uint8)) if pool is not None
                  else torch.empty((n, h, w), dtype=torch.uint8, device=device))
        quantised = (torch.empty((predictor.plan.num_classes, n, h, w), dtype=torch.uint8, device=device)
                     if probabilities else None)
        helper = predictor.plan.helper if device.type == "cpu" else None
        for i, logits in predictor.chunks(block, lo, prepared, helper):
            if quantised is not None:
                quantised[:, i:i + len(logits)] = _quantise(_class_probabilities(logits)).transpose(0, 1)
            if helper is not None:
                helper.submit_labels(logits, labels[i:i + len(logits)])
            else:
                labels_from_scores(logits, overwrite=True, out=labels[i:i + len(logits)])
            if progress is not None:
                progress.advance(len(logits))
        ready = helper.detach() if helper is not None else None  # the block's last labels: the writer waits
        return _HostArray(labels, pool, ready), (_HostArray(quantised) if quantised is not None else None)


class _Helper:
    """The CPU compute thread's helper, one background thread: a forward pass's labels
    (:meth:`submit_labels`) and the next pass's normalisation (:meth:`start`) run there while the compute
    thread runs the network, so on 2 cores one core runs the network and the other everything around it.
    At most one pass's labels wait at a time; a block's last ones are waited for by its writer
    (:meth:`detach`), not by the compute thread."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._labels = None

    def start(self, func, *args) -> Future:
        """``func(*args)`` on the helper thread, after what was submitted before."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bone_avizo-helper")
        return self._pool.submit(func, *args)

    def submit_labels(self, scores: torch.Tensor, out: torch.Tensor) -> None:
        """Labels of (m, K, h, w) ``scores`` into uint8 (m, h, w) ``out``, once the previous pass's are done."""
        self.wait()
        self._labels = self.start(functools.partial(labels_from_scores, overwrite=True, out=out), scores)

    def wait(self) -> None:
        """Wait for the submitted labels; re-raise their error."""
        pending = self.detach()
        if pending is not None:
            pending.result()

    def detach(self) -> Future | None:
        """The submitted labels' future (None if none), no longer waited for here: whoever reads those
        labels waits for it (the compute thread goes on with the next block meanwhile)."""
        pending, self._labels = self._labels, None
        return pending

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _host(item):
    return item.get() if item is not None else None


def _run_blocks(source, plan: _Plan, plane: Plane, stats, backends, blocks, compute):
    predictors = [_PlanePredictor(plan, plane, stats, b, source.dtype) for b in backends]
    return map_blocks(lambda p, b: p.read(source, b), compute, predictors, blocks)


def _predict_streamed(source, plan: _Plan, stats, backends, outputs: _Outputs, tracker) -> None:
    """Single xy plane: each block goes from the reader through the model to the writers."""
    done = outputs.done_slices
    if done:
        log.info("resuming after %d finished slices", done)
        tracker.advance(done)
    per_pass, per_block = _progress_steps(tracker, backends)
    compute = functools.partial(_labels_and_probabilities, probabilities=bool(outputs.probs), progress=per_pass)
    with BackgroundWriter() as writer:
        blocks = plan.blocks(Plane.XY, source.dtype.itemsize, start=done)
        for block, (labels, quantised) in _run_blocks(source, plan, Plane.XY, stats, backends, blocks, compute):
            writer.submit(functools.partial(_write_and_release, outputs, block[0], labels, quantised))
            per_block.advance(block[1] - block[0])


def _write_and_release(outputs: _Outputs, z0: int, labels: _HostArray, quantised: _HostArray | None) -> None:
    """Write one block (the writers copy what they keep), then give its label buffer back."""
    outputs.write(z0, labels.get(), _host(quantised))
    labels.release()


class _NoProgress:
    def advance(self, steps: int = 1, message: str | None = None) -> None:
        pass


def _progress_steps(tracker: ProgressPhase, backends) -> tuple[ProgressPhase | None, ProgressPhase | _NoProgress]:
    """(advanced by each forward pass, advanced by each block): one device computes on this thread, so
    progress moves with every forward pass (small scans come in one block); several devices compute on
    worker threads, so it moves as their blocks arrive here."""
    return (tracker, _NoProgress()) if len(backends) == 1 else (None, tracker)


def _predict_ranked(source, plan: _Plan, stats, backends, outputs: _Outputs | None, output: Path,
                    tracker) -> None:
    """This rank's blocks into its part file; then rank 0 merges every part into the output."""
    ranks = plan.ranks
    blocks = plan.blocks(Plane.XY, source.dtype.itemsize)
    fingerprint = job_fingerprint(plan.model_digest, {k: v for k, v in plan.config.to_dict().items()
                                                      if k != "resume"},
                                  source.info.shape, str(source.info.dtype), stats.to_dict(), blocks)
    part = PartWriter(part_path(output, ranks), source.shape, plan.num_classes,
                      probabilities=plan.config.probabilities, resume=plan.config.resume, fingerprint=fingerprint)
    try:
        todo = [b for b in owned_blocks(blocks, ranks) if b not in part.done]
        log.info("rank %d of %d: %d of %d blocks to predict", ranks.rank, ranks.world, len(todo), len(blocks))
        compute = functools.partial(_labels_and_probabilities, probabilities=plan.config.probabilities)
        for block, (labels, quantised) in _run_blocks(source, plan, Plane.XY, stats, backends, todo, compute):
            part.write(block, labels.get(), _host(quantised))
            tracker.advance((block[1] - block[0]) * ranks.world)
        part.finish()
    except BaseException as exc:
        part.fail(exc)
        raise
    barrier(ranks, [part_path(output, ranks, r) for r in range(ranks.world)], fingerprint=fingerprint)
    if outputs is not None:
        merge_parts(output, ranks, blocks, outputs.write)


def _fusion_compute(predictor: "_PlanePredictor", block, data, *, scale: int,
                    progress: ProgressPhase | None = None) -> np.ndarray:
    """Quantised probabilities (K, ...) of one block, axes back in (z, y, x) order."""
    lo, prepared = data
    n, (h, w) = block[1] - block[0], prepared.shape[-2:]
    dtype = torch.uint8 if scale <= 255 else torch.int32
    with torch.inference_mode():
        quantised = torch.empty((predictor.plan.num_classes, n, h, w), dtype=dtype, device=predictor.device)
        for i, logits in predictor.chunks(block, lo, prepared):
            quantised[:, i:i + len(logits)] = _quantise(_class_probabilities(logits), scale).transpose(0, 1)
            if progress is not None:
                progress.advance(len(logits))
        return np.moveaxis(quantised.cpu().numpy(), 1, predictor.axis + 1)


def _predict_fused(source, plan: _Plan, stats, backends, outputs: _Outputs, tracker, final) -> None:
    """Several planes: sum quantised probabilities on disk, then write the argmax by z-slabs."""
    folder = outputs.output.parent if outputs.output is not None else None
    per_pass, per_block = _progress_steps(tracker, backends)
    compute = functools.partial(_fusion_compute, scale=FusionBuffer.scale_for(len(plan.planes)), progress=per_pass)
    with FusionBuffer(plan.num_classes, source.shape, folder=folder) as buffer:
        for plane in plan.planes:
            axis = PLANE_AXIS[plane]
            blocks = plan.blocks(plane, source.dtype.itemsize)
            with BackgroundWriter() as writer:
                for block, quantised in _run_blocks(source, plan, plane, stats, backends, blocks, compute):
                    writer.submit(lambda s=block[0], q=quantised, a=axis: buffer.add(a, s, q))
                    per_block.advance(block[1] - block[0])
        _write_fused(buffer, plan, source, outputs, final)


def _write_fused(buffer: FusionBuffer, plan: _Plan, source, outputs: _Outputs, tracker) -> None:
    full_scale = FusionBuffer.scale_for(len(plan.planes)) * len(plan.planes)
    size = plan.slab_images(Plane.XY, source.dtype.itemsize)
    for z0, z1 in _blocks(source.shape[0], size):
        sums = buffer.read(z0, z1)
        labels = labels_from_scores(torch.from_numpy(sums.astype(np.int32))[None])[0].numpy()
        quantised = (np.rint(sums * (255.0 / full_scale)).astype(np.uint8) if outputs.probs else None)
        outputs.write(z0, labels, quantised)
        tracker.advance(z1 - z0)
