"""One frozen configuration dataclass per task; its fields carry the task's parameter spec.

Each field is declared with :func:`param` (default, help, range or choices, group); the spec (a
tuple of :class:`Param`, ``Config.SPEC``) is read from the fields and drives the Avizo ports, the
CLI flags and JSON/YAML config files, so names, defaults and ranges cannot drift between the faces.
Paths of inputs and outputs are not options: they are arguments of the task functions and of each face.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from bone_avizo._compat import StrEnum
from pathlib import Path
from typing import Any, Iterable, Mapping, Self, TypeVar

from bone_avizo.errors import ConfigError
from bone_avizo.labels import DEFAULT_MAX_CLASSES, SUPPORTED_CLASSES

__all__ = ["Param", "param", "spec_of", "ConfigBase", "PredictConfig", "IoUConfig", "FitConfig", "Blend",
           "Plane", "TTA", "load_config_file", "PREDICT_SPEC", "IOU_SPEC", "FIT_SPEC"]


@dataclass(frozen=True)
class Param:
    """One option of a task: name (python identifier), type, default, range or choices, help.

    ``multiple`` means a tuple of values (each from ``choices`` when given). ``multiple_of`` and
    ``odd`` are extra integer constraints; ``zero_means`` documents a 0 sentinel ("auto").
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    multiple: bool = False
    multiple_of: int | None = None
    odd: bool = False
    zero_means: str | None = None
    group: str = "general"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        parts = []
        if self.min is not None or self.max is not None:
            parts.append(f"{self.min if self.min is not None else '-inf'}..{self.max if self.max is not None else 'inf'}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.odd:
            parts.append("odd")
        if self.zero_means:
            parts.append(f"0 = {self.zero_means}")
        return ", ".join(parts) or self.type.__name__

    def convert(self, value: Any) -> Any:
        """Convert and validate ``value``; raise ConfigError naming the option and its valid range."""
        if self.multiple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                items = [items]
            return tuple(self._convert_one(v) for v in items)
        return self._convert_one(value)

    def _convert_one(self, value: Any) -> Any:
        bad = f"{self.name} ({self.flag}): {value!r} is not valid; expected {self.describe_range()}"
        try:
            if self.type is bool:
                converted = _to_bool(value)
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                converted = int(value)
            else:
                converted = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(bad) from None
        if self.choices is not None and str(converted) not in self.choices:
            raise ConfigError(bad)
        if isinstance(converted, (int, float)) and not isinstance(converted, bool):
            is_zero_sentinel = self.zero_means is not None and converted == 0
            if not is_zero_sentinel and (
                    (self.min is not None and converted < self.min)
                    or (self.max is not None and converted > self.max)
                    or (self.multiple_of and converted % self.multiple_of)
                    or (self.odd and converted % 2 == 0)):
                raise ConfigError(bad)
        return converted


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


class _SpecOfClass:
    """``Config.SPEC``: the Params of a config class, read from its fields (see :func:`spec_of`)."""

    def __get__(self, obj: object, owner: type) -> tuple[Param, ...]:
        return spec_of(owner)


class ConfigBase:
    """Methods shared by every task config: a ``@dataclass(frozen=True)`` subclass whose fields are
    declared with :func:`param`. ``__post_init__`` converts and validates every field."""

    SPEC = _SpecOfClass()

    def __post_init__(self) -> None:
        for param in self.SPEC:
            object.__setattr__(self, param.name, param.convert(getattr(self, param.name)))
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in a task config."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build from a mapping; unknown keys are an error that lists the valid ones."""
        names = {p.name for p in cls.SPEC}
        normalised = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normalised) - names)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; valid options: "
                              f"{', '.join(sorted(names))}")
        return cls(**normalised)

    def to_dict(self) -> dict[str, Any]:
        return {p.name: _jsonable(getattr(self, p.name)) for p in self.SPEC}

    def with_(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


def _means_one(value: Any) -> bool:
    """Whether an option's raw value (int, float or text) is the number 1."""
    try:
        return float(value) == 1
    except (TypeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return str(value)
    return value


_PARAM_KEY = "bone_avizo.param"
_T = TypeVar("_T")


def param(default: _T, help: str, *, choices: Iterable[str] | None = None, min: float | None = None,
          max: float | None = None, multiple_of: int | None = None, odd: bool = False,
          zero_means: str | None = None, group: str = "general") -> _T:
    """A config field with its default and its :class:`Param` (in the field's metadata).

    The Param's name is the field's; its type and ``multiple`` come from the field's annotation
    (``int``, ``float``, ``bool``, ``str``, or ``tuple[one of those, ...]`` for several values)."""
    spec = Param("", object, default, help, choices=tuple(choices) if choices is not None else None,
                 min=min, max=max, multiple_of=multiple_of, odd=odd, zero_means=zero_means, group=group)
    return dataclasses.field(default=default, metadata={_PARAM_KEY: spec})


_SCALARS = (bool, int, float, str)


def _value_type(cls: type, name: str, annotation: Any) -> tuple[type, bool]:
    """(type of one value, several values?) of a field annotated ``annotation``."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
            return args[0], True
    elif annotation in _SCALARS:
        return annotation, False
    raise TypeError(f"{cls.__name__}.{name}: annotate a config field as int, float, bool, str or "
                    f"tuple[one of those, ...], not {annotation!r}")


@functools.cache
def spec_of(cls: type) -> tuple[Param, ...]:
    """The Params of a config dataclass, in the order of its ``__init__`` (a base's keyword-only
    fields after the class's own)."""
    hints = typing.get_type_hints(cls)
    spec = []
    for f in sorted(dataclasses.fields(cls), key=lambda f: bool(f.kw_only)):
        if _PARAM_KEY not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare every config field with param(...)")
        value_type, multiple = _value_type(cls, f.name, hints[f.name])
        spec.append(dataclasses.replace(f.metadata[_PARAM_KEY], name=f.name, type=value_type, multiple=multiple))
    return tuple(spec)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict of option values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path} is YAML but PyYAML is not installed; pip install pyyaml, "
                                  "or use a .json config") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, Exception) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {path} cannot be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data


