"""DLFit: train a 2D / 2.5D segmentation network on many labelled scans.

``fit_model(train_scans, config, output=...)`` checks every input first (see
:mod:`bone_avizo.fit.plan`), then trains epoch by epoch: seeded crops of the training slices
(read lazily from the scans), forward/backward with optional AMP and gradient accumulation, a
validation pass over the validation scans, cosine learning-rate annealing, and after every epoch
an atomic checkpoint and logs. The best epoch's weights (highest mean IoU over all classes, BONe's
score) go to the model file ``output`` with their metadata. ``resume=True`` continues from the
checkpoint; with ``deterministic`` the result is bit-identical to an uninterrupted run.
Under torchrun or SLURM's srun each process trains on its share of the slices
(DistributedDataParallel); a cancel on any rank stops every rank at the next batch.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from bone_avizo import __version__
from bone_avizo._memory import peak_memory_gb
from bone_avizo.config import FitConfig
from bone_avizo.data.augment import Augmenter
from bone_avizo.data.datasets import (EpochSampler, PatchDataset, PatchSettings, SliceSet, collate_patches,
                                      steps_for, worker_init)
from bone_avizo.data.scans import ScanSpec, as_specs
from bone_avizo.errors import Cancelled, ConfigError, OutputExistsError
from bone_avizo.fit import checkpoint as ckpt
from bone_avizo.fit.distributed import DistContext, init_distributed, lost_ranks_fail, shutdown
from bone_avizo.fit.logs import RunLog, log_paths, started_without_epochs
from bone_avizo.fit.losses import build_loss
from bone_avizo.fit.network import build_network, check_architecture
from bone_avizo.fit.optim import build_optimizer, build_scheduler
from bone_avizo.fit.plan import FitPlan, make_plan
from bone_avizo.fit.validate import Validator, scores
from bone_avizo.io.base import check_output_path
from bone_avizo.models import ModelMetadata, count_parameters, estimate_gflops, save_model
from bone_avizo.models.modelfile import unwrap_module
from bone_avizo.progress import ProgressCallback, ProgressTracker
from bone_avizo.runtime import Ranks, ranks_from_env

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a run produced: the model file, the checkpoint, the best epoch and the history."""

    model_path: Path
    checkpoint_path: Path
    best_epoch: int
    best_score: float | None
    history: list[dict[str, Any]]
    seconds: float
    metadata: ModelMetadata | None = None
    log_paths: dict[str, Path] = field(default_factory=dict)


