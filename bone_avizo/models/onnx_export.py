"""Export a model to ONNX for onnxruntime (CPU or GPU).

The graph has one input ``input`` (batch, in_channels, height, width) float32 and one output
``logits`` (batch, num_classes, height, width); batch, height and width are dynamic (height and
width must stay multiples of 32). The model metadata JSON is stored in the ONNX model's
``metadata_props`` under the same key as in the safetensors file ("bone_avizo"), with
"format_version".
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import torch

from bone_avizo.errors import ConfigError, ModelError, OutputWriteError
from bone_avizo.io.base import check_output_path, partial_path, remove_path, replace_path
from bone_avizo.models.metadata import ModelMetadata
from bone_avizo.models.modelfile import FORMAT_VERSION, METADATA_KEY, LoadedModel, unwrap_module

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_DYNAMIC = {0: "batch", 2: "height", 3: "width"}
MIN_OPSET = 11  # Upsample/Resize as smp decoders use it
MAX_OPSET = 20  # the TorchScript-based exporter's maximum


def export_onnx(model: LoadedModel | torch.nn.Module, path: str | os.PathLike, *, opset: int = 17,
                patch_size: int | None = None, metadata: ModelMetadata | None = None,
                in_channels: int | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (a LoadedModel or a network) as an ONNX file, atomically; returns the path.

    ``patch_size``: the spatial size of the example input used for tracing (default: the
    metadata's patch size, else 256); the exported graph accepts any multiple of 32.
    ``metadata``: stored in the file (a LoadedModel brings its own); ``in_channels`` of a bare
    network without metadata (default: those of its first convolution).
    Uses the TorchScript-based exporter (``dynamo=False``); the dynamo exporter needs onnxscript.
    """
    import onnx

    path = Path(path)
    module, metadata = _module_and_metadata(model, metadata)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"ONNX opset {opset!r} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default 17)")
    check_output_path(path, overwrite=overwrite)
    size = int(patch_size or (metadata.patch_size if metadata else 256))
    in_channels = in_channels or (metadata.in_channels if metadata else _first_conv_in_channels(module))
    proto = _export_proto(module, in_channels, size, opset)
    if metadata is not None:
        for key, value in ((METADATA_KEY, metadata.to_json()), ("format_version", str(FORMAT_VERSION))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    proto.producer_name = "bone_avizo"
    onnx.checker.check_model(proto)
    temp = partial_path(path)
    try:
        onnx.save(proto, str(temp))
        replace_path(temp, path)
    except OSError as exc:
        remove_path(temp)
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}; check the folder and free "
                               "space") from exc
    log.info("exported %s (opset %d)", path, opset)
    return path


def _module_and_metadata(model, metadata):
    if isinstance(model, LoadedModel):
        return model.module, metadata or model.metadata
    if isinstance(model, torch.nn.Module):
        return unwrap_module(model), metadata
    raise ConfigError(f"export_onnx needs a LoadedModel or a torch.nn.Module, got {type(model).__name__}")


def _first_conv_in_channels(module: torch.nn.Module) -> int:
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            return layer.in_channels
    raise ConfigError("cannot tell the network's input channels; pass metadata=")


def _export_proto(module: torch.nn.Module, in_channels: int, size: int, opset: int):
    import onnx

    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.zeros(1, in_channels, size, size, device=device)
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of dynamo (which needs onnxscript), and
            # the tracer warns about Python-level shape checks that do not affect these graphs
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: _DYNAMIC, OUTPUT_NAME: _DYNAMIC})
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        raise ModelError(f"ONNX export failed ({type(exc).__name__}: {str(exc)[:300]}); try another --opset "
                         "or a different architecture") from None
    finally:
        module.train(was_training)
    return onnx.load_from_string(buffer.getvalue())


def read_onnx_metadata(path: str | os.PathLike) -> ModelMetadata | None:
    """The ModelMetadata stored in an exported ONNX file (None when it has none)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise ModelError(f"{path} is not a readable ONNX file ({exc}); the file is damaged") from None
    props = {p.key: p.value for p in proto.metadata_props}
    return ModelMetadata.from_json(props[METADATA_KEY]) if METADATA_KEY in props else None
