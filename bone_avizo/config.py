"""One frozen configuration dataclass per task, each built from ONE parameter spec.

The spec (a tuple of :class:`Param`) drives the Avizo ports, the CLI flags and JSON/YAML config
files, so names, defaults and ranges cannot drift between the faces. Paths of inputs and outputs
are not options: they are arguments of the task functions and of each face.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from bone_avizo._compat import StrEnum
from pathlib import Path
from typing import Any, Mapping

from bone_avizo.errors import ConfigError


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


class ConfigBase:
    """Methods shared by every task config (the dataclass fields come from the spec)."""

    SPEC: tuple[Param, ...] = ()

    def __post_init__(self):
        for param in self.SPEC:
            object.__setattr__(self, param.name, param.convert(getattr(self, param.name)))
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in a task config."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
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

    def with_(self, **changes):
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return str(value)
    return value


def make_config(name: str, spec: tuple[Param, ...], doc: str, base: type = ConfigBase) -> type:
    """A frozen dataclass named ``name`` whose fields, types and defaults are those of ``spec``."""
    fields = [(p.name, p.type if not p.multiple else tuple, dataclasses.field(default=p.default))
              for p in spec]
    cls = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True,
                                     namespace={"SPEC": spec, "__doc__": doc, "__module__": __name__})
    return cls


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
    GAUSSIAN = "gaussian"
    COSINE = "cosine"
    CONSTANT = "constant"


class Plane(StrEnum):
    XY = "xy"
    XZ = "xz"
    YZ = "yz"


class TTA(StrEnum):
    NONE = "none"
    FLIPS = "flips"
    ROT90 = "rot90"
    D4 = "d4"


# ---------------------------------------------------------------------------------------------
# DLPred
PREDICT_SPEC: tuple[Param, ...] = (
    Param("tile_size", int, 0, "tile edge in pixels; larger tiles see more context and overlap less",
          min=32, max=4096, multiple_of=32,
          zero_means="auto: whole slices up to 1024 px, else the tile in [max(patch, 512), 1024] that "
                     "computes the fewest pixels", group="tiling"),
    Param("overlap", float, 0.25, "fraction of a tile shared with its neighbour", min=0.0, max=0.9,
          group="tiling"),
    Param("blend", str, "gaussian", "blending window for overlapping tiles",
          choices=tuple(Blend), group="tiling"),
    Param("planes", str, ("xy",), "slicing planes; several are fused by averaging probabilities",
          choices=tuple(Plane), multiple=True, group="tiling"),
    Param("tta", str, "none", "test-time augmentation averaged over: flips (4 flip combinations), rot90 (4 rotations), d4 (all 8 symmetries)",
          choices=tuple(TTA), group="tiling"),
    Param("batch_size", int, 0, "tiles per forward pass", min=1, max=4096,
          zero_means="about 0.5 Mpixel of tiles on CPU, 16 Mpixel on CUDA (halved when the GPU runs out "
                     "of memory)", group="compute"),
    Param("device", str, "auto", "cpu, cuda, cuda:N, or auto (cuda when available; under torchrun "
          "cuda:LOCAL_RANK)", group="compute"),
    Param("devices", str, (), "several devices sharing one volume, e.g. cuda:0,cuda:1 (overrides device)",
          multiple=True, group="compute"),
    Param("backend", str, "auto", "inference engine; auto = onnxruntime on CPU when installed, else torch",
          choices=("auto", "torch", "onnxruntime"), group="compute"),
    Param("precision", str, "auto", "auto = fp32 on CPU, fp16 on CUDA; fp16/bf16 run the network's "
          "weights and activations in that precision (autocast where the device lacks the kernels)",
          choices=("auto", "fp32", "fp16", "bf16"), group="compute"),
    Param("compile", str, "auto", "torch.compile the network (backend torch): auto = on CUDA when the "
          "volume is large enough to pay back the compile time; a failure falls back to eager (logged)",
          choices=("auto", "on", "off"), group="compute"),
    Param("threads", int, 0, "CPU threads for the compute backend", min=1, max=1024,
          zero_means="all cores", group="compute"),
    Param("slab_slices", int, 0, "slices read, predicted and written together", min=1, max=65536,
          zero_means="chosen from memory_limit_gb", group="memory"),
    Param("memory_limit_gb", float, 1.0, "working-memory budget for slabs and buffers",
          min=0.05, max=4096.0, group="memory"),
    Param("probabilities", bool, False, "also write per-class probability maps (uint8, 0..255)",
          group="output"),
    Param("resume", bool, False, "continue an interrupted prediction into HDF5/Zarr", group="output"),
)

PredictConfig = make_config("PredictConfig", PREDICT_SPEC, "Options of DLPred (prediction).")


# ---------------------------------------------------------------------------------------------
# IoU
IOU_SPEC: tuple[Param, ...] = (
    Param("num_classes", int, 0, "number of classes", min=1, max=256,
          zero_means="max label of both volumes + 1"),
    Param("ignore_label", int, -1, "label value in the reference to leave out of every count",
          min=-1, max=255),
    Param("class_names", str, (), "names of the classes, in label order", multiple=True),
    Param("per_slice", bool, True, "also compute per-slice IoU along z"),
    Param("surface", bool, False, "also compute surface distances (mean, HD95) for volumes that fit in memory"),
    Param("slab_slices", int, 64, "slices read per step", min=1, max=65536),
    Param("surface_class", int, 1, "class whose surface distances are computed (with --surface)",
          min=1, max=255),
    Param("surface_max_mvoxels", float, 64.0, "largest volume (million voxels) for surface distances",
          min=0.001, max=100000.0),
    Param("threads", int, 0, "CPU threads for counting", min=1, max=1024, zero_means="all cores"),
    Param("memory_limit_gb", float, 0.5, "working-memory budget for the slabs read (two slabs in flight)",
          min=0.01, max=4096.0),
)

IoUConfig = make_config("IoUConfig", IOU_SPEC, "Options of IoU (evaluation).")


# ---------------------------------------------------------------------------------------------
# DLFit
class ValMode(StrEnum):
    SLICES = "slices"
    PATCHES = "patches"


FIT_EXTRA_AUGMENTATIONS = ("gamma", "noise", "blur", "scale")
FIT_LOSS_TERMS = ("jaccard", "dice", "lovasz", "focal", "tversky", "focal_tversky", "ce")

FIT_SPEC: tuple[Param, ...] = (
    Param("arch", str, "unet", "network architecture (unet, unetplusplus, fpn, pspnet, deeplabv3plus, "
          "linknet, manet, upernet, segformer, ...)", group="model"),
    Param("encoder", str, "resnet18", "encoder (backbone) of the network, e.g. resnet18, resnet50, "
          "efficientnet-b0, mit_b0, or tu-<timm name>", group="model"),
    Param("encoder_depth", int, 5, "encoder stages used (fewer: a smaller, faster network)",
          min=3, max=5, group="model"),
    Param("decoder_channels", int, (), "decoder channels per stage, one per encoder stage "
          "(empty: the architecture's default)", min=1, max=4096, multiple=True, group="model"),
    Param("weights", str, "random", "initial weights: random, imagenet (encoder only, must be cached "
          "offline), or the path of a previous model file to fine-tune", group="model"),
    Param("in_channels", int, 1, "input channels = neighbouring slices per sample: 1 = 2D, 3..9 "
          "(odd) = 2.5D stacks centred on the segmented slice", min=1, max=9, odd=True, group="model"),
    Param("num_classes", int, 0, "number of classes", min=2, max=255,
          zero_means="max label over all scans + 1", group="data"),
    Param("class_names", str, (), "class names in label order (also fixes the number of classes)",
          multiple=True, group="data"),
    Param("patch_size", int, 256, "training patch edge in pixels", min=32, max=2048, multiple_of=32,
          group="sampling"),
    Param("patches_per_slice", int, 4, "random crops taken from each sampled slice", min=1, max=64,
          group="sampling"),
    Param("max_overlap", float, 0.3, "largest area fraction two crops of one slice may share",
          min=0.0, max=1.0, group="sampling"),
    Param("foreground_crops", float, 0.0, "fraction of crops centred on a random foreground pixel "
          "(label > 0) instead of uniformly placed", min=0.0, max=1.0, group="sampling"),
    Param("planes", str, ("xy",), "slicing planes to train on (xz/yz add slices along y and x)",
          choices=tuple(Plane), multiple=True, group="sampling"),
    Param("batch_size", int, 32, "slices per batch; a batch holds batch_size x patches_per_slice "
          "patches", min=1, max=4096, group="sampling"),
    Param("steps_per_epoch", int, 0, "optimiser steps per epoch", min=1, max=10_000_000,
          zero_means="every training slice once per epoch", group="sampling"),
    Param("cache_slices", int, 64, "slices kept in each worker's read cache (LRU)", min=0, max=100_000,
          group="sampling"),
    Param("num_workers", int, 0, "data-loading worker processes (0: load in the training process)",
          min=0, max=256, group="sampling"),
    Param("normalization", str, "zscore", "per-scan intensity normalisation over voxels > 0",
          choices=("zscore", "minmax"), group="data"),
    Param("augment", bool, True, "BONe's augmentations: flips (p=0.166 each), rot90/180/270 (p=0.5), "
          "intensity shift and scale (p=0.4 each)", group="augmentation"),
    Param("extra_augment", str, (), "additional augmentations", choices=FIT_EXTRA_AUGMENTATIONS,
          multiple=True, group="augmentation"),
    Param("val_fraction", float, 0.2, "fraction of the scans held out for validation (at least one "
          "scan) when no validation scans are given", min=0.0, max=0.9, group="validation"),
    Param("folds", int, 0, "k-fold cross-validation over scans: number of folds", min=2, max=1000,
          zero_means="no k-fold: a fraction split", group="validation"),
    Param("fold", int, 0, "which fold (0..folds-1) is the validation part", min=0, max=999,
          group="validation"),
    Param("val_mode", str, "slices", "validate on whole slices (tiled with blending) or on one set of "
          "fixed random patches", choices=tuple(ValMode), group="validation"),
    Param("val_slices", int, 0, "validation slices per plane and scan, evenly spaced",
          min=1, max=10_000_000, zero_means="all slices", group="validation"),
    Param("early_stopping", int, 0, "stop after this many epochs without a better validation score",
          min=1, max=100_000, zero_means="off", group="validation"),
    Param("loss", str, "jaccard", "loss, or a sum of terms joined by '+' (optionally weighted, e.g. "
          "'jaccard+0.5*ce'); terms: " + ", ".join(FIT_LOSS_TERMS), group="optimisation"),
    Param("optimizer", str, "adam", "optimiser", choices=("adam", "adamw", "sgd"), group="optimisation"),
    Param("lr", float, 1e-3, "initial learning rate", min=1e-9, max=10.0, group="optimisation"),
    Param("min_lr", float, 1e-6, "learning rate reached at the end by cosine annealing",
          min=0.0, max=10.0, group="optimisation"),
    Param("scheduler", str, "cosine", "learning-rate schedule over the epochs",
          choices=("cosine", "constant"), group="optimisation"),
    Param("weight_decay", float, 0.0, "weight decay (AdamW: decoupled)", min=0.0, max=10.0,
          group="optimisation"),
    Param("momentum", float, 0.9, "SGD momentum", min=0.0, max=1.0, group="optimisation"),
    Param("epochs", int, 25, "training epochs", min=1, max=100_000, group="optimisation"),
    Param("accumulate", int, 1, "batches whose gradients are summed before each optimiser step",
          min=1, max=4096, group="optimisation"),
    Param("amp", bool, True, "mixed precision (float16 autocast) on CUDA; ignored on CPU",
          group="compute"),
    Param("device", str, "auto", "cpu, cuda, cuda:N, or auto (cuda when available; under torchrun "
          "each process takes the GPU of its LOCAL_RANK)", group="compute"),
    Param("threads", int, 0, "CPU threads for torch", min=1, max=1024, zero_means="torch's default",
          group="compute"),
    Param("seed", int, 0, "seed of the split, sampling, augmentation and initial weights",
          min=0, max=2**31 - 1, group="compute"),
    Param("deterministic", bool, False, "deterministic algorithms: bit-identical results for the same "
          "seed, also across an interrupted and resumed run (slower on GPU)", group="compute"),
    Param("tensorboard", bool, False, "also write TensorBoard logs (needs the tensorboard package)",
          group="output"),
    Param("plot", bool, True, "write a PNG of the loss and IoU curves (needs matplotlib)",
          group="output"),
)


class _FitConfigBase(ConfigBase):
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


FitConfig = make_config("FitConfig", FIT_SPEC, "Options of DLFit (training).", base=_FitConfigBase)
