"""IoU metrics: streaming confusion matrices, scores, undefined classes, pooling, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from bone_avizo.config import IoUConfig
from bone_avizo.errors import (Cancelled, ConfigError, InvalidVolumeError, LabelError, ShapeMismatchError,
                               UnsupportedDtypeError, VoxelSizeError)
from bone_avizo.io import ArraySource
from bone_avizo.metrics import compute_iou, count_slices, pool_results
from bone_avizo.metrics import confusion as confusion_module
from bone_avizo.volume import Volume, VolumeInfo

SHAPE = (7, 13, 29)


def naive_per_slice(pred, ref, n, *, ignore=-1, roi=None):
    """Reference implementation: (z, n, n) counts with np.add.at."""
    out = np.zeros((ref.shape[0], n, n), np.int64)
    for z in range(ref.shape[0]):
        keep = np.ones(ref[z].shape, bool) if roi is None else roi[z] != 0
        if ignore >= 0:
            keep &= ref[z] != ignore
        np.add.at(out[z], (ref[z][keep].astype(int), pred[z][keep].astype(int)), 1)
    return out


def noisy_pair(rng, n=3, shape=SHAPE, flip=0.2):
    ref = rng.integers(0, n, shape).astype(np.uint8)
    pred = ref.copy()
    noise = rng.random(shape) < flip
    pred[noise] = rng.integers(0, n, int(noise.sum()))
    return pred, ref


# ---------------------------------------------------------------------------------------------
# counting
@pytest.mark.parametrize("n", [2, 3, 5, 11, 12, 16, 17, 40, 256])
@pytest.mark.parametrize("shape", [SHAPE, (2, 257, 256), (1, 257, 257), (1, 130, 131)])
def test_count_slices_equals_naive(rng, n, shape):
    pred = rng.integers(0, n, shape).astype(np.uint8 if n <= 256 else np.int32)
    ref = rng.integers(0, n, shape).astype(np.int32)
    plan = confusion_module.count_plan(n, shape[1] * shape[2])
    assert plan.pack == (1 if shape[1] < 100 or n > 15 else 2 if n > 3 else 4)
    got = count_slices(pred, ref, num_classes=n)
    assert got.shape == (shape[0], n, n) and got.dtype == np.int64
    np.testing.assert_array_equal(got, naive_per_slice(pred, ref, n))


@pytest.mark.parametrize("dtype", [np.uint16, np.int8, np.int64, np.float32, np.float64])
def test_count_slices_any_dtype(rng, dtype):
    pred, ref = noisy_pair(rng, n=4)
    got = count_slices(pred.astype(dtype), ref.astype(np.int16), num_classes=4)
    np.testing.assert_array_equal(got, naive_per_slice(pred, ref, 4))


def test_count_slices_bool_volumes(rng):
    pred, ref = rng.random(SHAPE) < 0.5, rng.random(SHAPE) < 0.3
    np.testing.assert_array_equal(count_slices(pred, ref), naive_per_slice(pred, ref, 2))


@pytest.mark.parametrize("shape", [SHAPE, (2, 257, 257)])
def test_ignore_label_and_roi_are_left_out(rng, shape):
    pred, ref = noisy_pair(rng, n=3, shape=shape)
    ref[rng.random(shape) < 0.1] = 255
    roi = (rng.random(shape) < 0.7).astype(np.uint8)
    got = count_slices(pred, ref, num_classes=3, ignore_label=255, roi=roi)
    np.testing.assert_array_equal(got, naive_per_slice(pred, ref, 3, ignore=255, roi=roi))


def test_invalid_labels_outside_the_roi_are_not_errors(rng):
    pred, ref = noisy_pair(rng)
    roi = np.ones(SHAPE, np.uint8)
    roi[0] = 0
    pred[0, 0, 0], ref[0, 1, 1] = 200, 7
    got = count_slices(pred, ref, num_classes=3, roi=roi)
    np.testing.assert_array_equal(got, naive_per_slice(pred, ref, 3, roi=roi))


@pytest.mark.parametrize("slab", [1, 3, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_streaming_is_independent_of_slabs_threads_and_input_kind(rng, slab, threads):
    pred, ref = noisy_pair(rng, n=4)
    config = IoUConfig(slab_slices=slab, threads=threads)
    expected = naive_per_slice(pred, ref, 4)
    for p, r in [(pred, ref), (Volume(pred), Volume(ref)), (ArraySource(pred), ArraySource(ref))]:
        result = compute_iou(p, r, config)
        np.testing.assert_array_equal(result.per_slice, expected)
        np.testing.assert_array_equal(result.confusion, expected.sum(0))


@pytest.mark.parametrize("small_slice", [8, 1 << 14])
def test_large_slices_are_counted_in_bands_of_rows(rng, monkeypatch, small_slice):
    monkeypatch.setattr(confusion_module, "GROUP_VOXELS", 100)  # bands of 3 rows of 29 voxels
    monkeypatch.setattr(confusion_module, "SMALL_SLICE", small_slice)  # 8: packed counting on odd lengths
    for n in (3, 5, 20):
        pred, ref = noisy_pair(rng, n=n)
        roi = (rng.random(SHAPE) < 0.8).astype(np.uint8)
        calls = []
        result = compute_iou(pred, ref, IoUConfig(slab_slices=3), roi=roi, progress=lambda d, t, m: calls.append(d))
        np.testing.assert_array_equal(result.per_slice, naive_per_slice(pred, ref, n, roi=roi))
        assert calls == sorted(calls) and calls[-1] == 7 and len(calls) == 7
    pred[5, 10, 3], roi[5, 10, 3] = 30, 1
    with pytest.raises(LabelError, match=r"at z=5, y=10, x=3"):
        compute_iou(pred, ref, IoUConfig(num_classes=20), roi=roi)


def test_memory_limit_shrinks_the_slab(rng):
    sources = [ArraySource(np.zeros((50, 100, 100), np.uint8))] * 2
    assert confusion_module.slab_size(sources, slab_slices=64, memory_limit_gb=1.0) == 64
    assert confusion_module.slab_size(sources, slab_slices=64, memory_limit_gb=0.0004) == 10  # 429496 B / (2 x 20000 B)
    assert confusion_module.slab_size(sources, slab_slices=64, memory_limit_gb=1e-9) == 1


def test_inferred_classes_grow_between_slabs(rng):
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    ref[5:] = 2
    pred[6:] = 4
    result = compute_iou(pred, ref, IoUConfig(slab_slices=2))
    assert result.num_classes == 5
    np.testing.assert_array_equal(result.per_slice, naive_per_slice(pred, ref, 5))


def test_class_names_set_the_inferred_class_count(rng):
    pred, ref = noisy_pair(rng, n=2)
    result = compute_iou(pred, ref, IoUConfig(class_names=("background", "bone", "pores")))
    assert result.num_classes == 3 and result.class_names == ("background", "bone", "pores")
    assert result.iou[2] != result.iou[2]  # absent from both: undefined (NaN)


def test_class_names_from_the_reference_volume(rng):
    pred, ref = noisy_pair(rng)
    result = compute_iou(pred, Volume(ref, class_names=("bg", "bone", "pore")), IoUConfig())
    assert result.class_names == ("bg", "bone", "pore")


# ---------------------------------------------------------------------------------------------
# scores
def test_scores_on_a_known_case():
    ref = np.array([0, 0, 0, 1, 1, 1, 2, 2], np.uint8).reshape(1, 2, 4)
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 2], np.uint8).reshape(1, 2, 4)
    result = compute_iou(pred, ref, IoUConfig(num_classes=4))
    np.testing.assert_allclose(result.iou[:3], [2 / 3, 2 / 4, 2 / 3])
    np.testing.assert_allclose(result.dice[:3], [4 / 5, 4 / 6, 4 / 5])
    np.testing.assert_allclose(result.scores["precision"][:3], [1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(result.scores["recall"][:3], [2 / 3, 2 / 3, 1])
    assert np.isnan(result.iou[3])  # absent from both volumes: undefined
    assert result.mean_iou == pytest.approx((2 / 3 + 2 / 4 + 2 / 3) / 3)
    assert result.mean_iou_foreground == pytest.approx((2 / 4 + 2 / 3) / 2)
    np.testing.assert_allclose(result.volume_fraction("reference"), [3 / 8, 3 / 8, 2 / 8, 0])


def test_class_absent_from_the_reference_is_not_scored_and_left_out_of_the_means():
    ref = np.zeros((2, 3, 4), np.uint8)
    pred = ref.copy()
    pred[0, 0, 0] = 1
    result = compute_iou(pred, ref, IoUConfig(num_classes=3))
    assert np.isnan(result.iou[1]) and np.isnan(result.iou[2]) and np.isnan(result.dice[1])
    assert result.absent_from_reference.tolist() == [False, True, True]
    assert np.isnan(result.scores["recall"][1]) and result.scores["precision"][1] == 0.0
    assert result.iou[0] == pytest.approx(23 / 24)
    assert result.mean_iou == pytest.approx(23 / 24)
    assert result.mean_iou_foreground is None
    assert np.isnan(result.slice_scores["iou"][:, 1]).all()  # not scored in any slice either


def test_class_never_predicted_scores_zero_and_counts_in_the_means():
    ref = np.zeros((2, 3, 4), np.uint8)
    ref[0, 0, 0] = 1
    result = compute_iou(np.zeros_like(ref), ref, IoUConfig(num_classes=2))
    assert result.iou.tolist() == [pytest.approx(23 / 24), 0.0]
    assert result.never_predicted.tolist() == [False, True]
    assert result.mean_iou == pytest.approx((23 / 24 + 0) / 2)


# the case: reference background/bone, a model that predicts background/bone/pores
BONE_REF = np.array([0, 0, 1, 1, 1, 1, 0, 0], np.uint8).reshape(1, 2, 4)
THREE_CLASS_PRED = np.array([0, 2, 1, 1, 2, 1, 0, 0], np.uint8).reshape(1, 2, 4)


def test_pores_absent_from_a_bone_reference_are_not_a_zero_in_the_mean():
    result = compute_iou(THREE_CLASS_PRED, BONE_REF, IoUConfig())
    np.testing.assert_allclose(result.iou, [3 / 4, 3 / 4, np.nan])
    assert result.mean_iou == pytest.approx(0.75) and result.mean_iou_foreground == pytest.approx(0.75)


def test_map_prediction_counts_pores_as_bone():
    result = compute_iou(THREE_CLASS_PRED, BONE_REF, IoUConfig(map_prediction=("2:1",)))
    assert result.num_classes == 2
    assert result.confusion.tolist() == [[3, 1], [0, 4]]
    np.testing.assert_allclose(result.iou, [3 / 4, 4 / 5])
    assert result.mean_iou == pytest.approx(0.775)
    np.testing.assert_array_equal(result.per_slice.sum(0), result.confusion)


def test_map_reference_and_num_classes():
    ref = np.array([0, 3, 3, 1], np.uint8).reshape(1, 1, 4)
    pred = np.array([0, 2, 2, 1], np.uint8).reshape(1, 1, 4)
    result = compute_iou(pred, ref, IoUConfig(map_reference=("3:2",), num_classes=3))
    assert result.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert result.mean_iou == 1.0
    with pytest.raises(LabelError, match=r"after relabelling \(--map-reference\) the reference holds label 5 but "
                                         r"num_classes is 3 \(labels 0..2\); set --num-classes 6"):
        compute_iou(pred, ref, IoUConfig(map_reference=("3:5",), num_classes=3))


@pytest.mark.parametrize("items,message", [
    (("2-1",), "map_prediction (--map-prediction): '2-1' is not SRC:DST with two labels 0..255 (e.g. 2:1)"),
    (("2:300",), "map_prediction (--map-prediction): '2:300' is not SRC:DST with two labels 0..255 (e.g. 2:1)"),
    (("2:1", "2:0"), "map_prediction (--map-prediction): label 2 is mapped twice (2:1 and 2:0); give one target "
                     "per label"),
])
def test_bad_label_maps_are_refused(items, message):
    with pytest.raises(ConfigError) as info:
        IoUConfig(map_prediction=items)
    assert str(info.value) == message


def _source(array, **geometry):
    from bone_avizo.io.base import ArraySource
    from bone_avizo.volume import Volume
    return ArraySource(Volume(array, **geometry))


def test_uncalibrated_side_takes_the_calibrated_voxel_size_and_says_so(caplog):
    calibrated = _source(BONE_REF, voxel_size=0.02)
    plain = _source(BONE_REF)
    for pred, ref in ((calibrated, plain), (plain, calibrated)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            result = compute_iou(pred, ref, IoUConfig())
        assert result.voxel_size == (0.02, 0.02, 0.02)
        assert result.volume_mm3("reference")[1] == pytest.approx(4 * 0.02 ** 3)
        warnings = [r.getMessage() for r in caplog.records if "no recorded voxel size" in r.getMessage()]
        assert len(warnings) == 1 and "0.02 x 0.02 x 0.02 mm is used" in warnings[0], warnings


def test_calibrated_sides_that_disagree_are_an_error_unless_accepted(caplog):
    pred, ref = _source(BONE_REF, voxel_size=0.02), _source(BONE_REF, voxel_size=(0.02, 0.01, 0.01))
    with pytest.raises(VoxelSizeError) as info:
        compute_iou(pred, ref, IoUConfig())
    assert str(info.value) == ("prediction voxel size 0.02 x 0.02 x 0.02 mm differs from the reference's "
                               "0.02 x 0.01 x 0.01 mm; check that both volumes are of the same scan, or accept it "
                               "with --allow-voxel-size-mismatch (the reference's is used)")
    result = compute_iou(pred, ref, IoUConfig(allow_voxel_size_mismatch=True))
    assert result.voxel_size == (0.02, 0.01, 0.01)
    same = _source(BONE_REF, voxel_size=20.0, unit="um")  # the same size in another unit agrees
    assert compute_iou(same, pred, IoUConfig()).voxel_size == (0.02, 0.02, 0.02)


def test_ignored_class_is_undefined(rng):
    pred, ref = noisy_pair(rng)
    result = compute_iou(pred, ref, IoUConfig(ignore_label=1))
    assert np.isnan(result.iou[1]) and result.scores["voxels_reference"][1] == 0
    assert result.mean_iou == pytest.approx(np.mean(result.iou[[0, 2]]))


def test_per_slice_scores_equal_scores_of_each_slice(rng):
    pred, ref = noisy_pair(rng)
    ref[3] = 0
    pred[3] = 0
    result = compute_iou(pred, ref, IoUConfig())
    for z in (0, 3, 6):
        alone = compute_iou(pred[z:z + 1], ref[z:z + 1], IoUConfig(num_classes=3))
        np.testing.assert_array_equal(result.slice_scores["iou"][z], alone.iou)
        assert result.slice_mean_iou()[z] == pytest.approx(alone.mean_iou)
    assert result.slice_mean_iou()[3] == 1.0 and np.isnan(result.slice_mean_iou(foreground=True)[3])


def test_per_slice_can_be_switched_off(rng):
    pred, ref = noisy_pair(rng)
    result = compute_iou(pred, ref, IoUConfig(per_slice=False))
    assert result.per_slice is None and result.slice_mean_iou() is None
    np.testing.assert_array_equal(result.confusion, naive_per_slice(pred, ref, 3).sum(0))


@pytest.mark.parametrize("unit,factor", [("mm", 1.0), ("um", 1e-9), ("furlong", None)])
def test_volume_in_mm3_from_the_voxel_size(rng, unit, factor):
    pred, ref = noisy_pair(rng)
    info = VolumeInfo(SHAPE, np.uint8, voxel_size=(0.5, 0.02, 0.02), unit=unit)
    result = compute_iou(pred, ArraySource(ref, info), IoUConfig())
    volumes = result.volume_mm3("reference")
    if factor is None:
        assert volumes is None
    else:
        np.testing.assert_allclose(volumes, result.scores["voxels_reference"] * 0.5 * 0.02 * 0.02 * factor)


def test_bare_arrays_have_no_physical_volume(rng):
    pred, ref = noisy_pair(rng)
    result = compute_iou(pred, ref, IoUConfig())
    assert result.voxel_size is None and result.volume_mm3("prediction") is None


def test_pool_results_sums_confusion_and_averages_scan_means(rng):
    a = compute_iou(*noisy_pair(rng, n=3), IoUConfig())
    b = compute_iou(*noisy_pair(rng, n=2, flip=0.5), IoUConfig())
    pooled = pool_results([a, b])
    assert pooled.num_classes == 3
    expected = a.confusion.copy()
    expected[:2, :2] += b.confusion
    np.testing.assert_array_equal(pooled.confusion, expected)
    means = pooled.scan_means()
    assert means["mean_iou"] == pytest.approx((a.mean_iou + b.mean_iou) / 2)
    assert means["iou"][2] == pytest.approx(a.iou[2])  # undefined in b: left out of the class mean
    assert pooled.mean_iou != pytest.approx(means["mean_iou"])


def test_pool_results_of_nothing_is_an_error():
    with pytest.raises(InvalidVolumeError, match="at least one"):
        pool_results([])


# ---------------------------------------------------------------------------------------------
# progress
def test_progress_reports_and_cancels(rng):
    pred, ref = noisy_pair(rng)
    calls = []
    compute_iou(pred, ref, IoUConfig(slab_slices=2), progress=lambda d, t, m: calls.append((d, t)))
    assert calls[-1] == (7, 7) and len(calls) >= 4
    with pytest.raises(Cancelled):
        compute_iou(pred, ref, IoUConfig(slab_slices=2), progress=lambda d, t, m: True)


# ---------------------------------------------------------------------------------------------
# bad input
def test_shape_mismatch_names_both_shapes(rng):
    with pytest.raises(ShapeMismatchError, match=r"\(7, 13, 28\).*\(7, 13, 29\)"):
        compute_iou(np.zeros((7, 13, 28), np.uint8), np.zeros(SHAPE, np.uint8), IoUConfig())
    with pytest.raises(ShapeMismatchError, match="roi"):
        compute_iou(np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8), IoUConfig(),
                    roi=np.ones((7, 12, 29), np.uint8))


def test_label_beyond_declared_classes_says_value_and_num_classes(rng):
    pred, ref = noisy_pair(rng)
    pred[4, 2, 3] = 9
    with pytest.raises(LabelError, match=r"prediction holds labels up to 9 \(the largest, first at z=4, y=2, "
                                         r"x=3\).*num_classes is 3.*--num-classes 10"):
        compute_iou(pred, ref, IoUConfig(num_classes=3))


def test_more_than_256_inferred_classes_is_an_error():
    ref = np.zeros(SHAPE, np.int32)
    ref[1, 1, 1] = 1000
    with pytest.raises(LabelError, match="reference holds labels up to 1000.*at most 256 classes"):
        compute_iou(np.zeros(SHAPE, np.uint8), ref, IoUConfig())


@pytest.mark.parametrize("bad", [0.5, np.nan])
def test_non_integral_floats_are_an_error(rng, bad):
    pred, ref = noisy_pair(rng)
    pred = pred.astype(np.float32)
    pred[2, 3, 4] = bad
    with pytest.raises(LabelError, match=r"prediction holds non-integer values .*z=2, y=3, x=4"):
        compute_iou(pred, ref, IoUConfig())


def test_negative_labels_are_an_error(rng):
    pred, ref = noisy_pair(rng)
    ref = ref.astype(np.int16)
    ref[1, 0, 0] = -1
    with pytest.raises(LabelError, match="reference holds the negative label -1"):
        compute_iou(pred, ref, IoUConfig())


@pytest.mark.parametrize("array", [np.zeros((0, 4, 5), np.uint8), np.zeros((4, 5), np.uint8)])
def test_empty_or_flat_arrays_are_an_error(array):
    with pytest.raises(InvalidVolumeError, match="non-empty 3-D"):
        compute_iou(array, array, IoUConfig())


def test_nothing_counted_is_an_error(rng):
    pred, ref = noisy_pair(rng)
    with pytest.raises(InvalidVolumeError, match="no voxel was counted"):
        compute_iou(pred, ref, IoUConfig(), roi=np.zeros(SHAPE, np.uint8))


def test_non_numeric_dtype_is_an_error():
    array = np.zeros(SHAPE, "U1")
    with pytest.raises(UnsupportedDtypeError, match="dtype <U1"):
        compute_iou(array, array, IoUConfig())


def test_per_slice_memory_bound(monkeypatch):
    monkeypatch.setattr(confusion_module, "PER_SLICE_MAX_BYTES", 1000)
    array = np.zeros((20, 3, 3), np.uint8)
    with pytest.raises(InvalidVolumeError, match="--no-per-slice"):
        compute_iou(array, array, IoUConfig(num_classes=3))


# ---------------------------------------------------------------------------------------------
# a real scan
def test_real_scan_two_classical_segmentations():
    """LHDL trabecular bone (200^3, 19.5 um): a raw threshold vs a smoothed threshold of the same scan."""
    from conftest import real_scan

    ndimage = pytest.importorskip("scipy.ndimage")
    from bone_avizo.io import open_volume

    with open_volume(real_scan("lhdl_3155")) as source:
        scan, info = source.read_all(), source.info
    ref = (scan > 142).astype(np.uint8)
    pred = (ndimage.gaussian_filter(scan.astype(np.float32), 1) > 81).astype(np.uint8)
    result = compute_iou(ArraySource(pred, info), ArraySource(ref, info),
                         IoUConfig(class_names=("background", "bone"), slab_slices=48))
    bone_ref, bone_pred = ref.astype(bool), pred.astype(bool)
    assert result.iou[1] == pytest.approx((bone_ref & bone_pred).sum() / (bone_ref | bone_pred).sum(), rel=1e-12)
    assert result.voxel_size == pytest.approx((0.0195,) * 3, rel=1e-3) and result.unit == "mm"
    assert result.volume_mm3("reference")[1] == pytest.approx(bone_ref.sum() * np.prod(result.voxel_size))
    assert 0.05 < result.volume_fraction("reference")[1] < 0.3  # raw threshold: ~9.5 % bone
    worst = int(np.nanargmin(result.slice_scores["iou"][:, 1]))
    alone = compute_iou(pred[worst:worst + 1], ref[worst:worst + 1], IoUConfig(num_classes=2))
    assert result.slice_scores["iou"][worst, 1] == pytest.approx(alone.iou[1])


def test_a_class_only_the_prediction_has_keeps_the_predictions_name():
    result = compute_iou(_source(THREE_CLASS_PRED, class_names=("background", "bone", "pores")),
                         _source(BONE_REF, class_names=("bg", "bone")), IoUConfig())
    assert result.class_names == ("bg", "bone", "pores")
