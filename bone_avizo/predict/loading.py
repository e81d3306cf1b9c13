"""A model file loaded in the background while a prediction starts.

Building the network needs segmentation_models_pytorch, whose import (timm, torchvision, torch._dynamo)
takes seconds; the statistics pass needs only the model's metadata. For a bone_avizo model file, the
metadata and the network's input multiple are in the file's header (read without torch), so the
prediction can start its statistics pass at once while another thread imports, builds and loads the
network.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from bone_avizo.models.header import detect_model_format, metadata_from_header, read_header
from bone_avizo.models.metadata import ModelMetadata


class LoadingModel:
    """A bone_avizo model file whose network loads in a background thread: ``metadata`` and
    ``input_multiple`` (from the header; None in files older than that record) at once, ``module`` (and
    :meth:`result`) once loaded, re-raising the loader's error."""

    def __init__(self, path: Path, metadata: ModelMetadata, input_multiple: int | None):
        self.source_path, self.metadata, self.input_multiple = path, metadata, input_multiple
        self._future: Future | None = None

    def start(self) -> None:
        """Start the loader (once): after the job's checks, so a refused job does not wait for it."""
        if self._future is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bone_avizo-load")
            self._future = pool.submit(_load_model, self.source_path)
            pool.shutdown(wait=False)

    def failed(self) -> BaseException | None:
        """The loader's error, if it has already failed (without waiting)."""
        return self._future.exception() if self._future is not None and self._future.done() else None

    def result(self):
        """The LoadedModel (starts the loader if need be, and waits for it)."""
        self.start()
        assert self._future is not None
        return self._future.result()

    @property
    def module(self):
        return self.result().module


def _load_model(path: Path):
    from bone_avizo.models import load_model

    return load_model(path)


def open_model(path: str | os.PathLike):
    """A bone_avizo model file ready to load in the background (:func:`start_loading`), or a model file of
    another kind loaded now: either way the file is read once, and ``.metadata`` is at hand."""
    return start_loading(path) or _load_model(Path(path))


def start_loading(path: str | os.PathLike) -> LoadingModel | None:
    """The bone_avizo model file ``path`` ready to load in the background (:meth:`LoadingModel.start`);
    None when the file is of another kind (a BONe checkpoint, an ONNX file): those load in the foreground."""
    path = Path(path)
    if not path.is_file() or detect_model_format(path) != "bone_avizo":
        return None
    metadata, meta = metadata_from_header(path, read_header(path))
    try:
        multiple: int | None = int(meta["input_multiple"])
    except (KeyError, TypeError, ValueError):
        multiple = None  # files written before the header recorded it: known once the network is built
    return LoadingModel(path, metadata, multiple)