# ---------------------------------------------------------------------------------------------
# Modes
class Blend(StrEnum):
    """How overlapping tiles are weighted when they are merged."""

    GAUSSIAN = "gaussian"
    COSINE = "cosine"
    CONSTANT = "constant"


class Plane(StrEnum):
    """A slicing plane: xy slices are (y, x) images at each z, xz at each y, yz at each x."""

    XY = "xy"
    XZ = "xz"
    YZ = "yz"


class TTA(StrEnum):
    """Test-time augmentation: the flips or rotations each image is also predicted under, then averaged."""

    NONE = "none"
    FLIPS = "flips"
    ROT90 = "rot90"
    D4 = "d4"


# ---------------------------------------------------------------------------------------------
# DLPred
@dataclass(frozen=True)
class PredictConfig(ConfigBase):
    """Options of DLPred (prediction)."""

    tile_size: int = param(0, "tile edge in pixels; larger tiles see more context and overlap less", min=32,
                           max=4096, multiple_of=32,
                           zero_means="auto: whole slices up to 1024 px, else the tile in [max(patch, 512), "
                                      "1024] that computes the fewest pixels", group="tiling")
    overlap: float = param(0.25, "fraction of a tile shared with its neighbour", min=0.0, max=0.9, group="tiling")
    blend: str = param("gaussian", "blending window for overlapping tiles", choices=tuple(Blend), group="tiling")
    planes: tuple[str, ...] = param(("xy",), "slicing planes; several are fused by averaging probabilities",
                                    choices=tuple(Plane), group="tiling")
    tta: str = param("none", "test-time augmentation averaged over: flips (4 flip combinations), rot90 (4 "
                     "rotations), d4 (all 8 symmetries)", choices=tuple(TTA), group="tiling")
    batch_size: int = param(0, "tiles per forward pass", min=1, max=4096,
                            zero_means="about 0.5 Mpixel of tiles on CPU, 16 Mpixel on CUDA (halved when the GPU "
                                       "runs out of memory)", group="compute")
    device: str = param("auto",
                        "cpu, cuda, cuda:N, or auto (cuda when available; under torchrun cuda:LOCAL_RANK)",
                        group="compute")
    devices: tuple[str, ...] = param((),
                                     "several devices sharing one volume, e.g. cuda:0,cuda:1 (overrides device)",
                                     group="compute")
    backend: str = param("auto", "inference engine; auto = onnxruntime on CPU when installed (torch for "
                                 "fp16/bf16), else torch",
                         choices=("auto", "torch", "onnxruntime"), group="compute")
    precision: str = param("auto", "auto = fp32 on CPU, fp16 on CUDA; fp16/bf16 run the network's weights and "
                           "activations in that precision (autocast where the device lacks the kernels)",
                           choices=("auto", "fp32", "fp16", "bf16"), group="compute")
    compile: str = param("auto", "torch.compile the network (backend torch): auto = on CUDA when the volume is "
                         "large enough to pay back the compile time; a failure falls back to eager (logged)",
                         choices=("auto", "on", "off"), group="compute")
    threads: int = param(0, "CPU threads for the compute backend", min=1, max=1024, zero_means="all cores",
                         group="compute")
    statistics: str = param("auto", "the scan's normalisation statistics: exact reads every voxel first; sampled "
                            "reads slices in rounds until the mean and standard deviation are known to within 0.1 "
                            "percent (3 standard errors; every slice at worst; the same slices for the same scan "
                            "in any format); auto = sampled for integer scans of 128 Mvoxel or more and z-score "
                            "models, else exact", choices=("auto", "exact", "sampled"), group="compute")
    slab_slices: int = param(0, "slices read, predicted and written together", min=1, max=65536,
                             zero_means="chosen from memory_limit_gb", group="memory")
    memory_limit_gb: float = param(1.0, "working-memory budget for slabs and buffers", min=0.05, max=4096.0,
                                   group="memory")
    probabilities: bool = param(False, "also write per-class probability maps (uint8, 0..255)", group="output")
    resume: bool = param(False, "make an HDF5/Zarr prediction resumable: give it on the first run too, as "
                         "without it an interrupted run (Ctrl+C, an error) deletes its partial output; rerun the "
                         "same command with --resume to continue from the last complete slab", group="output")


