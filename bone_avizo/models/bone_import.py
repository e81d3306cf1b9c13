"""Read BONe DLFit checkpoints (``.pth``) safely and convert them to bone_avizo model files.

A BONe checkpoint is ``torch.save({'model_state': state_dict, 'metadata': {...}})`` where metadata
holds num_classes, patch_size, in_channels, model_arch (BONe's GUI names 'U-Net', 'UNet++', 'FPN',
'PSPNet', 'DeepLabV3+', 'Linknet', 'MAnet', 'PAN', 'UPerNet', 'Segformer', or smp's 'Unet', ...),
backbone (an smp encoder name), mode ('2D', '2.5D' or '3D') and is_3d, normalization ('ZScore' or
'minMax'), train_dataset / val_dataset (the scans), random_seed, augmentations, learning_rate,
criterion, best_val_score, best_epoch, flops_G, param_count, peak_ram_GB, peak_vram_GB,
wall_time_sec. State-dict keys may carry DistributedDataParallel's 'module.' prefix. In 2.5-D BONe
sets in_channels to the number of slices. 3-D models (is_3d True, mode '3D') are refused: they are
volumetric networks this package does not run. Which BONe keys were read and which ignored is
kept in ``training['bone_fields_read']`` / ``training['bone_fields_ignored']``.

The file is read with ``torch.load(weights_only=True)`` (tensors and plain data only; numpy scalars
and arrays are allowed as data), so a checkpoint carrying code is refused, never run.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from bone_avizo.errors import ConfigError, InputFileError, ModelError
from bone_avizo.models.metadata import (MAX_CONTEXT_SLICES, ModelMetadata, canonical_normalization, label_count,
                                       to_jsonable)
from bone_avizo.models.modelfile import (LoadedModel, build_from_metadata, clean_state_dict, load_weights,
                                         save_model)

log = logging.getLogger(__name__)

STATE_KEYS = ("model_state", "model_state_dict", "state_dict")
# BONe metadata key -> our training-provenance key
_TRAINING_KEYS = {
    "learning_rate": "lr", "criterion": "loss", "optimizer": "optimizer", "epochs": "epochs",
    "best_val_score": "best_val_score", "best_epoch": "best_epoch", "flops_G": "flops_G",
    "param_count": "param_count", "peak_ram_GB": "peak_ram_GB", "peak_vram_GB": "peak_vram_GB",
    "wall_time_sec": "wall_time_sec", "augmentations": "augmentations", "seed": "seed",
    "batch_size": "batch_size", "train_scans": "train_scans", "val_scans": "val_scans",
    "train_dataset": "train_scans", "val_dataset": "val_scans", "random_seed": "seed",
    "fitting_time_sec": "fitting_time_sec", "version": "version", "num_patches": "num_patches",
    "max_overlap": "max_overlap", "optim_momentum": "optim_momentum", "optim_weight_decay": "optim_weight_decay",
}
# BONe keys that decide how the network is rebuilt and fed
_MODEL_KEYS = ("model_arch", "backbone", "num_classes", "in_channels", "patch_size", "normalization", "mode",
               "is_3d")
_SLICE_KEYS = ("context_slices", "num_slices", "n_slices", "slices", "slice_count")
_CLASS_NAME_KEYS = ("class_names", "classes", "labels", "materials")


def _numpy_safe_globals() -> list:
    """numpy scalar/array reconstruction functions, allowed so metadata holding np.float64 loads.
    They only rebuild data; any object inside still goes through the restricted unpickler."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar, reconstruct = core.multiarray.scalar, core.multiarray._reconstruct
    allowed: list = [scalar, reconstruct, np.ndarray, np.dtype,
                     (scalar, "numpy.core.multiarray.scalar"), (reconstruct, "numpy.core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with errors turned into ModelError; refuses code."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"checkpoint {path} does not exist; check the path")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = f"it references {found.group(1)}" if found else "unsupported pickle content"
        raise ModelError(f"refused to load {path}: it holds Python objects other than tensors and plain data "
                         f"({reason}); loading it could run arbitrary code. Re-save the checkpoint "
                         "as {'model_state': state_dict, 'metadata': dict of plain values}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ModelError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                         "the file is damaged or not a PyTorch checkpoint") from None


def _split_checkpoint(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict with wrapper prefixes stripped, BONe metadata or None for a bare state dict)."""
    if not isinstance(obj, Mapping):
        raise ModelError(f"{source} holds a {type(obj).__name__}, not a checkpoint dict; expected "
                         "{'model_state': state_dict, 'metadata': {...}}")
    for key in STATE_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            metadata = obj.get("metadata")
            if metadata is not None and not isinstance(metadata, Mapping):
                raise ModelError(f"{source}: 'metadata' is a {type(metadata).__name__}, expected a dict")
            return clean_state_dict(obj[key]), dict(metadata) if metadata is not None else None
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return clean_state_dict(obj), None
    raise ModelError(f"{source} is not a BONe checkpoint: it has keys {', '.join(map(str, list(obj)[:8]))} but "
                     f"none of {', '.join(STATE_KEYS)}")


def metadata_from_bone(bone: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None, *,
                       source: str = "checkpoint") -> ModelMetadata:
    """Our ModelMetadata from BONe's metadata dict (the raw dict is kept in training['bone_metadata'])."""
    bone = to_jsonable(dict(bone), "metadata")
    _refuse_3d(bone, source)
    missing = [k for k in ("model_arch", "backbone", "num_classes") if bone.get(k) in (None, "")]
    if missing:
        raise ModelError(f"{source}: BONe metadata lacks {', '.join(missing)}; the architecture, encoder and "
                         "number of classes must be known to rebuild the network")
    in_channels = int(bone.get("in_channels") or _first_conv_channels(state) or 1)
    try:
        from bone_avizo.models.registry import canonical_encoder

        encoder = canonical_encoder(bone["backbone"])
    except ConfigError as exc:
        raise ModelError(f"{source}: {exc}") from None
    return ModelMetadata(
        arch=bone["model_arch"], encoder=encoder, in_channels=in_channels,
        num_classes=int(bone["num_classes"]), patch_size=_patch_size(bone.get("patch_size"), source),
        class_names=_class_names(bone, int(bone["num_classes"])),
        normalization=canonical_normalization(bone.get("normalization") or "zscore"),
        normalization_stats="per_scan_nonzero", context_slices=_context_slices(bone, in_channels),
        planes=("xy",), training=_training(bone), extra={"imported_from": "BONe DLFit checkpoint"})


def _refuse_3d(bone: Mapping[str, Any], source: str) -> None:
    mode = str(bone.get("mode") or "").strip().upper()
    if bone.get("is_3d") is True or mode == "3D":
        raise ModelError(f"{source}: 3D models are not supported (BONe metadata: mode {bone.get('mode')!r}, is_3d "
                         f"{bone.get('is_3d')!r}); bone_avizo runs 2D and 2.5D models: train one in BONe's 2D or "
                         "2.5D mode, or with bone_avizo fit")


def _bone_fields(bone: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(keys of a BONe metadata dict that are read, keys that are ignored), each sorted."""
    read = set(_MODEL_KEYS) | set(_TRAINING_KEYS) | set(_SLICE_KEYS) | set(_CLASS_NAME_KEYS)
    return sorted(k for k in bone if k in read), sorted(k for k in bone if k not in read)


def _patch_size(value: Any, source: str) -> int:
    if value is None:
        log.warning("%s: BONe metadata has no patch_size; assuming 256", source)
        return 256
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ModelError(f"{source}: non-square patch_size {value} is not supported")
        value = value[0]
    return int(value)


def _context_slices(bone: Mapping[str, Any], in_channels: int) -> int:
    for key in _SLICE_KEYS:
        if bone.get(key):
            return int(bone[key])
    mode = str(bone.get("mode") or "").strip().upper()
    if mode == "2D":
        return 1
    if mode == "2.5D":
        return in_channels
    odd_stack = in_channels % 2 == 1 and 3 <= in_channels <= MAX_CONTEXT_SLICES
    return in_channels if odd_stack else 1


def _class_names(bone: Mapping[str, Any], num_classes: int) -> tuple[str, ...]:
    for key in _CLASS_NAME_KEYS:
        names = bone.get(key)
        if isinstance(names, (list, tuple)) and len(names) in (num_classes, label_count(num_classes)):
            return tuple(str(n) for n in names)
    return ()


def _training(bone: Mapping[str, Any]) -> dict[str, Any]:
    training = {ours: bone[theirs] for theirs, ours in _TRAINING_KEYS.items() if theirs in bone}
    training["source"] = "BONe DLFit"
    training["bone_fields_read"], training["bone_fields_ignored"] = _bone_fields(bone)
    training["bone_metadata"] = dict(bone)
    return training


def _first_conv_channels(state: Mapping[str, torch.Tensor] | None) -> int | None:
    for key, tensor in (state or {}).items():
        if key.startswith("encoder.") and key.endswith("weight") and tensor.ndim == 4:
            return int(tensor.shape[1])
    return None


def load_bone_checkpoint(path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None) -> LoadedModel:
    """A BONe ``.pth`` checkpoint as a LoadedModel (module in eval mode on the CPU).

    ``overrides``: BONe metadata keys (model_arch, backbone, num_classes, in_channels, patch_size,
    normalization, ...) to use where the checkpoint lacks them or is a bare state dict.
    """
    path = Path(path)
    state, metadata = _state_and_metadata(path, overrides)
    module = build_from_metadata(metadata)
    load_weights(module, state, str(path))
    return LoadedModel(module.float().eval(), metadata, path, "bone_pth")


def read_bone_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The ModelMetadata of a BONe ``.pth`` checkpoint, without building its network."""
    return _state_and_metadata(Path(path), None)[1]


def _state_and_metadata(path: Path, overrides: Mapping[str, Any] | None):
    state, bone = _split_checkpoint(_read_checkpoint(path), str(path))
    if bone is None and not overrides:
        raise ModelError(f"{path} is a bare state dict without metadata: the architecture, encoder, number of "
                         "classes and input channels cannot be known; import it with these given, e.g. "
                         "import_bone_checkpoint(pth, out, overrides={'model_arch': 'Unet', 'backbone': "
                         "'resnet18', 'num_classes': 3, 'in_channels': 1, 'patch_size': 256})")
    merged = {**(bone or {}), **dict(overrides or {})}
    return state, metadata_from_bone(merged, state, source=str(path))


def import_bone_checkpoint(pth_path: str | os.PathLike, out_path: str | os.PathLike, *,
                           overwrite: bool = False, dtype: str | None = None,
                           class_names: tuple[str, ...] | None = None,
                           overrides: Mapping[str, Any] | None = None) -> Path:
    """Convert a BONe checkpoint to a bone_avizo model file; returns the written path.

    ``class_names`` (one per class; for a binary model, num_classes 1, two or the foreground's one) replace
    the generic names; ``overrides`` as in
    :func:`load_bone_checkpoint`.
    """
    loaded = load_bone_checkpoint(pth_path, overrides=overrides)
    metadata = loaded.metadata
    if class_names:
        metadata = metadata.with_(class_names=tuple(class_names))
    metadata = metadata.with_(extra={**metadata.extra, "imported_file": Path(pth_path).name})
    return save_model(out_path, loaded.module, metadata, dtype=dtype, overwrite=overwrite, check=False)
