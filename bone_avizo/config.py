"""One frozen configuration dataclass per task, each built from ONE parameter spec.

The spec (a tuple of :class:`Param`) drives the Avizo ports, the CLI flags and JSON/YAML config
files, so names, defaults and ranges cannot drift between the faces. Paths of inputs and outputs
are not options: they are arguments of the task functions and of each face.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import StrEnum
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
    Param("tile_size", int, 0, "tile edge in pixels (default: the model's training patch size)",
          min=32, max=4096, multiple_of=32, zero_means="the model's patch size", group="tiling"),
    Param("overlap", float, 0.25, "fraction of a tile shared with its neighbour", min=0.0, max=0.9,
          group="tiling"),
    Param("blend", str, "gaussian", "blending window for overlapping tiles",
          choices=tuple(Blend), group="tiling"),
    Param("planes", str, ("xy",), "slicing planes; several are fused by averaging probabilities",
          choices=tuple(Plane), multiple=True, group="tiling"),
    Param("tta", str, "none", "test-time augmentation averaged over: flips (4 flip combinations), rot90 (4 rotations), d4 (all 8 symmetries)",
          choices=tuple(TTA), group="tiling"),
    Param("batch_size", int, 0, "tiles per forward pass", min=1, max=4096,
          zero_means="about 0.5 Mpixel of tiles on CPU, 4 Mpixel on CUDA", group="compute"),
    Param("device", str, "auto", "cpu, cuda, cuda:N, or auto (cuda when available)", group="compute"),
    Param("backend", str, "auto", "inference engine; auto = onnxruntime on CPU when installed, else torch",
          choices=("auto", "torch", "onnxruntime"), group="compute"),
    Param("precision", str, "auto", "auto = fp32 on CPU, fp16 autocast on CUDA",
          choices=("auto", "fp32", "fp16", "bf16"), group="compute"),
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