PREDICT_SPEC: tuple[Param, ...] = PredictConfig.SPEC


# ---------------------------------------------------------------------------------------------
# IoU
@dataclass(frozen=True)
class IoUConfig(ConfigBase):
    """Options of IoU (evaluation)."""

    num_classes: int = param(0, "number of classes", min=1, max=256, zero_means="max label of both volumes + 1")
    ignore_label: int = param(-1, "label value in the reference to leave out of every count", min=-1, max=255)
    class_names: tuple[str, ...] = param((), "names of the classes, in label order")
    max_classes: int = param(DEFAULT_MAX_CLASSES, "most classes a label volume may have when num_classes is "
                             "inferred; more (labels up to this or beyond) mean a grey-value scan was given as "
                             "labels", min=2, max=SUPPORTED_CLASSES)
    per_slice: bool = param(True, "also compute per-slice IoU along z")
    surface: bool = param(False, "also compute surface distances (mean, HD95) for volumes that fit in memory")
    slab_slices: int = param(64, "slices read per step", min=1, max=65536)
    surface_class: int = param(1, "class whose surface distances are computed (with --surface)", min=1, max=255)
    surface_max_mvoxels: float = param(64.0, "largest volume (million voxels) for surface distances", min=0.001,
                                       max=100000.0)
    threads: int = param(0, "CPU threads for counting", min=1, max=1024, zero_means="all cores")
    memory_limit_gb: float = param(0.5, "working-memory budget for the slabs read (two slabs in flight)",
                                   min=0.01, max=4096.0)
    map_prediction: tuple[str, ...] = param((), "relabel the prediction before scoring, SRC:DST (repeatable; "
                                            "e.g. 2:1 counts class 2, pores, as class 1, bone)", group="classes")
    map_reference: tuple[str, ...] = param((), "relabel the reference before scoring, SRC:DST (repeatable); the "
                                           "ignore label is matched before relabelling", group="classes")
    allow_voxel_size_mismatch: bool = param(False, "score volumes whose recorded voxel sizes differ (the "
                                            "reference's is used for volumes in mm^3); without it that is an "
                                            "error")

    def validate(self) -> None:
        parse_label_map(self.map_prediction, "map_prediction")
        parse_label_map(self.map_reference, "map_reference")

    def label_maps(self) -> tuple[dict[int, int], dict[int, int]]:
        """The (prediction, reference) relabellings as {source label: target label}."""
        return (parse_label_map(self.map_prediction, "map_prediction"),
                parse_label_map(self.map_reference, "map_reference"))


IOU_SPEC: tuple[Param, ...] = IoUConfig.SPEC


