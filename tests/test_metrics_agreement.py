"""Agreement of the IoU module with scikit-learn and torchmetrics on random label volumes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bone_avizo.config import IoUConfig
from bone_avizo.metrics import compute_iou

sklearn_metrics = pytest.importorskip("sklearn.metrics")
torch = pytest.importorskip("torch")
tm = pytest.importorskip("torchmetrics.classification")

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def label_pairs(draw, max_classes=5):
    """(n, prediction, reference): two (z, y, x) uint8 label volumes with labels 0..n-1."""
    n = draw(st.integers(2, max_classes))
    shape = draw(st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6)))
    labels = arrays(np.uint8, shape, elements=st.integers(0, n - 1))
    return n, draw(labels), draw(labels)


def _defined(values: np.ndarray) -> np.ndarray:
    return ~np.isnan(values)


@SETTINGS
@given(label_pairs())
def test_confusion_and_per_class_scores_equal_sklearn(case):
    n, pred, ref = case
    result = compute_iou(pred, ref, IoUConfig(num_classes=n, slab_slices=2))
    y_true, y_pred, labels = ref.ravel(), pred.ravel(), list(range(n))
    np.testing.assert_array_equal(result.confusion, sklearn_metrics.confusion_matrix(y_true, y_pred, labels=labels))
    for ours, theirs in [("iou", sklearn_metrics.jaccard_score), ("dice", sklearn_metrics.f1_score),
                         ("precision", sklearn_metrics.precision_score), ("recall", sklearn_metrics.recall_score)]:
        expected = theirs(y_true, y_pred, labels=labels, average=None, zero_division=0)
        got = result.scores[ours]
        np.testing.assert_allclose(got[_defined(got)], expected[_defined(got)], rtol=1e-12)
    present = sorted(set(y_true))  # classes absent from the reference are not scored (UNDEFINED_POLICY)
    expected_mean = sklearn_metrics.jaccard_score(y_true, y_pred, labels=present, average="macro")
    assert result.mean_iou == pytest.approx(expected_mean, rel=1e-12)


@SETTINGS
@given(label_pairs())
def test_iou_equals_torchmetrics_none_and_macro(case):
    n, pred, ref = case
    result = compute_iou(pred, ref, IoUConfig(num_classes=n))
    p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(ref.astype(np.int64))
    none = tm.MulticlassJaccardIndex(num_classes=n, average="none")(p, t).double().numpy()
    defined = _defined(result.iou)
    np.testing.assert_allclose(result.iou[defined], none[defined], rtol=1e-6)
    in_reference = np.isin(np.arange(n), ref)  # classes absent from the reference are not scored
    assert result.mean_iou == pytest.approx(none[in_reference].mean(), rel=1e-6)


@SETTINGS
@given(label_pairs(), st.integers(0, 4))
def test_ignore_label_equals_torchmetrics_ignore_index(case, ignore):
    n, pred, ref = case
    assume(ignore < n and np.any(ref != ignore))
    result = compute_iou(pred, ref, IoUConfig(num_classes=n, ignore_label=ignore))
    p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(ref.astype(np.int64))
    none = tm.MulticlassJaccardIndex(num_classes=n, average="none", ignore_index=ignore)(p, t).double().numpy()
    scored = np.isin(np.arange(n), ref[ref != ignore])  # classes absent from the reference are not scored
    assert result.mean_iou == pytest.approx(none[scored].mean(), rel=1e-6)
    keep = ref.ravel() != ignore
    expected = sklearn_metrics.confusion_matrix(ref.ravel()[keep], pred.ravel()[keep], labels=list(range(n)))
    np.testing.assert_array_equal(result.confusion, expected)


@SETTINGS
@given(label_pairs(), st.integers(0, 3))
def test_per_slice_and_pooled_sums_equal_the_whole(case, cut):
    n, pred, ref = case
    cut = min(cut, ref.shape[0])
    whole = compute_iou(pred, ref, IoUConfig(num_classes=n))
    np.testing.assert_array_equal(whole.per_slice.sum(0), whole.confusion)
    for z in range(ref.shape[0]):
        y_true, y_pred = ref[z].ravel(), pred[z].ravel()
        np.testing.assert_array_equal(whole.per_slice[z],
                                      sklearn_metrics.confusion_matrix(y_true, y_pred, labels=list(range(n))))
    if 0 < cut < ref.shape[0]:
        from bone_avizo.metrics import pool_results
        parts = [compute_iou(pred[:cut], ref[:cut], IoUConfig(num_classes=n)),
                 compute_iou(pred[cut:], ref[cut:], IoUConfig(num_classes=n))]
        np.testing.assert_array_equal(pool_results(parts).confusion, whole.confusion)
        assert pool_results(parts).mean_iou == pytest.approx(whole.mean_iou)
