"""Training checkpoints: everything needed to continue a run exactly, written atomically each epoch.

The checkpoint (``<model>.ckpt`` beside the model file) holds plain tensors and containers only
and is read with ``torch.load(weights_only=True)``: model, optimiser, scheduler and AMP scaler
states, the best epoch's weights, the epoch count, the history, the RNG states (torch, CUDA,
numpy, python) and the configuration it was made with.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bone_avizo.errors import ConfigError, CorruptFileError, InputFileError, OutputWriteError
from bone_avizo.io.base import partial_path, remove_path, replace_path

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
CHECKPOINT_VERSION = 1
# options that may differ between the interrupted run and its resumption
RESUMABLE_CHANGES = ("num_workers", "threads", "tensorboard", "plot", "cache_slices", "device",
                     "early_stopping", "max_classes")


def checkpoint_path(model_path: str | os.PathLike) -> Path:
    """Where the checkpoint of the run writing ``model_path`` lives: ``<model_path>.ckpt``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + CHECKPOINT_SUFFIX)


def side_files(model_path: str | os.PathLike) -> list[Path]:
    """The files a run writing ``model_path`` writes beside it: its checkpoint, then its logs."""
    from bone_avizo.fit.logs import log_paths

    return [checkpoint_path(model_path), *log_paths(Path(model_path)).values()]


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, numpy, python) as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` through a temporary name (an interrupted write leaves the previous
    checkpoint intact)."""
    path = Path(path)
    temp = partial_path(path)
    try:
        torch.save(dict(state, checkpoint_version=CHECKPOINT_VERSION), temp)
        replace_path(temp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        remove_path(temp)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _disk_reason(exc)
        raise OutputWriteError(f"cannot write checkpoint {path}: {reason}; check the folder's permissions "
                               "and free space") from exc
    except BaseException:
        remove_path(temp)
        raise
    return path


def _disk_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for known in ("No space left on device", "Permission denied", "Disk quota exceeded"):
        if known.lower() in text.lower():
            return known
    return text[:200]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; CorruptFileError if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"no checkpoint {path} to resume from; start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise CorruptFileError(f"checkpoint {path} cannot be read ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}); it is damaged: delete it and start "
                               "again without --resume") from None
    required = ("model", "optimizer", "scheduler", "epoch", "history", "config", "rng")
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise CorruptFileError(f"checkpoint {path} lacks the training state (model, optimizer, epoch ...); "
                               "it is not a bone_avizo checkpoint: delete it and start again without --resume")
    return state


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """ConfigError when options that shape the training differ from those of the checkpoint."""
    changed = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5])
        raise ConfigError(f"the options differ from those of checkpoint {path} ({detail}); resume with the "
                          "same options, or start a new run without --resume")