def parse_label_map(items: tuple[str, ...], name: str) -> dict[int, int]:
    """``('2:1', '3:0')`` -> ``{2: 1, 3: 0}``; ConfigError naming the option for a bad or repeated item."""
    flag = "--" + name.replace("_", "-")
    mapping: dict[int, int] = {}
    for item in items:
        parts = str(item).split(":")
        try:
            src, dst = (int(v) for v in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            src = dst = None
        if src is None or dst is None or not (0 <= src <= 255 and 0 <= dst <= 255):
            raise ConfigError(f"{name} ({flag}): {item!r} is not SRC:DST with two labels 0..255 (e.g. 2:1)")
        if mapping.get(src, dst) != dst:
            raise ConfigError(f"{name} ({flag}): label {src} is mapped twice ({src}:{mapping[src]} and {item}); "
                              "give one target per label")
        mapping[src] = dst
    return mapping


# ---------------------------------------------------------------------------------------------
# DLFit
class ValMode(StrEnum):
    SLICES = "slices"
    PATCHES = "patches"


FIT_EXTRA_AUGMENTATIONS = ("gamma", "noise", "blur", "scale")
FIT_LOSS_TERMS = ("jaccard", "dice", "lovasz", "focal", "tversky", "focal_tversky", "ce")


@dataclass(frozen=True)
class FitConfig(ConfigBase):
    """Options of DLFit (training)."""

    arch: str = param("unet", "network architecture (unet, unetplusplus, fpn, pspnet, deeplabv3plus, linknet, "
                      "manet, upernet, segformer, ...)", group="model")
    encoder: str = param("resnet18", "encoder (backbone) of the network, e.g. resnet18, resnet50, "
                         "efficientnet-b0, mit_b0, or tu-<timm name>", group="model")
    encoder_depth: int = param(5, "encoder stages used (fewer: a smaller, faster network)", min=3, max=5,
                               group="model")
    decoder_channels: tuple[int, ...] = param((), "decoder channels per stage, one per encoder stage (empty: the "
                                              "architecture's default)", min=1, max=4096, group="model")
    weights: str = param("random", "initial weights: random, imagenet (encoder only, must be cached offline), or "
                         "the path of a previous model file to fine-tune", group="model")
    in_channels: int = param(1, "input channels = neighbouring slices per sample: 1 = 2D, 3..9 (odd) = 2.5D "
                             "stacks centred on the segmented slice", min=1, max=9, odd=True, group="model")
    num_classes: int = param(0, "number of classes", min=2, max=255, zero_means="max label over all scans + 1",
                             group="data")
    class_names: tuple[str, ...] = param((), "class names in label order (also fixes the number of classes)",
                                         group="data")
    max_classes: int = param(DEFAULT_MAX_CLASSES, "most classes a label volume may have when num_classes is "
                             "inferred; more (labels up to this or beyond) mean a grey-value scan was given as "
                             "labels", min=2, max=SUPPORTED_CLASSES, group="data")
    patch_size: int = param(256, "training patch edge in pixels", min=32, max=2048, multiple_of=32,
                            group="sampling")
    patches_per_slice: int = param(4, "random crops taken from each sampled slice", min=1, max=64,
                                   group="sampling")
    max_overlap: float = param(0.3, "largest area fraction two crops of one slice may share", min=0.0, max=1.0,
                               group="sampling")
    foreground_crops: float = param(0.0, "fraction of crops centred on a random foreground pixel (label > 0) "
                                    "instead of uniformly placed", min=0.0, max=1.0, group="sampling")
    planes: tuple[str, ...] = param(("xy",), "slicing planes to train on (xz/yz add slices along y and x)",
                                    choices=tuple(Plane), group="sampling")
    batch_size: int = param(32, "slices per batch; a batch holds batch_size x patches_per_slice patches", min=1,
                            max=4096, group="sampling")
    steps_per_epoch: int = param(0, "optimiser steps per epoch", min=1, max=10_000_000,
                                 zero_means="every training slice once per epoch", group="sampling")
    cache_slices: int = param(64, "slices kept in each worker's read cache (LRU)", min=0, max=100_000,
                              group="sampling")
    num_workers: int = param(0, "data-loading worker processes (0: load in the training process)", min=0, max=256,
                             group="sampling")
    normalization: str = param("zscore",
                               "per-scan intensity normalisation over the voxels that normalization_mask selects",
                               choices=("zscore", "minmax"), group="data")
    normalization_mask: str = param("nonzero", "voxels the per-scan statistics are taken over (the rest is "
                                    "padding), recorded in the model and used by predict: nonzero (!= 0; for "
                                    "unsigned scans the same as BONe's > 0, and right for signed data such as CT "
                                    "in Hounsfield units), positive (> 0, BONe's rule), all",
                                    choices=("nonzero", "positive", "all"), group="data")
    augment: bool = param(True, "BONe's augmentations: flips (p=0.166 each), rot90/180/270 (p=0.5), intensity "
                          "shift and scale (p=0.4 each)", group="augmentation")
    extra_augment: tuple[str, ...] = param((), "additional augmentations", choices=FIT_EXTRA_AUGMENTATIONS,
                                           group="augmentation")
    val_fraction: float = param(0.2, "fraction of the scans held out for validation (at least one scan) when no "
                                "validation scans are given", min=0.0, max=0.9, group="validation")
    folds: int = param(0, "k-fold cross-validation over scans: number of folds", min=2, max=1000,
                       zero_means="no k-fold: a fraction split", group="validation")
    fold: int = param(0, "which fold (0..folds-1) is the validation part", min=0, max=999, group="validation")
    val_mode: str = param("slices",
                          "validate on whole slices (tiled with blending) or on one set of fixed random patches",
                          choices=tuple(ValMode), group="validation")
    val_slices: int = param(0, "validation slices per plane and scan, evenly spaced", min=1, max=10_000_000,
                            zero_means="all slices", group="validation")
    early_stopping: int = param(0, "stop after this many epochs without a better validation score", min=1,
                                max=100_000, zero_means="off", group="validation")
    loss: str = param("jaccard", "loss, or a sum of terms joined by '+' (optionally weighted, e.g. "
                      "'jaccard+0.5*ce'); terms: " + ", ".join(FIT_LOSS_TERMS), group="optimisation")
    optimizer: str = param("adam", "optimiser", choices=("adam", "adamw", "sgd"), group="optimisation")
    lr: float = param(1e-3, "initial learning rate", min=1e-9, max=10.0, group="optimisation")
    min_lr: float = param(1e-6, "learning rate reached at the end by cosine annealing", min=0.0, max=10.0,
                          group="optimisation")
    scheduler: str = param("cosine", "learning-rate schedule over the epochs", choices=("cosine", "constant"),
                           group="optimisation")
    weight_decay: float = param(0.0, "weight decay (AdamW: decoupled)", min=0.0, max=10.0, group="optimisation")
    momentum: float = param(0.9, "SGD momentum", min=0.0, max=1.0, group="optimisation")
    epochs: int = param(25, "training epochs", min=1, max=100_000, group="optimisation")
    accumulate: int = param(1, "batches whose gradients are summed before each optimiser step", min=1, max=4096,
                            group="optimisation")
    amp: bool = param(True, "mixed precision (float16 autocast) on CUDA; ignored on CPU", group="compute")
    device: str = param("auto", "cpu, cuda, cuda:N, or auto (cuda when available; under torchrun each process "
                        "takes the GPU of its LOCAL_RANK)", group="compute")
    threads: int = param(0, "CPU threads for torch", min=1, max=1024, zero_means="torch's default",
                         group="compute")
    seed: int = param(0, "seed of the split, sampling, augmentation and initial weights", min=0, max=2**31 - 1,
                      group="compute")
    deterministic: bool = param(False, "deterministic algorithms: bit-identical results for the same seed, also "
                                "across an interrupted and resumed run (slower on GPU)", group="compute")
    tensorboard: bool = param(False, "also write TensorBoard logs (needs the tensorboard package)",
                              group="output")
    plot: bool = param(True, "write a PNG of the loss and IoU curves (needs matplotlib)", group="output")

    def __post_init__(self) -> None:
        if _means_one(self.num_classes):  # before the range check, whose message would not say why
            raise ConfigError("num_classes (--num-classes): 1 (a binary model with one sigmoid output) is not "
                              "trained; fit trains a binary model as 2 classes (background, foreground; labels 0 "
                              "and 1): use --num-classes 2")
        super().__post_init__()

    def validate(self) -> None:
        if self.class_names and self.num_classes and len(self.class_names) != self.num_classes:
            raise ConfigError(f"class_names (--class-names): {len(self.class_names)} names for "
                              f"num_classes={self.num_classes}; give one name per class or leave one out")
        if len(self.class_names) == 1:
            raise ConfigError("class_names (--class-names): give at least two names (background first)")
        if self.folds and self.fold >= self.folds:
            raise ConfigError(f"fold (--fold): {self.fold} is not below folds={self.folds}; use 0..{self.folds - 1}")
        if self.decoder_channels and len(self.decoder_channels) != self.encoder_depth:
            raise ConfigError(f"decoder_channels (--decoder-channels): {len(self.decoder_channels)} values for "
                              f"encoder_depth={self.encoder_depth}; give one per encoder stage")
        if len(set(self.planes)) != len(self.planes):
            raise ConfigError(f"planes (--planes): {self.planes} repeats a plane; give distinct planes")
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr (--min-lr) {self.min_lr} is above lr (--lr) {self.lr}")
        # the extras are applied in a fixed order whatever order they are named in: one spelling
        object.__setattr__(self, "extra_augment",
                           tuple(a for a in FIT_EXTRA_AUGMENTATIONS if a in self.extra_augment))


FIT_SPEC: tuple[Param, ...] = FitConfig.SPEC