def _set_determinism(config: FitConfig) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def _check_outputs(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a model or a checkpoint of another run (before any work)."""
    if resume:
        return
    check_output_path(output, overwrite=overwrite)
    existing = ckpt.checkpoint_path(output)
    if existing.exists() and not overwrite:
        raise OutputExistsError(f"a checkpoint of an earlier run exists ({existing}); continue it with "
                                "--resume, or start again with --overwrite")


# Fewer optimiser steps than this rarely learn more than the commonest class: a rule of thumb of this
# project (Adam at lr 1e-3 moves a new network for a few hundred steps before its masks take shape), not a
# measured limit. Fine-tuning a trained model file starts close to the goal and needs fewer.
MIN_STEPS = 200
MIN_STEPS_FINE_TUNING = 50


def report_budget(config: FitConfig, *, batches: int, world_size: int = 1) -> int:
    """Log the run's total optimiser steps and patches seen; warn with a suggestion when the steps are
    fewer than MIN_STEPS (MIN_STEPS_FINE_TUNING from a model file). Returns the total steps."""
    steps_per_epoch = math.ceil(batches / config.accumulate)
    steps = config.epochs * steps_per_epoch
    patches = config.epochs * batches * config.batch_size * world_size * config.patches_per_slice
    log.info("training budget: %d epochs x %d optimiser steps = %d steps; %d patches of %d px seen "
             "(%d slices x %d patches per batch%s)", config.epochs, steps_per_epoch, steps, patches,
             config.patch_size, config.batch_size * world_size, config.patches_per_slice,
             f", {config.accumulate} batches per step" if config.accumulate > 1 else "")
    fine_tuning = str(config.weights) not in ("random", "imagenet")
    needed = MIN_STEPS_FINE_TUNING if fine_tuning else MIN_STEPS
    if steps < needed:
        log.warning("only %d optimiser steps in this run, too few to learn well (at least %d %s); set "
                    "--steps-per-epoch %d (each step takes new random crops), or more --epochs, or a smaller "
                    "--batch-size", steps, needed, "to fine-tune a model" if fine_tuning else "from new weights",
                    math.ceil(needed / config.epochs))
    return steps


class _Run:
    """The state of one training run in this process."""

    def __init__(self, plan: FitPlan, config: FitConfig, ctx: DistContext, output: Path, inputs: dict):
        self.plan, self.config, self.ctx, self.output, self.inputs = plan, config, ctx, output, inputs
        torch.manual_seed(config.seed)
        self.net = build_network(config, num_classes=plan.num_classes, device=ctx.device)
        self.model = self.net.module
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.net.module, device_ids=ids)
        self.loss_fn = build_loss(config.loss)
        self.optimizer = build_optimizer([p for p in self.net.module.parameters() if p.requires_grad], config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.use_amp = config.amp and ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.settings = PatchSettings(config.patch_size, config.patches_per_slice, config.max_overlap,
                                      config.foreground_crops, config.in_channels, config.normalization,
                                      config.seed, config.cache_slices)
        self.augmenter = Augmenter(config.normalization, bone=config.augment, extras=tuple(config.extra_augment))
        self.batches = steps_for(len(plan.train_refs), batch_size=config.batch_size, world_size=ctx.world_size,
                                 steps_per_epoch=config.steps_per_epoch * config.accumulate)
        self.sampler = EpochSampler(plan.train_refs, seed=config.seed, steps=self.batches,
                                    batch_size=config.batch_size, rank=ctx.rank, world_size=ctx.world_size)
        self.dataset = PatchDataset(plan.train_specs, plan.train_stats, self.settings, augmenter=self.augmenter)
        self.loader = self._loader()
        self.validator = self._validator()
        self.history: list[dict[str, Any]] = []
        self.best_epoch, self.best_score, self.best_state = -1, None, None
        self.start_epoch, self.seconds_before = 0, 0.0

    def _loader(self) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
                          collate_fn=collate_patches, num_workers=workers, worker_init_fn=worker_init,
                          pin_memory=self.ctx.device.type == "cuda", persistent_workers=workers > 0,
                          prefetch_factor=4 if workers else None)

    def _validator(self) -> Validator | None:
        if not self.plan.val_refs:
            return None
        slices = SliceSet(self.plan.val_specs, self.plan.val_stats, self.settings)
        refs = self.plan.val_refs[self.ctx.rank::self.ctx.world_size]
        return Validator(slices, refs, num_classes=self.plan.num_classes, patch_size=self.config.patch_size,
                         mode=self.config.val_mode, batch_size=self.config.batch_size * self.config.patches_per_slice,
                         device=self.ctx.device, autocast=self._autocast)

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # -- one epoch ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int, tracker: ProgressTracker) -> float:
        self.sampler.set_epoch(epoch)
        self.model.train()
        total = torch.zeros(2, dtype=torch.float64)
        accumulate = self.config.accumulate
        self.optimizer.zero_grad(set_to_none=True)
        for i, (images, labels) in enumerate(self.loader):
            images = images.to(self.ctx.device, non_blocking=True)
            labels = labels.to(self.ctx.device, non_blocking=True)
            last = (i + 1) % accumulate == 0 or i + 1 == self.batches
            sync = contextlib.nullcontext() if last or not self.ctx.distributed else self.model.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(self.model(images), labels)
                self.scaler.scale(loss / accumulate).backward()
            if last:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            total += torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64)
            self._step_done(tracker, f"epoch {epoch + 1}/{self.config.epochs}")
        self.ctx.all_sum(total)
        return float(total[0] / max(total[1], 1.0))

    def _step_done(self, tracker: ProgressTracker, message: str) -> None:
        """Report a finished batch. Under DDP the ranks agree after every batch whether one of them
        was asked to stop (one all_reduce of one integer), and all raise the same Cancelled."""
        try:
            tracker.advance(1, message)
            asked = False
        except Cancelled:
            if not self.ctx.distributed:
                raise
            asked = True
        if self.ctx.distributed and (rank := self.ctx.first_asking(asked)) is not None:
            raise Cancelled(f"training: cancelled by the user on rank {rank} at step {tracker.done}/{tracker.total}; "
                            f"every rank stopped, the checkpoint of the last finished epoch is kept (continue with "
                            "--resume)")

    def validate(self) -> dict[str, Any]:
        self.ctx.sync_buffers(self.net.module)  # every rank validates (and keeps) rank 0's statistics
        if self.validator is None:
            return {}
        cm = self.ctx.all_sum(self.validator.confusion(self.net.module))
        result = scores(cm.numpy())
        return {"val_mean_iou": result["mean_iou"], "val_mean_iou_fg": result["mean_iou_fg"],
                "val_iou": result["iou"]}

    def record(self, epoch: int, train_loss: float, lr: float, val: dict[str, Any], seconds: float) -> bool:
        """Append the epoch to the history; True when it is the best epoch so far."""
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr, **val, "seconds": round(seconds, 3)}
        self.history.append(row)
        score = val.get("val_mean_iou")
        better = (self.validator is None or self.best_state is None
                  or (score is not None and (self.best_score is None or score > self.best_score)))
        if better:
            self.best_epoch, self.best_score = epoch + 1, score
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.module.state_dict().items()}
        return better

    def stop_early(self) -> bool:
        patience = self.config.early_stopping
        return bool(patience and self.validator is not None and self.history[-1]["epoch"] - self.best_epoch >= patience)

    # -- checkpoint ----------------------------------------------------------------------------
    def state(self, epoch: int, seconds: float) -> dict[str, Any]:
        return {"model": self.net.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": epoch + 1, "history": copy.deepcopy(self.history), "best_epoch": self.best_epoch,
                "best_score": self.best_score, "best_state": self.best_state, "seconds": seconds,
                "config": self.config.to_dict(), "rng": ckpt.rng_state(), "split": self.plan.describe(),
                "inputs": self.inputs, "world_size": self.ctx.world_size}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.best_epoch, self.best_score = int(state["best_epoch"]), state["best_score"]
        self.best_state = state["best_state"]
        saved_world = int(state.get("world_size", self.ctx.world_size))
        if saved_world != self.ctx.world_size and self.ctx.is_main:
            log.warning("resuming a run of %d process(es) with %d: training continues, but each epoch's slices "
                        "are shared out differently, so the weights will not equal those of an uninterrupted run",
                        saved_world, self.ctx.world_size)
        self.start_epoch, self.seconds_before = int(state["epoch"]), float(state["seconds"])
        ckpt.set_rng_state(state["rng"])

    # -- model file ----------------------------------------------------------------------------
    def metadata(self, seconds: float, epochs_run: int) -> ModelMetadata:
        c, p = self.config, self.plan
        module = self.net.module
        peak_ram, peak_vram = peak_memory_gb(self.ctx.device)
        training = {
            "num_classes": p.num_classes, "patch_size": c.patch_size, "in_channels": c.in_channels,
            "model_arch": self.net.arch, "backbone": self.net.encoder, "normalization": c.normalization,
            "normalization_mask": c.normalization_mask, "augmentations": self.augmenter.describe(), "learning_rate": c.lr, "criterion": c.loss,
            "best_val_score": self.best_score, "best_epoch": self.best_epoch,
            "flops_G": self._flops(),
            "param_count": count_parameters(module), "peak_ram_GB": peak_ram,
            "peak_vram_GB": peak_vram, "wall_time_sec": round(seconds, 2),
            "optimizer": c.optimizer, "epochs": c.epochs, "epochs_run": epochs_run, "seed": c.seed,
            "batch_size": c.batch_size, "patches_per_slice": c.patches_per_slice, "world_size": self.ctx.world_size,
            "device": str(self.ctx.device), "initial_weights": self.net.weights, **p.describe(),
            "history": self.history, "config": c.to_dict(), "bone_avizo_version": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "score": "mean IoU over all classes incl. background on the validation scans "
                     f"({c.val_mode} mode)"}
        return ModelMetadata(self.net.arch, self.net.encoder, c.in_channels, p.num_classes, c.patch_size,
                             class_names=p.class_names, normalization=c.normalization,
                             normalization_stats="per_scan_all" if c.normalization_mask == "all"
                             else "per_scan_nonzero", normalization_mask=c.normalization_mask,
                             context_slices=c.in_channels,
                             planes=tuple(c.planes), arch_options=self.net.arch_options, training=training)

    def _flops(self) -> float:
        if not hasattr(self, "_gflops"):
            self._gflops = round(estimate_gflops(self.net.module, self.config.in_channels, self.config.patch_size), 4)
        return self._gflops

    def save_model(self, seconds: float, epochs_run: int, *, final: bool = False) -> ModelMetadata:
        """Write the best weights so far with their metadata; one log line per new best epoch (the final
        write, which only updates the run's figures, logs at debug level)."""
        meta = self.metadata(seconds, epochs_run)
        module = unwrap_module(self.net.module)
        current = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        module.load_state_dict(self.best_state)
        try:
            save_model(self.output, module, meta, overwrite=True)
        finally:
            module.load_state_dict(current)
        rank = f"rank {self.ctx.rank} " if self.ctx.distributed else ""
        log.log(logging.DEBUG if final else logging.INFO, "%swrote %s (best epoch %d%s)", rank, self.output,
                self.best_epoch, "" if final else " so far")
        return meta

    def close(self) -> None:
        if self.ctx.distributed:  # the DDP wrapper holds the process group: free it (and gloo's threads) now,
            self.model = None     # not at interpreter exit, where they may abort the process
            gc.collect()
        self.dataset.readers.close()
        if self.validator is not None:
            self.validator.slices.close()


def resume_inputs(output) -> tuple[list[ScanSpec], list[ScanSpec], dict[str, Any]]:
    """The training and validation scans and the options of the run whose checkpoint is beside
    ``output`` (to resume without repeating them)."""
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(output))
    inputs = saved.get("inputs") or {}
    return as_specs(inputs.get("train", [])), as_specs(inputs.get("validation", [])), dict(saved["config"])


def fit_model(train: Sequence, config: FitConfig | None = None, *, output, validation: Sequence = (),
              resume: bool = False, overwrite: bool = False, progress: ProgressCallback | None = None,
              ranks: Ranks | None = None) -> FitResult:
    """Train a model on ``train`` scans and write it to ``output`` (a .safetensors model file).

    train / validation: ScanSpecs or (image path, label path) pairs. Without validation scans the
    training scans are split at scan level (config.val_fraction or config.folds). ``resume``
    continues from the checkpoint beside ``output`` (the options that shape training must be the
    same). Returns a FitResult (rank 0 has the metadata). Beside ``output``: ``<output>.ckpt``
    (checkpoint), ``<output>.history.csv/.json``, ``<output>.curves.png``. ranks: this process's place
    in a job (default: from the environment, see :mod:`bone_avizo.runtime`).
    """
    config = config or FitConfig()
    output = Path(output)
    check_architecture(config)
    if resume and not ckpt.checkpoint_path(output).exists() and started_without_epochs(output):
        log.warning("the run writing %s was interrupted before its first checkpoint: starting it afresh", output)
        resume, overwrite = False, True
    _check_outputs(output, resume=resume, overwrite=overwrite)
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(output)) if resume else None
    if saved is not None:
        ckpt.check_resumable(saved["config"], config.to_dict(), ckpt.checkpoint_path(output))
    train, validation = as_specs(train), as_specs(validation)
    inputs = {"train": [s.to_dict() for s in train], "validation": [s.to_dict() for s in validation]}
    if saved is not None and saved.get("inputs") and inputs != saved["inputs"]:
        raise ConfigError(f"the scans differ from those of checkpoint {ckpt.checkpoint_path(output)}; resume "
                          "with the same scans (or give none to reuse them)")
    _set_determinism(config)
    ctx = init_distributed(config.device, ranks_from_env() if ranks is None else ranks)
    try:
        with lost_ranks_fail(ctx, ckpt.checkpoint_path(output)):
            plan = make_plan(train, validation, config)
            run = _Run(plan, config, ctx, output, inputs)
            try:
                return _train(run, saved, progress)
            finally:
                run.close()
    finally:
        shutdown(ctx)


