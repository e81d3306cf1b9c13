"""The options every study has, beside the fit and prediction options."""
from __future__ import annotations

from dataclasses import dataclass

from bone_avizo.config import ConfigBase, param
from bone_avizo.studies.selection import SELECTION_HELP, Selection


@dataclass(frozen=True, kw_only=True)
class StudyConfig(ConfigBase):
    """The options every study has: how the epoch is selected, whether predictions are kept. A study's
    config derives from it; these keyword-only fields come after the study's own in its spec."""

    selection: str = param("heldout", SELECTION_HELP, choices=tuple(Selection), group="study")
    keep_predictions: bool = param(False, "keep the predicted label volumes of the test scans "
                                   "(tasks/<task>/predictions/<scan>.npy)", group="study")
    keep_checkpoints: bool = param(False, "keep each task's training checkpoint (tasks/<task>/model.safetensors.ckpt: "
                                   "weights and optimiser state, about 4x the model) after its training is complete; "
                                   "an interrupted task resumes from it either way", group="study")
