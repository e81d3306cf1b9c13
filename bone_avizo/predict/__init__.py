"""DLPred: streaming tiled prediction of whole volumes (see :func:`predict_volume`)."""
from bone_avizo.predict.engine import PredictionResult, predict_volume, probability_path

__all__ = ["predict_volume", "PredictionResult", "probability_path"]