def _weights_checksum(module: torch.nn.Module) -> float:
    """A float64 sum over all parameters and buffers (equal weights give equal sums)."""
    return float(sum(v.detach().double().sum() for v in module.state_dict().values() if v.is_floating_point()))


def _check_ranks_agree(run: _Run) -> None:
    """Under DDP every rank must end with rank 0's weights; RuntimeError otherwise."""
    if not run.ctx.distributed:
        return
    mine = _weights_checksum(run.net.module)
    reference = run.ctx.broadcast_object(mine)
    if mine != reference:
        raise RuntimeError(f"rank {run.ctx.rank} ended with other weights than rank 0 "
                           f"(checksum {mine!r} vs {reference!r})")
    log.info("rank %d: weights agree with rank 0 (checksum %.6g)", run.ctx.rank, mine)


def _train(run: _Run, saved: dict | None, progress: ProgressCallback | None) -> FitResult:
    config, ctx = run.config, run.ctx
    if saved is not None:
        run.load_state(saved)
        log.info("resuming after epoch %d of %d", run.start_epoch, config.epochs)
    runlog = RunLog(run.output, run.plan.class_names, tensorboard=config.tensorboard,
                    plot=config.plot) if ctx.is_main else None
    if runlog is not None and saved is None:
        runlog.start()
    if ctx.is_main:
        report_budget(config, batches=run.batches, world_size=ctx.world_size)
    tracker = ProgressTracker(max(1, (config.epochs - run.start_epoch) * run.batches), "training", progress)
    start = time.perf_counter()
    meta = None
    epoch = run.start_epoch - 1
    for epoch in range(run.start_epoch, config.epochs):
        t0 = time.perf_counter()
        lr = run.optimizer.param_groups[0]["lr"]
        loss = run.train_epoch(epoch, tracker)
        val = run.validate()
        run.scheduler.step()
        improved = run.record(epoch, loss, lr, val, time.perf_counter() - t0)
        elapsed = run.seconds_before + time.perf_counter() - start
        log.info("epoch %d/%d: loss %.4f%s%s", epoch + 1, config.epochs, loss,
                 f", val mean IoU {val['val_mean_iou']:.4f}" if val.get("val_mean_iou") is not None else "",
                 " (best)" if improved else "")
        if ctx.is_main:
            if improved:
                meta = run.save_model(elapsed, epoch + 1)
            ckpt.save_checkpoint(ckpt.checkpoint_path(run.output), run.state(epoch, elapsed))
            runlog.epoch(run.history)
        ctx.barrier()
        if run.stop_early():
            log.info("early stopping: no better validation score for %d epochs", config.early_stopping)
            break
    seconds = run.seconds_before + time.perf_counter() - start
    _check_ranks_agree(run)
    if run.best_state is None:
        raise ConfigError("no epoch was trained: the checkpoint already covers every epoch; raise --epochs "
                          "to continue training")
    if ctx.is_main:
        meta = run.save_model(seconds, epoch + 1, final=True)
        runlog.finish(run.history)
    return FitResult(run.output, ckpt.checkpoint_path(run.output), run.best_epoch, run.best_score, run.history,
                     seconds, meta, log_paths(run.output))
