"""An exported ONNX file (``bone-avizo export --output M.onnx``) as a model to predict with.

The file carries the model metadata (see :mod:`bone_avizo.models.onnx_export`), so it is all
prediction needs. :class:`OnnxNetwork` runs it with onnxruntime behind the torch module interface:
the onnxruntime backend runs the file itself (no export, no cache), the torch backend calls it
like a network. It cannot be trained: fine-tune the model file it was exported from.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bone_avizo.errors import ConfigError, ModelError

ONNX_SUFFIX = ".onnx"


class OnnxNetwork(torch.nn.Module):
    """(B, C, h, w) float32 -> (B, K, h, w) float32 logits through onnxruntime (on the CPU); the
    session is opened on first use. ``onnx_path`` names the file; the buffer ``onnx_sha256`` holds
    its digest, so :func:`~bone_avizo.models.onnx_cache.weights_digest` tells files apart."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.onnx_path = Path(path)
        digest = hashlib.sha256(self.onnx_path.read_bytes()).digest()
        self.register_buffer("onnx_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        self._session: Any = None  # the onnxruntime session, opened on first use

    def __deepcopy__(self, memo):  # an onnxruntime session cannot be copied; a copy opens its own
        return OnnxNetwork(self.onnx_path)

    def _run(self, array: np.ndarray) -> np.ndarray:
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ConfigError("predicting with an .onnx file needs onnxruntime: pip install onnxruntime") from None
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self._session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        name = self._session.get_inputs()[0].name
        return self._session.run(None, {name: array})[0]

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        array = tiles.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self._run(array)).to(tiles.device)


def load_onnx_model(path: Path):
    """A LoadedModel (format 'onnx') of an exported ONNX file; ModelError when it lacks our metadata."""
    from bone_avizo.models.modelfile import LoadedModel

    meta = onnx_metadata(path)
    return LoadedModel(OnnxNetwork(path).eval(), meta, path, "onnx")


def onnx_metadata(path: Path):
    """The ModelMetadata an exported ONNX file carries; ModelError when it has none."""
    from bone_avizo.models.onnx_export import read_onnx_metadata

    meta = read_onnx_metadata(path)
    if meta is None:
        raise ModelError(f"{path} is an ONNX file without bone_avizo metadata (architecture, classes, patch size, "
                         "normalisation); give the model file it was exported from (.safetensors or BONe .pth), "
                         f"or export that with `bone-avizo export --model MODEL --output {path.name}`")
    return meta


def refuse_training(path: Path) -> None:
    """ConfigError for an ONNX file given where a trainable model file is needed."""
    if Path(path).suffix.lower() == ONNX_SUFFIX:
        raise ConfigError(f"{path} is an exported ONNX file, which predicts but cannot be trained or exported "
                          "again; give the .safetensors model file it was exported from")
