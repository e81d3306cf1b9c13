"""The header of a bone_avizo model file, read without torch: format detection, metadata, ``info``.

A model file is one safetensors file: an 8-byte little-endian header length N, N bytes of JSON
(``__metadata__`` holds the ModelMetadata JSON, the format version, the weights' dtype and, in files
written by this version, ``parameters`` and ``input_multiple``), then the raw tensor data. Loading the
weights is :mod:`bone_avizo.models.modelfile`'s (torch); this module only reads the header, so that
``info`` and the metadata checks of the CLI do not import torch.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from bone_avizo.errors import InputFileError, ModelError
from bone_avizo.models.metadata import ModelMetadata

FORMAT_NAME = "bone_avizo"
FORMAT_VERSION = 1
METADATA_KEY = "bone_avizo"
MODEL_SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024


def detect_model_format(path: Path) -> str:
    """'bone_avizo' (safetensors) or 'bone_pth' (a torch.save file) from the file's first bytes;
    'onnx' for a file named .onnx (an export, see :mod:`bone_avizo.models.onnx_model`)."""
    if Path(path).suffix.lower() == ".onnx":
        return "onnx"
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors first: its 8-byte header length may start with 0x80, a pickle's first byte
    if len(head) == 9 and head[8:9] == b"{":
        return "bone_avizo"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "bone_pth"
    raise ModelError(f"{path} is not a model file (neither a bone_avizo .safetensors file, a PyTorch "
                     "checkpoint nor an exported .onnx file); check the path")


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header of ``path``, after checking its size against the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ModelError(f"model file {path} is truncated ({size} bytes); the file is damaged")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise ModelError(f"model file {path} declares a {length}-byte header (limit {MAX_HEADER_BYTES}); "
                             "the file is damaged or not a model file")
        if 8 + length > size:
            raise ModelError(f"model file {path} is truncated: its header needs {length} bytes but the file "
                             f"has {size - 8}; the file is damaged (copy it again)")
        text = fh.read(length)
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"model file {path} has a malformed header ({exc}); the file is damaged") from None
    if not isinstance(header, dict):
        raise ModelError(f"model file {path} has a malformed header; the file is damaged")
    _check_data_extent(path, header, size - 8 - length)
    return header


def _check_data_extent(path: Path, header: dict, data_bytes: int) -> None:
    end = max((entry.get("data_offsets", [0, 0])[1] for name, entry in header.items()
               if name != "__metadata__" and isinstance(entry, dict)), default=0)
    if end > data_bytes:
        raise ModelError(f"model file {path} is truncated: its tensors need {end} bytes of data, the file "
                         f"holds {data_bytes}; the file is damaged (copy it again)")


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The ModelMetadata of a bone_avizo model file (without reading the weights), of a BONe
    ``.pth`` checkpoint (without building its network) or of an exported ``.onnx`` file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"model file {path} does not exist; check the path")
    kind = detect_model_format(path)
    if kind == "bone_pth":
        from bone_avizo.models.bone_import import read_bone_metadata

        return read_bone_metadata(path)
    if kind == "onnx":
        from bone_avizo.models.onnx_model import onnx_metadata

        return onnx_metadata(path)
    return metadata_from_header(path, read_header(path))[0]


def metadata_from_header(path: Path, header: dict) -> tuple[ModelMetadata, dict]:
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ModelError(f"{path} is a safetensors file without bone_avizo metadata; it is not a bone_avizo "
                         "model file (only files written by save_model can be loaded)")
    version = meta.get("format_version", "1")
    if not str(version).isdigit() or int(version) > FORMAT_VERSION:
        raise ModelError(f"model file {path} has format version {version!r}, newer than this bone_avizo "
                         f"reads ({FORMAT_VERSION}); update bone_avizo")
    try:
        return ModelMetadata.from_json(meta[METADATA_KEY]), meta
    except ModelError as exc:
        raise ModelError(f"model file {path}: {exc}") from None


def header_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What ``info`` shows for a bone_avizo model file, from its header alone (no torch, no weights read).

    ``parameters`` and ``input_multiple`` come from the header (files written by this version); in an
    older file the parameter count falls back to the one training recorded (``param_count``) and the
    input multiple is None (unknown without building the network)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"model file {path} does not exist; check the path")
    metadata, meta = metadata_from_header(path, read_header(path))
    parameters = _int_or_none(meta.get("parameters"))
    if parameters is None:
        parameters = _int_or_none(metadata.training.get("param_count"))
    return summary(path, FORMAT_NAME, meta.get("weights_dtype", "float32"), metadata,
                   input_multiple=_int_or_none(meta.get("input_multiple")), parameters=parameters)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def summary(path: Path, format: str, weights_dtype: str, metadata: ModelMetadata, *,
            input_multiple: int | None, parameters: int | None) -> dict[str, Any]:
    """The dict ``info`` shows: architecture, classes, input conventions, size and training provenance."""
    meta = metadata
    training = meta.training
    return {
        "path": str(path),
        "format": format,
        "weights_dtype": weights_dtype,
        "arch": meta.arch,
        "encoder": meta.encoder,
        "arch_options": meta.arch_options,
        "in_channels": meta.in_channels,
        "num_classes": meta.num_classes,
        "class_names": list(meta.class_names),
        "patch_size": meta.patch_size,
        "input_multiple": input_multiple,
        "normalization": meta.normalization,
        "normalization_stats": meta.normalization_stats,
        "normalization_mask": meta.normalization_mask,
        "context_slices": meta.context_slices,
        "planes": list(meta.planes),
        "parameters": parameters,
        "train_scans": training.get("train_scans"),
        "val_scans": training.get("val_scans"),
        "best_val_score": training.get("best_val_score"),
        "best_epoch": training.get("best_epoch"),
        "training": training,
        "extra": meta.extra,
    }
