"""ModelMetadata: everything needed to rebuild a network and feed it correctly, plus provenance.

Stored as JSON in the model file (see docs/models.md). Validation errors are ModelError naming the
offending key.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePath
from typing import Any, Mapping

from bone_avizo.errors import ConfigError, ModelError

METADATA_VERSION = 1

NORMALIZATIONS = ("zscore", "minmax")
NORMALIZATION_STATS = ("per_scan_nonzero", "per_scan_all")
NORMALIZATION_MASKS = ("positive", "nonzero", "all")
PLANES = ("xy", "xz", "yz")
MAX_CONTEXT_SLICES = 9
BINARY_CLASS_NAMES = ("background", "foreground")

_NORMALIZATION_SPELLINGS = {
    "zscore": "zscore", "z-score": "zscore", "z_score": "zscore", "z score": "zscore", "standard": "zscore",
    "standardize": "zscore", "standardise": "zscore", "std": "zscore",
    "minmax": "minmax", "min-max": "minmax", "min_max": "minmax", "min max": "minmax", "range": "minmax",
}

REQUIRED_KEYS = ("arch", "encoder", "in_channels", "num_classes", "patch_size")

# our architecture names -> smp class names (in the order shown to users); the registry keeps those
# that the installed segmentation-models-pytorch has
SMP_CLASS_NAMES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "fpn": "FPN",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "linknet": "Linknet",
    "manet": "MAnet",
    "pan": "PAN",
    "upernet": "UPerNet",
    "segformer": "Segformer",
    "dpt": "DPT",
}

# extra spellings (after lower-casing and dropping '-', '_' and spaces)
_ARCH_ALIASES = {"unet++": "unetplusplus", "deeplabv3+": "deeplabv3plus"}


def architecture_key(name: Any, known: Mapping[str, Any] = SMP_CLASS_NAMES) -> str:
    """Our name for architecture ``name`` (any case, BONe or smp spelling) among ``known``; ConfigError
    if unknown. Torch-free, so that reading a model file's metadata does not import smp."""
    key = str(name).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ARCH_ALIASES.get(key, key)
    if key not in known:
        raise ConfigError(f"unknown architecture {name!r}; valid architectures: {', '.join(known)}")
    return key


