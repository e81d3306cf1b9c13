"""Single-process and torchrun (DistributedDataParallel) training context.

Under ``torchrun --nproc_per_node N [--nnodes M ...] -m bone_avizo.standalone fit ...`` the
environment holds RANK, WORLD_SIZE and LOCAL_RANK; each process trains on its share of every
epoch's slices, on the GPU of its LOCAL_RANK (NCCL) or on the CPU (gloo). Rank 0 alone writes
the model, checkpoints and logs; metrics are summed over ranks with all_reduce.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bone_avizo.errors import ConfigError
from bone_avizo.predict.backends import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands: rank, world size, device; ``initialised`` when a process group
    was created here (and must be destroyed by :func:`shutdown`)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all ranks (in place; on the backend's device)."""
        if self.distributed:
            moved = tensor.to(self.device) if self.device.type == "cuda" else tensor
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            if moved is not tensor:
                tensor.copy_(moved.to(tensor.device))
        return tensor

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


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


def init_distributed(device: str = "auto", *, timeout_s: float = 1800.0) -> DistContext:
    """The context of this process; joins the torchrun process group when WORLD_SIZE > 1."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this "
                              "node; start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    initialised = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
        initialised = True
    log.info("distributed training: rank %d of %d (local rank %d) on %s", rank, world, local_rank, dev)
    return DistContext(rank, world, local_rank, dev, initialised)


def shutdown(ctx: DistContext) -> None:
    if ctx.initialised and dist.is_initialized():
        dist.destroy_process_group()
