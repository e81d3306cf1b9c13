"""Where this process runs: its place among the processes of a job (:class:`Ranks`) and its device.

Ranks come from the launcher's environment: torchrun's RANK / WORLD_SIZE / LOCAL_RANK /
LOCAL_WORLD_SIZE, or, when RANK and WORLD_SIZE are absent, SLURM's SLURM_PROCID / SLURM_NTASKS /
SLURM_LOCALID (``srun`` with one task per GPU); without either, one process. Only the entry points
read the environment (:func:`ranks_from_env`: the CLI commands, and ``fit_model``,
``predict_volume`` and the studies when they are not given ranks); everything below them is passed
a :class:`Ranks`.

One rule (:func:`resolve_device`) gives the device of prediction, training and studies alike:

- ``cpu`` -> the CPU; ``cuda:N`` -> GPU N (it must exist), whatever the ranks;
- ``auto`` -> the CPU where CUDA is unavailable; ``cuda`` there is a ConfigError;
- ``auto`` / ``cuda`` in one process -> ``cuda`` (torch's current GPU);
- ``auto`` / ``cuda`` with several ranks -> ``cuda:LOCAL_RANK``. A local rank beyond the visible GPUs
  is a ConfigError, except under SLURM when the task sees exactly one GPU (``--gpus-per-task 1``
  gives each task its own): then ``cuda:0``.

Only :func:`resolve_device` imports torch, so the CLI reads the ranks without it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from bone_avizo.errors import ConfigError

__all__ = ["Ranks", "SINGLE", "ranks_from_env", "resolve_device"]

if TYPE_CHECKING:
    import torch

# the launchers whose variables give the ranks, in order of precedence: rank, world size, local rank
RANK_VARIABLES = {"torchrun": ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
                  "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")}
LOCAL_WORLD_VARIABLE = "LOCAL_WORLD_SIZE"  # torchrun's processes on this node
DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


@dataclass(frozen=True)
class Ranks:
    """This process's rank, the number of processes, its rank on this node, the number of processes
    on this node (0: not known) and the launcher that started it ("" for none; not compared)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 0
    launcher: str = field(default="", compare=False)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def world_size(self) -> int:
        return self.world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """True when item ``index`` (a block, a study task) is this rank's: ``index % world == rank``."""
        return index % self.world == self.rank


SINGLE = Ranks()  # one process: what a study task runs as, and the default everywhere below the entry points


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """The ranks given by torchrun's variables, else SLURM's, else one process (``env`` defaults to
    os.environ). ConfigError, one line naming the variable, for values that are not integers or do
    not fit together."""
    env = os.environ if env is None else env
    launcher = _launcher(env)
    if launcher is None:
        return SINGLE
    rank, world, local = RANK_VARIABLES[launcher]
    told = launcher == "torchrun" and LOCAL_WORLD_VARIABLE in env  # SLURM does not say, in one number
    local_world = _env_int(env, LOCAL_WORLD_VARIABLE) if told else 0
    ranks = Ranks(_env_int(env, rank), _env_int(env, world), _env_int(env, local if local in env else rank),
                  local_world, launcher)
    if ranks.world < 1 or not 0 <= ranks.rank < ranks.world or ranks.local_rank < 0:
        raise ConfigError(f"environment variables {rank}={env[rank]}, {world}={env[world]}, "
                          f"{local}={env.get(local, '(unset)')} are inconsistent: need 0 <= {rank} < {world} "
                          f"and {local} >= 0; check the launcher's settings")
    if told and not ranks.local_rank < local_world <= ranks.world:
        raise ConfigError(f"environment variables {LOCAL_WORLD_VARIABLE}={env[LOCAL_WORLD_VARIABLE]}, "
                          f"{local}={env.get(local, '(unset)')}, {world}={env[world]} are inconsistent: need "
                          f"{local} < {LOCAL_WORLD_VARIABLE} <= {world}; check the launcher's settings")
    return ranks


def _launcher(env: Mapping[str, str]) -> str | None:
    """Whose variables give the ranks: ``"torchrun"`` (RANK + WORLD_SIZE; they take precedence),
    ``"slurm"`` (SLURM_PROCID + SLURM_NTASKS), or None."""
    if ("RANK" in env) != ("WORLD_SIZE" in env):
        given, missing = ("RANK", "WORLD_SIZE") if "RANK" in env else ("WORLD_SIZE", "RANK")
        raise ConfigError(f"environment variable {given} is set but {missing} is not; set both (torchrun "
                          "does) or neither")
    for name, (rank, world, _) in RANK_VARIABLES.items():
        if rank in env and world in env:
            return name
    return None


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer; check the launcher's "
                          "settings") from None


def resolve_device(requested: str | torch.device, ranks: Ranks = SINGLE, *, gpus: int | None = None) -> torch.device:
    """The device of this process for ``requested`` (cpu, cuda, cuda:N or auto) under ``ranks`` (see
    the module's rule). ``gpus``: the number of visible CUDA devices (default: torch's count, 0
    without CUDA). ConfigError for a device that is not valid or not here."""
    import torch

    name = str(requested)
    gpus = _visible_gpus() if gpus is None else gpus
    if name == "auto" and not gpus:
        return torch.device("cpu")
    device = _parse(name)
    if device.type == "cpu":
        return device
    if not gpus:
        raise ConfigError(f"device {name} requested but CUDA is not available here; use --device cpu")
    if device.index is not None:
        if device.index >= gpus:
            raise ConfigError(f"device {name} does not exist: {gpus} CUDA device(s); use cuda:0 .. "
                              f"cuda:{gpus - 1} or auto")
        return device
    if not ranks.distributed:
        return device
    return torch.device("cuda", _local_gpu(ranks, gpus))


def _parse(name: str) -> torch.device:
    import torch

    try:
        device = torch.device("cuda" if name == "auto" else name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not valid; use {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use {DEVICE_CHOICES}")
    return device


def _local_gpu(ranks: Ranks, gpus: int) -> int:
    """The GPU of the local rank: its index, or 0 for a SLURM task that sees one GPU (its own)."""
    if ranks.local_rank < gpus:
        return ranks.local_rank
    if ranks.launcher == "slurm" and gpus == 1:
        return 0
    raise ConfigError(f"local rank {ranks.local_rank} but only {gpus} GPU(s) on this node; start at most that "
                      "many processes per node (--nproc_per_node, --ntasks-per-node) or give --device cpu")


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
