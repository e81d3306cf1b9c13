"""IoU, Dice, precision, recall and volumes from streaming confusion matrices; per scan and pooled.

Definitions (``cm[r, p]``: rows = reference class, columns = predicted class, counted voxels only):
``tp = cm[c, c]``, ``ref = cm[c, :].sum()``, ``pred = cm[:, c].sum()``;
IoU = tp / (ref + pred - tp), Dice = 2 tp / (ref + pred), precision = tp / pred, recall = tp / ref.
The mean IoU averages the classes including background (BONe's validation metric); the
foreground mean leaves out class 0. See :data:`UNDEFINED_POLICY` for classes that cannot be scored.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from bone_avizo.errors import ConfigError, InvalidVolumeError, LabelError, VoxelSizeError
from bone_avizo.io.base import VolumeSource
from bone_avizo.metrics.confusion import VolumeLike, as_source, check_same_shape, stream_confusion
from bone_avizo.progress import ProgressCallback

log = logging.getLogger(__name__)

UNDEFINED_POLICY = (
    "A class absent from the reference (no counted reference voxel in the scan) cannot be scored (undefined): its IoU and "
    "Dice are null (not 0, not 1), in the scan and in each of its slices, and it is left out of every mean "
    "(absent_from_reference lists it; its predicted voxels are errors of the classes they cover: relabel it with "
    "--map-prediction SRC:DST to count it as another class). So is the class equal to the ignore label. "
    "Precision is null for a class never predicted and recall for a class absent from the reference. "
    "A class of the reference that is never predicted scores IoU 0 and counts in the means (never_predicted "
    "lists it; when the model has no such class, relabel the reference with --map-reference). In one slice, a "
    "class the scan's reference holds but that slice's reference lacks scores IoU 0 where it is predicted. "
    "Means are over the defined classes: mean_iou includes background (class 0, BONe's definition), "
    "mean_iou_foreground leaves it out.")

MM_PER_UNIT = {"mm": 1.0, "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "micron": 1e-3, "nm": 1e-6, "cm": 10.0,
                "m": 1000.0}


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den == 0."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(cm: np.ndarray, *, ignore_label: int = -1) -> dict[str, np.ndarray]:
    """Per-class counts and scores of an (..., n, n) confusion matrix; undefined scores are NaN.

    Returns arrays of shape (..., n): tp, fp, fn, voxels_reference, voxels_prediction, iou, dice,
    precision, recall.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    ref = cm.sum(-1)
    pred = cm.sum(-2)
    union = ref + pred - tp
    iou, dice = _divide(tp, union), _divide(2 * tp, ref + pred)
    precision, recall = _divide(tp, pred), _divide(tp, ref)
    if 0 <= ignore_label < cm.shape[-1]:
        for values in (iou, dice, precision, recall):
            values[..., ignore_label] = np.nan
    return dict(tp=tp, fp=pred - tp, fn=ref - tp, voxels_reference=ref, voxels_prediction=pred,
                iou=iou, dice=dice, precision=precision, recall=recall)


def _relabel_confusion(cm: np.ndarray, prediction_map: dict[int, int], reference_map: dict[int, int], *,
                      num_classes: int = 0, min_classes: int = 1) -> np.ndarray:
    """Confusion matrices (..., m, m) of the original labels -> (..., n, n) of the relabelled ones.

    A label missing from a map keeps its value. ``n`` is ``num_classes``, or (0) the largest relabelled
    label that has counts + 1 (at least ``min_classes``). Raises LabelError when a counted label is
    relabelled to ``num_classes`` or more.
    """
    m = cm.shape[-1]
    targets = {"prediction": np.array([prediction_map.get(i, i) for i in range(m)]),
               "reference": np.array([reference_map.get(i, i) for i in range(m)])}
    total = cm.reshape(-1, m, m).sum(0)
    used = {"reference": targets["reference"][total.sum(1) > 0], "prediction": targets["prediction"][total.sum(0) > 0]}
    needed = max(int(v.max(initial=0)) for v in used.values()) + 1
    if num_classes and needed > num_classes:
        role = max(used, key=lambda r: int(used[r].max(initial=0)))
        raise LabelError(f"after relabelling (--map-{role}) the {role} holds label {needed - 1} but num_classes is "
                         f"{num_classes} (labels 0..{num_classes - 1}); set --num-classes {needed} or map it to a "
                         "smaller label")
    n = num_classes or max(needed, min_classes)
    onehot = {}
    for role, target in targets.items():
        matrix = np.zeros((m, n), np.int64)
        keep = target < n  # labels that are never counted may point anywhere
        matrix[np.flatnonzero(keep), target[keep]] = 1
        onehot[role] = matrix
    return onehot["reference"].T @ cm.astype(np.int64) @ onehot["prediction"]