def label_count(num_classes: int) -> int:
    """Label values a network with ``num_classes`` output channels predicts: a single channel is a binary
    model (one sigmoid logit, as smp's and MONAI's ``classes=1``: label 1 where it is > 0), so 2."""
    return 2 if num_classes == 1 else num_classes


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the labels of a model without class names: ``class_<i>``, or background/foreground for a
    binary model."""
    if num_classes == 1:
        return BINARY_CLASS_NAMES
    return tuple(f"class_{i}" for i in range(num_classes))


def canonical_normalization(value: Any, key: str = "normalization") -> str:
    """'zscore' or 'minmax' from any common spelling ('Z-score', 'min_max', ...); ModelError otherwise."""
    text = str(value).strip().lower()
    if text not in _NORMALIZATION_SPELLINGS:
        raise ModelError(f"metadata key {key!r}: unknown normalisation {value!r}; expected one of "
                         f"{', '.join(NORMALIZATIONS)}")
    return _NORMALIZATION_SPELLINGS[text]


@dataclass(frozen=True)
class ModelMetadata:
    """Description of a trained 2-D / 2.5-D segmentation model.

    The network maps (B, in_channels, H, W) normalised intensities to (B, num_classes, H, W) logits.
    num_classes 1 is a binary model: one sigmoid logit, label 1 (foreground) where it is > 0, else 0;
    its labels and class_names are two (``num_labels``), background first; one name given names the
    foreground (files written before binary models were predicted hold the generated ``class_0``).
    For 2.5-D models the channels are ``context_slices`` neighbouring slices centred on the slice
    being segmented (in_channels == context_slices for grayscale scans).

    arch, encoder: registry names (see :mod:`bone_avizo.models.registry`);
    arch_options: extra keyword arguments of the smp class (e.g. decoder_channels);
    patch_size: training patch edge in pixels; normalization: 'zscore' | 'minmax';
    normalization_stats: where the statistics come from ('per_scan_nonzero' = per scan over the
    voxels normalization_mask selects, 'per_scan_all' = per scan over all voxels);
    normalization_mask: which voxels the statistics are taken over, the rest being padding:
    'positive' (> 0: BONe's rule, and that of every model file written without this key),
    'nonzero' (!= 0), 'all'; fit records it, predict applies it; planes: training planes; training: provenance (scans, epochs, loss, optimiser,
    scores, history, cost figures, seed, version, date ...); extra: anything else.
    """

    arch: str
    encoder: str
    in_channels: int
    num_classes: int
    patch_size: int
    class_names: tuple[str, ...] = ()
    normalization: str = "zscore"
    normalization_stats: str = "per_scan_nonzero"
    normalization_mask: str = "positive"
    context_slices: int = 1
    planes: tuple[str, ...] = ("xy",)
    arch_options: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        try:
            set_("arch", architecture_key(self.arch))
        except ConfigError as exc:
            raise ModelError(f"metadata key 'arch': {exc}") from None
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ModelError(f"metadata key 'encoder' must be a non-empty string, got {self.encoder!r}")
        for key in ("in_channels", "num_classes", "patch_size", "context_slices"):
            set_(key, _positive_int(getattr(self, key), key))
        set_("class_names", self._checked_class_names())
        set_("normalization", canonical_normalization(self.normalization))
        if self.normalization_stats not in NORMALIZATION_STATS:
            raise ModelError(f"metadata key 'normalization_stats': {self.normalization_stats!r} is not one of "
                             f"{', '.join(NORMALIZATION_STATS)}")
        if self.normalization_mask not in NORMALIZATION_MASKS:
            raise ModelError(f"metadata key 'normalization_mask': {self.normalization_mask!r} is not one of "
                             f"{', '.join(NORMALIZATION_MASKS)}")
        self._check_context()
        set_("planes", self._checked_planes())
        for key in ("arch_options", "training", "extra"):
            set_(key, _json_dict(getattr(self, key), key))

    def _checked_class_names(self) -> tuple[str, ...]:
        names = self.class_names
        if names is None or len(names) == 0:
            return default_class_names(self.num_classes)
        if isinstance(names, str):
            names = (names,)
        if self.num_classes == 1 and len(names) == 1:  # the name of the one output: the foreground
            return BINARY_CLASS_NAMES if names[0] == "class_0" else (BINARY_CLASS_NAMES[0], str(names[0]))
        if len(names) != self.num_labels:
            if self.num_classes == 1:
                raise ModelError(f"metadata key 'class_names': {len(names)} names for a binary model (num_classes 1, "
                                 "one sigmoid output: labels 0 and 1); give two names (background first) or one "
                                 "(the foreground)")
            raise ModelError(f"metadata key 'class_names': {len(names)} name(s) for {self.num_classes} classes; "
                             "give one name per class (label 0 first)")
        return tuple(str(n) for n in names)

    def _check_context(self) -> None:
        n = self.context_slices
        if n != 1 and (n % 2 == 0 or not 3 <= n <= MAX_CONTEXT_SLICES):
            raise ModelError(f"metadata key 'context_slices': {n} is not valid; use 1 (2-D) or an odd number "
                             f"3..{MAX_CONTEXT_SLICES} (2.5-D)")
        if self.in_channels % n:
            raise ModelError(f"metadata key 'in_channels': {self.in_channels} is not a multiple of "
                             f"context_slices={n}; for grayscale 2.5-D models in_channels == context_slices")

    def _checked_planes(self) -> tuple[str, ...]:
        planes = (self.planes,) if isinstance(self.planes, str) else tuple(self.planes)
        planes = tuple(str(p.value if isinstance(p, Enum) else p).lower() for p in planes)
        if not planes or any(p not in PLANES for p in planes) or len(set(planes)) != len(planes):
            raise ModelError(f"metadata key 'planes': {self.planes!r} is not valid; give distinct planes from "
                             f"{', '.join(PLANES)}")
        return planes

    def __hash__(self) -> int:  # the dict fields are not hashable; their JSON is
        return hash(self.to_json())

    # -- conversion ---------------------------------------------------------------------
    @property
    def is_2p5d(self) -> bool:
        return self.context_slices > 1

    @property
    def num_labels(self) -> int:
        """Label values the model predicts (2 for a binary model, else num_classes)."""
        return label_count(self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) including ``metadata_version``."""
        data = {"metadata_version": METADATA_VERSION}
        for f in dataclasses.fields(self):
            data[f.name] = to_jsonable(getattr(self, f.name), f.name)
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelMetadata":
        """Validate and build; ModelError names a missing, unknown or bad key."""
        if not isinstance(data, Mapping):
            raise ModelError(f"model metadata must be a JSON object, got {type(data).__name__}")
        values = dict(data)
        version = values.pop("metadata_version", METADATA_VERSION)
        if not isinstance(version, int) or version > METADATA_VERSION:
            raise ModelError(f"metadata key 'metadata_version': {version!r} is newer than this bone_avizo "
                             f"understands ({METADATA_VERSION}); update bone_avizo")
        missing = [k for k in REQUIRED_KEYS if k not in values]
        if missing:
            raise ModelError(f"model metadata lacks required key(s) {', '.join(missing)}; "
                             f"required: {', '.join(REQUIRED_KEYS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ModelError(f"model metadata has unknown key(s) {', '.join(unknown)}; known keys: "
                             f"{', '.join(sorted(names))}")
        if "normalization_mask" not in values:  # files written before the key: BONe's > 0, or all voxels
            values["normalization_mask"] = "all" if values.get("normalization_stats") == "per_scan_all" else "positive"
        for key in ("class_names", "planes"):
            if key in values and not isinstance(values[key], (list, tuple, str)):
                raise ModelError(f"metadata key {key!r} must be a list, got {values[key]!r}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelMetadata":
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"model metadata is not valid JSON ({exc}); the file is damaged") from None
        return cls.from_dict(data)

    def with_(self, **changes) -> "ModelMetadata":
        return dataclasses.replace(self, **changes)


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ModelError(f"metadata key {key!r} must be a positive integer, got {value!r}")
    return int(value)


def _json_dict(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelError(f"metadata key {key!r} must be a mapping, got {type(value).__name__}")
    return to_jsonable(dict(value), key)


def to_jsonable(value: Any, key: str = "value") -> Any:
    """Plain JSON data from ``value``: tuples -> lists, numpy/torch scalars and arrays -> numbers/lists,
    paths and enums -> strings, non-finite floats -> None. ModelError names the key of anything else."""
    if value is None or isinstance(value, (bool, str, int)):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (PurePath, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch scalars and arrays
        return to_jsonable(value.tolist(), key)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise ModelError(f"metadata key {key!r}: a {type(value).__name__} cannot be stored as JSON; "
                     "use numbers, strings, lists and dicts")
