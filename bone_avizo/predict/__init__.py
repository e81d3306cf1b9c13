"""DLPred: streaming tiled prediction of whole volumes (see :func:`predict_volume`)."""
from bone_avizo._lazy import lazy_exports

# imported on first use (PEP 562): the light submodules (distributed, windows) do not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "bone_avizo.predict.engine": ("PredictionResult", "predict_volume", "probability_path"),
})

__all__ = ["predict_volume", "PredictionResult", "probability_path"]