def mean_defined(values: np.ndarray, *, foreground: bool = False) -> np.ndarray:
    """Mean over the last axis (classes) of the defined (non-NaN) values; NaN where none is defined.

    ``foreground`` leaves out class 0.
    """
    values = values[..., 1:] if foreground else values
    defined = ~np.isnan(values)
    count = defined.sum(-1)
    total = np.where(defined, values, 0.0).sum(-1)
    return _divide(total, count)


def nan_to_none(value: Any) -> Any:
    """NaN -> None for one float; numpy scalars -> Python numbers (JSON-able)."""
    if value is None:
        return None
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def default_class_names(n: int, names: Sequence[str] = ()) -> tuple[str, ...]:
    """``names`` cut or completed to n entries (missing ones are 'class_<i>')."""
    names = tuple(names)[:n]
    return names + tuple(f"class_{i}" for i in range(len(names), n))


def _voxel_volume_mm3(voxel_size: Sequence[float], unit: str) -> float | None:
    """The volume of one voxel in mm^3, or None when the length unit is unknown."""
    factor = MM_PER_UNIT.get(str(unit).strip().lower())
    if factor is None:
        log.warning("unknown length unit %r: volumes in mm^3 are not reported", unit)
        return None
    return float(np.prod(voxel_size)) * factor ** 3


