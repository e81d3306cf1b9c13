"""The options every study has, beside the fit and prediction options."""
from __future__ import annotations

from bone_avizo.config import Param
from bone_avizo.studies.selection import SELECTION_HELP, Selection


def study_params() -> tuple[Param, ...]:
    """The options every study has: how the epoch is selected, whether predictions are kept."""
    return (Param("selection", str, "heldout", SELECTION_HELP, choices=tuple(Selection), group="study"),
            Param("keep_predictions", bool, False, "keep the predicted label volumes of the test scans "
                  "(tasks/<task>/predictions/<scan>.npy)", group="study"),
            Param("keep_checkpoints", bool, False, "keep each task's training checkpoint "
                  "(tasks/<task>/model.safetensors.ckpt: weights and optimiser state, about 4x the model) "
                  "after its training is complete; an interrupted task resumes from it either way",
                  group="study"))
