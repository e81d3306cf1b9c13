"""The bone_avizo model file: ONE safetensors file, weights + metadata JSON in its header.

Layout (see docs/models.md)::

    8 bytes    little-endian u64 N = header length
    N bytes    JSON header: {"__metadata__": {"format": "bone_avizo", "format_version": "1",
                              "bone_avizo": "<ModelMetadata JSON>", "weights_dtype": "float32",
                              "parameters": "<count>", "input_multiple": "<n>"},
                             "<tensor name>": {"dtype", "shape", "data_offsets"}, ...}
    rest       raw tensor data

The header is read without torch by :mod:`bone_avizo.models.header` (metadata, ``info``).

``load_model`` also reads BONe ``.pth`` checkpoints (through :mod:`bone_avizo.models.bone_import`),
never unpickling code: ``torch.load(..., weights_only=True)`` only.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from bone_avizo.errors import ConfigError, InputFileError, ModelError, OutputWriteError
from bone_avizo.io.base import check_output_path, partial_path, remove_path, replace_path
from bone_avizo.models.header import (FORMAT_NAME, FORMAT_VERSION, MAX_HEADER_BYTES, METADATA_KEY,  # noqa: F401
                                      MODEL_SUFFIX, detect_model_format, metadata_from_header, read_header,
                                      read_metadata, summary)
from bone_avizo.models.metadata import ModelMetadata
from bone_avizo.models.registry import build_model, count_parameters
from bone_avizo.runtime import resolve_device

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {None: torch.float32, "fp32": torch.float32, "float32": torch.float32,
                 "fp16": torch.float16, "float16": torch.float16}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadedModel:
    """A network ready for inference: ``module`` (eval mode, float32, on the requested device),
    its ``metadata``, the file it came from, and that file's ``format`` ('bone_avizo' | 'bone_pth')."""

    module: torch.nn.Module
    metadata: ModelMetadata
    source_path: Path
    format: str
    weights_dtype: str = "float32"

    @property
    def device(self) -> torch.device:
        param = next(self.module.parameters(), None)
        return param.device if param is not None else torch.device("cpu")


# ------------------------------------------------------------------------------------------
# state dicts
def clean_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors only, with DistributedDataParallel ('module.') and torch.compile ('_orig_mod.') prefixes
    stripped; ModelError if a value is not a tensor."""
    clean = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                             "the file is not a model state dict")
        name = str(key)
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        clean[name] = value
    return clean


def unwrap_module(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) if isinstance(
            model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else None
        inner = inner or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``module``; ModelError listing the first missing/unexpected/
    mismatched keys when they do not fit."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatch (file vs architecture)", mismatched)) if keys]
        raise ModelError(f"weights in {source} do not fit the architecture its metadata names; "
                         + "; ".join(parts) + "; the metadata (arch, encoder, in_channels, num_classes, "
                         "arch_options) must match the trained network")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def build_from_metadata(metadata: ModelMetadata) -> torch.nn.Module:
    """A randomly initialised network of the architecture ``metadata`` describes."""
    try:
        return build_model(metadata.arch, metadata.encoder, in_channels=metadata.in_channels,
                           num_classes=metadata.num_classes, weights=None, **metadata.arch_options)
    except ConfigError as exc:
        raise ModelError(f"the model's architecture cannot be built: {exc}") from None


# ------------------------------------------------------------------------------------------
# save
def save_model(path: str | os.PathLike, model: torch.nn.Module, metadata: ModelMetadata, *,
               dtype: str | None = None, overwrite: bool = False, check: bool = True) -> Path:
    """Write ``model``'s weights and ``metadata`` to one safetensors file, atomically.

    ``dtype``: None/'fp32' keeps float32; 'fp16' stores floating-point weights in half precision
    (they are loaded back as float32). ``check`` verifies that the weights fit the architecture the
    metadata names, so the file is sure to load. Returns the final path.
    """
    from safetensors.torch import save as serialize

    path = Path(path)
    if dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not valid; use None (float32) or 'fp16'")
    if not isinstance(metadata, ModelMetadata):
        raise ConfigError(f"metadata must be a ModelMetadata, got {type(metadata).__name__}")
    check_output_path(path, overwrite=overwrite)
    network = unwrap_module(model)
    state = _tensors_for_saving(network.state_dict(), WEIGHT_DTYPES[dtype])
    if check:
        load_weights(build_from_metadata(metadata), state, "the model being saved")
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
              METADATA_KEY: metadata.to_json(), "weights_dtype": str(WEIGHT_DTYPES[dtype]).replace("torch.", ""),
              # what info shows without building the network (header.header_summary)
              "parameters": str(count_parameters(network)), "input_multiple": str(input_multiple(network))}
    temp = partial_path(path)
    try:
        with open(temp, "wb") as fh:  # plain open(): the file gets the user's umask permissions
            fh.write(serialize(state, metadata=header))
        replace_path(temp, path)
    except OSError as exc:
        remove_path(temp)
        raise OutputWriteError(f"cannot write model file {path}: {exc.strerror or exc}; check the folder's "
                               "permissions and free space") from exc
    except BaseException:
        remove_path(temp)
        raise
    log.debug("saved model %s (%s/%s, %d classes)", path, metadata.arch, metadata.encoder, metadata.num_classes)
    return path


def _tensors_for_saving(state: Mapping[str, Any], float_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    tensors, seen = {}, set()
    for key, value in clean_state_dict(state).items():
        tensor = value.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(float_dtype)
        tensor = tensor.contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


# ------------------------------------------------------------------------------------------
# load
def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a bone_avizo model file, a BONe ``.pth`` checkpoint or an exported ``.onnx`` file, for inference.

    Returns a :class:`LoadedModel` whose module is in eval mode, float32, on ``device``
    ('cpu', 'cuda', 'cuda:N' or 'auto'). Nothing in the file is ever executed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"model file {path} does not exist; check the path")
    target = resolve_device(device)
    kind = detect_model_format(path)
    if kind == "bone_pth":
        from bone_avizo.models.bone_import import load_bone_checkpoint

        loaded = load_bone_checkpoint(path)
    elif kind == "onnx":
        from bone_avizo.models.onnx_model import load_onnx_model

        loaded = load_onnx_model(path)
    else:
        loaded = _load_safetensors_model(path)
    loaded.module.to(target).eval()
    return loaded


def _load_safetensors_model(path: Path) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    metadata, meta = metadata_from_header(path, read_header(path))
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"model file {path} cannot be read ({exc}); the file is damaged") from None
    module = build_from_metadata(metadata)
    load_weights(module, state, str(path))
    return LoadedModel(module.float().eval(), metadata, path, "bone_avizo", meta.get("weights_dtype", "float32"))


# ------------------------------------------------------------------------------------------
def model_summary(loaded: LoadedModel) -> dict[str, Any]:
    """What ``info`` shows: architecture, classes, input conventions, size and training provenance."""
    return summary(loaded.source_path, loaded.format, loaded.weights_dtype, loaded.metadata,
                   input_multiple=input_multiple(loaded.module), parameters=count_parameters(loaded.module))


def input_multiple(module: torch.nn.Module) -> int:
    """Height and width of the input must be multiples of this (the encoder's output stride)."""
    encoder = getattr(module, "encoder", None)
    if not getattr(module, "requires_divisible_input_shape", True):
        return 1
    return int(getattr(encoder, "output_stride", 32) or 32)