@dataclass(frozen=True)
class IoUResult:
    """Scores of one scan (or, with ``scans``, several pooled by summing their confusion matrices).

    ``confusion``: (n, n) int64, rows = reference, columns = prediction. ``per_slice``: (z, n, n)
    int64 or None. ``voxel_size``: (z, y, x) in ``unit``. ``inputs``: names or paths of the inputs.
    """

    confusion: np.ndarray
    class_names: tuple[str, ...]
    per_slice: np.ndarray | None = None
    shape: tuple[int, int, int] | None = None
    voxel_size: tuple[float, float, float] | None = None
    unit: str = "mm"
    ignore_label: int = -1
    inputs: dict[str, str | None] = field(default_factory=dict)
    surface: dict[str, Any] | None = None
    scans: tuple["IoUResult", ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.confusion.shape[0]

    @property
    def voxels_counted(self) -> int:
        return int(self.confusion.sum())

    @cached_property
    def absent_from_reference(self) -> np.ndarray:
        """(n,) bool: classes with no counted reference voxel in the scan (not scored, see UNDEFINED_POLICY)."""
        absent = self.confusion.sum(1) == 0
        if 0 <= self.ignore_label < absent.size:
            absent[self.ignore_label] = False
        return absent

    @property
    def never_predicted(self) -> np.ndarray:
        """(n,) bool: classes of the reference that the prediction never holds (they score IoU 0)."""
        return (self.confusion.sum(0) == 0) & (self.confusion.sum(1) > 0)

    def _scored(self, cm: np.ndarray) -> dict[str, np.ndarray]:
        scores = scores_from_confusion(cm, ignore_label=self.ignore_label)
        for key in ("iou", "dice"):
            scores[key][..., self.absent_from_reference] = np.nan
        return scores

    @cached_property
    def scores(self) -> dict[str, np.ndarray]:
        """Per-class arrays (n,): tp, fp, fn, voxels_reference, voxels_prediction, iou, dice, precision, recall."""
        return self._scored(self.confusion)

    @property
    def iou(self) -> np.ndarray:
        return self.scores["iou"]

    @property
    def dice(self) -> np.ndarray:
        return self.scores["dice"]

    @property
    def mean_iou(self) -> float | None:
        """Mean IoU over the defined classes, background included (BONe's definition)."""
        return nan_to_none(float(mean_defined(self.iou)))

    @property
    def mean_iou_foreground(self) -> float | None:
        """Mean IoU over the defined classes other than class 0."""
        return nan_to_none(float(mean_defined(self.iou, foreground=True)))

    @property
    def mean_dice(self) -> float | None:
        return nan_to_none(float(mean_defined(self.dice)))

    @property
    def mean_dice_foreground(self) -> float | None:
        return nan_to_none(float(mean_defined(self.dice, foreground=True)))

    def volume_fraction(self, which: str) -> np.ndarray:
        """Fraction of the counted voxels in each class, of 'reference' or 'prediction' (n,)."""
        return _divide(self.scores[f"voxels_{which}"], self.voxels_counted)

    def volume_mm3(self, which: str) -> np.ndarray | None:
        """Volume of each class in mm^3 of 'reference' or 'prediction' (n,); pooled: summed over scans."""
        if self.scans:
            parts = [s.volume_mm3(which) for s in self.scans]
            if any(p is None for p in parts):
                return None
            return np.sum([np.pad(p, (0, self.num_classes - p.size)) for p in parts], axis=0)
        size = _voxel_volume_mm3(self.voxel_size, self.unit) if self.voxel_size else None
        return None if size is None else self.scores[f"voxels_{which}"] * size

    @cached_property
    def slice_scores(self) -> dict[str, np.ndarray] | None:
        """Per-slice arrays (z, n) as in :attr:`scores`, or None when not computed."""
        if self.per_slice is None:
            return None
        return self._scored(self.per_slice)

    def slice_mean_iou(self, *, foreground: bool = False) -> np.ndarray | None:
        """Mean IoU of each slice (z,) over its defined classes; NaN for a slice with none."""
        if self.slice_scores is None:
            return None
        return mean_defined(self.slice_scores["iou"], foreground=foreground)

    def scan_means(self) -> dict[str, Any] | None:
        """For pooled results: the mean over scans of each scan's means and per-class IoU."""
        if not self.scans:
            return None
        out: dict[str, Any] = {"scans": len(self.scans)}
        for key in ("mean_iou", "mean_iou_foreground", "mean_dice", "mean_dice_foreground"):
            values = [getattr(s, key) for s in self.scans if getattr(s, key) is not None]
            out[key] = float(np.mean(values)) if values else None
        per_class = np.stack([np.pad(s.iou, (0, self.num_classes - s.num_classes), constant_values=np.nan)
                              for s in self.scans])
        out["iou"] = [nan_to_none(float(v)) for v in mean_defined(per_class.T)]
        return out


def _class_names(config, sources: Sequence[VolumeSource]) -> tuple[str, ...]:
    if config.class_names:
        if config.num_classes and len(config.class_names) != config.num_classes:
            raise ConfigError(f"{len(config.class_names)} class names given for num_classes "
                              f"{config.num_classes}; give one name per class, in label order")
        return tuple(config.class_names)
    names: tuple[str, ...] = ()
    for source in sources:  # the reference's names first; classes only the other side has keep its names
        more = tuple(source.info.class_names or ())
        names += more[len(names):]
    return names


def _input_name(source: VolumeSource) -> str:
    path = getattr(source, "path", None)
    return str(path) if path is not None else source.name


def compute_iou(prediction: VolumeLike, reference: VolumeLike, config, *, roi: VolumeLike | None = None,
                progress: ProgressCallback | None = None) -> IoUResult:
    """Score ``prediction`` against ``reference`` (label volumes (z, y, x)) with an IoUConfig.

    Inputs are VolumeSources (read slab by slab), Volumes or numpy arrays. ``roi`` (same shape):
    only its non-zero voxels are counted. Raises ShapeMismatchError, LabelError, InvalidVolumeError.
    """
    pred, ref = as_source(prediction, "prediction"), as_source(reference, "reference")
    sources = {"reference": ref, "prediction": pred}
    if roi is not None:
        sources["roi"] = as_source(roi, "roi")
    shape = check_same_shape(sources)
    names = _class_names(config, [ref, pred])
    voxel_size, unit, notes = _geometry({"reference": (reference, ref), "prediction": (prediction, pred)},
                                        allow_mismatch=config.allow_voxel_size_mismatch)
    maps = config.label_maps()
    acc = stream_confusion(pred, ref, num_classes=0 if any(maps) else config.num_classes,
                           ignore_label=config.ignore_label, roi=sources.get("roi"), slab_slices=config.slab_slices,
                           memory_limit_gb=config.memory_limit_gb, threads=config.threads,
                           keep_slices=config.per_slice, progress=progress, max_classes=config.max_classes)
    if acc.total.sum() == 0:
        raise InvalidVolumeError("no voxel was counted: the ROI is empty or every reference voxel holds the "
                                 f"ignore label {config.ignore_label}; check --roi and --ignore-label")
    for note in notes:
        log.warning("%s", note)
    if config.class_names and not config.num_classes and not any(maps) and acc.n > len(config.class_names):
        raise LabelError(f"the volumes hold labels up to {acc.n - 1} but {len(config.class_names)} class names are "
                         f"given (labels 0..{len(config.class_names) - 1}); give one name per class "
                         "(--class-names) or fix the labels")
    confusion, per_slice = acc.total, acc.per_slice
    min_classes = 1 if config.num_classes else len(names)
    if any(maps):
        confusion = _relabel_confusion(confusion, *maps, num_classes=config.num_classes, min_classes=min_classes)
        if per_slice is not None:
            per_slice = _relabel_confusion(per_slice, *maps, num_classes=confusion.shape[0])
    elif min_classes > acc.n:
        acc.grow(min_classes)
        confusion, per_slice = acc.total, acc.per_slice
    n = confusion.shape[0]
    result = IoUResult(confusion=confusion, class_names=default_class_names(n, names), per_slice=per_slice,
                       shape=shape, voxel_size=voxel_size, unit=unit,
                       ignore_label=config.ignore_label, options=config.to_dict(),
                       inputs={role: _input_name(s) for role, s in sources.items()})
    if config.surface:
        from bone_avizo.metrics.surface import surface_metrics
        surface = surface_metrics(pred, ref, config, roi=sources.get("roi"), voxel_size=voxel_size, unit=unit,
                                  class_name=result.class_names[config.surface_class]
                                  if config.surface_class < n else None)
        result = dataclasses.replace(result, surface=surface)
    return result


def _geometry(inputs: dict[str, tuple[VolumeLike, VolumeSource]], *,
              allow_mismatch: bool = False) -> tuple[tuple | None, str, list[str]]:
    """Voxel size and unit for the volumes in mm^3: the first calibrated input's (a bare array has no
    geometry; a file without a recorded voxel size is uncalibrated, its reader's 1 x 1 x 1 is not used
    when the other side is calibrated). Two calibrated inputs that disagree: VoxelSizeError unless
    ``allow_mismatch``. Also returns the warnings to log once the volumes are counted."""
    known = [(role, s.info) for role, (data, s) in inputs.items() if not isinstance(data, np.ndarray)]
    calibrated = [(role, info) for role, info in known if info.calibrated]
    if not calibrated:
        return (known[0][1].voxel_size, known[0][1].unit, []) if known else (None, "mm", [])
    (role, info), *others = calibrated
    notes = []
    for other_role, other in others:
        if not _same_voxel_size(info, other):
            text = (f"{other_role} voxel size {_size_text(other)} differs from the {role}'s {_size_text(info)}")
            if not allow_mismatch:
                raise VoxelSizeError(f"{text}; check that both volumes are of the same scan, or accept it with "
                                     f"--allow-voxel-size-mismatch (the {role}'s is used)")
            notes.append(f"{text}; the {role}'s is used (--allow-voxel-size-mismatch)")
    notes += [f"{other_role} has no recorded voxel size (its reader assumed {_size_text(other)}); the {role}'s "
              f"{_size_text(info)} is used for volumes" for other_role, other in known if not other.calibrated]
    return info.voxel_size, info.unit, notes


def _size_text(info) -> str:
    return " x ".join(f"{v:g}" for v in info.voxel_size) + f" {info.unit}"


def _same_voxel_size(a, b) -> bool:
    fa, fb = (MM_PER_UNIT.get(str(i.unit).strip().lower()) for i in (a, b))
    if fa is None or fb is None:
        return a.unit == b.unit and np.allclose(a.voxel_size, b.voxel_size, rtol=1e-4)
    return bool(np.allclose(np.multiply(a.voxel_size, fa), np.multiply(b.voxel_size, fb), rtol=1e-4))


def pool_results(results: Sequence[IoUResult]) -> IoUResult:
    """Pool several scans: their confusion matrices are summed (classes padded to the largest n).

    The pooled result keeps the scans (``scans``) so that the mean of the per-scan means is reported too.
    """
    if not results:
        raise InvalidVolumeError("no result to pool; give at least one prediction/reference pair")
    n = max(r.num_classes for r in results)
    total = np.zeros((n, n), np.int64)
    for r in results:
        total[:r.num_classes, :r.num_classes] += r.confusion
    ignores = {r.ignore_label for r in results}
    names = max((r.class_names for r in results), key=len)
    return IoUResult(confusion=total, class_names=default_class_names(n, names), unit="mm",
                     ignore_label=ignores.pop() if len(ignores) == 1 else -1, scans=tuple(results),
                     inputs={"scans": f"{len(results)} pooled"}, options=dict(results[0].options))
