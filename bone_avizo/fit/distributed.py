"""Single-process and multi-process (DistributedDataParallel) training context.

The ranks are given (:func:`bone_avizo.runtime.ranks_from_env` reads them at the entry point:
torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or, when those are absent, SLURM's SLURM_PROCID /
SLURM_NTASKS / SLURM_LOCALID, ``srun`` with one task per GPU, no torchrun); the device follows
:func:`bone_avizo.runtime.resolve_device`. Under torchrun the process group is joined through
torchrun's own rendezvous (``env://``); under SLURM through ``tcp://MASTER_ADDR:MASTER_PORT``, where
MASTER_ADDR defaults to the first host of SLURM_NODELIST (or SLURM_JOB_NODELIST) and MASTER_PORT to
``15000 + SLURM_JOB_ID % 10000``.

Each process trains on its share of every epoch's slices, on its GPU (NCCL; the GPU of its local
rank unless one is named) or on the CPU (gloo). Rank 0 alone writes the model, checkpoints and
logs; metrics are summed over ranks with all_reduce. Collectives wait at most the process-group timeout
(``BONE_AVIZO_DIST_TIMEOUT`` seconds, default 1800); a lost rank then surfaces as one
:class:`~bone_avizo.errors.BoneAvizoError` on the others instead of a hang.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.distributed as dist

from bone_avizo.errors import BoneAvizoError, ConfigError
from bone_avizo.runtime import Ranks, resolve_device

log = logging.getLogger(__name__)

TIMEOUT_VARIABLE = "BONE_AVIZO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_PORT = 29500           # torch's default, when SLURM_JOB_ID is unknown
SLURM_PORT_BASE = 15000        # MASTER_PORT = 15000 + SLURM_JOB_ID % 10000 (below Linux's ephemeral ports)


@dataclass
class DistContext:
    """Where this process stands: its ranks and device; ``initialised`` when a process group was
    created here (and must be destroyed by :func:`shutdown`)."""

    ranks: Ranks = field(default_factory=Ranks)
    device: torch.device = torch.device("cpu")
    initialised: bool = False

    @property
    def rank(self) -> int:
        return self.ranks.rank

    @property
    def world_size(self) -> int:
        return self.ranks.world

    @property
    def local_rank(self) -> int:
        return self.ranks.local_rank

    @property
    def is_main(self) -> bool:
        return self.ranks.is_main

    @property
    def distributed(self) -> bool:
        return self.ranks.distributed

    def _all_reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        if self.distributed:
            moved = tensor.to(self.device) if self.device.type == "cuda" else tensor
            dist.all_reduce(moved, op=op)
            if moved is not tensor:
                tensor.copy_(moved.to(tensor.device))
        return tensor

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all ranks (in place; on the backend's device)."""
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def first_asking(self, asking: bool) -> int | None:
        """The lowest rank for which ``asking`` is true (the same answer on every rank), None when
        no rank asks. One all_reduce of one integer: every rank must call it at the same point."""
        flag = torch.tensor([self.rank if asking else self.world_size], dtype=torch.int64)
        first = int(self._all_reduce(flag, dist.ReduceOp.MIN)[0])
        return first if first < self.world_size else None

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics).

        DDP broadcasts buffers at the start of each forward pass, so after the last training step of
        an epoch each rank holds statistics updated by its own batch; validation and the saved model
        must use one set."""
        if self.distributed:
            for buffer in module.buffers():
                moved = buffer.data.to(self.device) if self.device.type == "cuda" else buffer.data
                dist.broadcast(moved, src=0)
                if moved is not buffer.data:
                    buffer.data.copy_(moved.to(buffer.device))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


# -- SLURM rendezvous ---------------------------------------------------------------------------
def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list in its compact form, without calling scontrol:
    ``"node[01-04,07],gpu5"`` -> ``"node01"``, ``"rack[2-3]-n[8,9]"`` -> ``"rack2-n8"``,
    ``"gpu5,node[1-2]"`` -> ``"gpu5"`` (zero padding is kept)."""
    text = nodelist.strip()
    depth, end = 0, len(text)
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            break
        if char == "," and depth == 0:
            end = i
            break
    host = re.sub(r"\[([^\[\],-]+)[^\[\]]*\]", r"\1", text[:end])
    if depth not in (0, 1) or not host or re.search(r"[\[\],\s]", host):
        raise ConfigError(f"cannot read the first host of the SLURM node list {nodelist!r}; set MASTER_ADDR "
                          "to the host of rank 0")
    return host


def slurm_rendezvous(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(address, port) of rank 0 for a SLURM job started without torchrun: MASTER_ADDR, else the
    first host of SLURM_NODELIST / SLURM_JOB_NODELIST; MASTER_PORT, else ``15000 + SLURM_JOB_ID %
    10000`` (29500 without a job id). Two training runs in one job on one node need distinct
    MASTER_PORTs."""
    env = os.environ if env is None else env
    address = env.get("MASTER_ADDR")
    if not address:
        nodelist = env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise ConfigError("SLURM_PROCID/SLURM_NTASKS are set but neither MASTER_ADDR nor SLURM_NODELIST is; "
                              "set MASTER_ADDR to the host of rank 0")
        address = first_host(nodelist)
    return address, _port(env)


def _port(env: Mapping[str, str]) -> int:
    port, job = env.get("MASTER_PORT", ""), env.get("SLURM_JOB_ID", "")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"environment variable MASTER_PORT={port!r} is not a port; set it to a free port "
                              "(1-65535)")
        return int(port)
    if not job:
        return DEFAULT_PORT
    if not job.isdigit():
        raise ConfigError(f"environment variable SLURM_JOB_ID={job!r} is not a number; set MASTER_PORT to a "
                          "free port")
    return SLURM_PORT_BASE + int(job) % 10000


def dist_timeout_s(env: Mapping[str, str] | None = None) -> float:
    """The process-group timeout: ``BONE_AVIZO_DIST_TIMEOUT`` seconds, default 1800 (30 min)."""
    env = os.environ if env is None else env
    text = env.get(TIMEOUT_VARIABLE)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"environment variable {TIMEOUT_VARIABLE}={text!r} is not a positive number of seconds")
    return value


# -- the process group --------------------------------------------------------------------------
def _rank_device(device: str, ranks: Ranks) -> torch.device:
    """The device rule's device for a rank of a training job, made torch's current GPU. NCCL trains one
    process per GPU, so a named GPU shared by the processes of a node is refused."""
    dev = resolve_device(device, ranks)
    if dev.type == "cuda" and str(device).startswith("cuda:") and ranks.local_world > 1:
        raise ConfigError(f"--device {device} puts all {ranks.local_world} processes of this node on one GPU, "
                          "which NCCL cannot train on; give --device auto or cuda (each process takes the GPU of "
                          "its LOCAL_RANK)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str, ranks: Ranks, *, timeout_s: float | None = None,
                     env: Mapping[str, str] | None = None) -> DistContext:
    """The context of this process; joins the process group when ``ranks`` has several processes
    (torchrun: its rendezvous; SLURM without torchrun: :func:`slurm_rendezvous` from ``env``, default
    os.environ). ``timeout_s`` defaults to :func:`dist_timeout_s`."""
    if not ranks.distributed:
        return DistContext(ranks, resolve_device(device, ranks))
    env = os.environ if env is None else env
    dev = _rank_device(device, ranks)
    initialised = False
    if not dist.is_initialized():
        options = {"timeout": datetime.timedelta(seconds=timeout_s or dist_timeout_s(env))}
        if ranks.launcher == "slurm":
            address, port = slurm_rendezvous(env)
            options.update(init_method=f"tcp://{address}:{port}", rank=ranks.rank, world_size=ranks.world)
        elif "MASTER_ADDR" not in env:
            raise ConfigError("RANK/WORLD_SIZE are set but MASTER_ADDR is not; start the run with torchrun, or "
                              "set MASTER_ADDR and MASTER_PORT")
        try:
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", **options)
        except dist.DistError as exc:
            raise BoneAvizoError(f"rank {ranks.rank} of {ranks.world}: the process group did not form within "
                                 f"{options['timeout'].total_seconds():.0f} s ({type(exc).__name__}: "
                                 f"{_one_line(exc)}); start all {ranks.world} processes (srun, torchrun) and check "
                                 "MASTER_ADDR/MASTER_PORT") from exc
        initialised = True
    log.info("distributed training: rank %d of %d (local rank %d, %s) on %s", ranks.rank, ranks.world,
             ranks.local_rank, ranks.launcher, dev)
    return DistContext(ranks, dev, initialised)


def shutdown(ctx: DistContext) -> None:
    if ctx.initialised and dist.is_initialized():
        dist.destroy_process_group()


# -- a lost rank ---------------------------------------------------------------------------------
_LOST_PEER = ("connection closed by peer", "connection reset by peer", "timed out waiting", "gloo/transport")


def is_lost_rank(exc: BaseException) -> bool:
    """True for the errors a collective raises when another rank died or stopped answering (NCCL:
    DistError; gloo: RuntimeError naming the closed connection or the timeout)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(sign in text for sign in _LOST_PEER)


@contextlib.contextmanager
def lost_ranks_fail(ctx: DistContext, checkpoint: Path):
    """Turn the error of a collective whose peer died (or did not answer within the timeout) into
    one BoneAvizoError naming this rank and how to continue from ``checkpoint``."""
    try:
        yield
    except Exception as exc:
        if not ctx.distributed or isinstance(exc, BoneAvizoError) or not is_lost_rank(exc):
            raise
        detail = _one_line(exc)
        hint = (f"the last checkpoint {checkpoint} is intact: rerun the same command with --resume"
                if checkpoint.exists() else "no epoch was checkpointed: rerun the same command")
        raise BoneAvizoError(f"rank {ctx.rank} of {ctx.world_size}: another process of the training job died "
                             f"or stopped answering ({type(exc).__name__}: {detail}); {hint}") from exc


def _one_line(exc: BaseException) -> str:
    """The first 160 characters of an error's text on one line, without gloo's source location."""
    return re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(exc).split()))[:160]
