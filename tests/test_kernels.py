"""The one-pass CPU kernels of predict: numba and numpy routes give the same results as the references."""
import numpy as np
import pytest
import torch

from bone_avizo.data.normalize import NormStats, affine, normalize
from bone_avizo import kernels


@pytest.fixture(params=["numba", "numpy"])
def route(request, monkeypatch):
    """Runs a test with the numba kernels, then with the numpy fallback (BONE_AVIZO_NUMBA=0)."""
    if request.param == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("BONE_AVIZO_NUMBA", "1" if request.param == "numba" else "0")
    kernels.compiled.cache_clear()
    assert (kernels.compiled() is not None) == (request.param == "numba")
    yield request.param
    kernels.compiled.cache_clear()


def _reference_labels(scores: np.ndarray) -> np.ndarray:
    """numpy's argmax with NaN as np.maximum's running maximum treats it (a NaN ends the race)."""
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.uint8)
    labels = np.zeros(scores.shape[:1] + scores.shape[2:], np.uint8)
    best = scores[:, 0].copy()
    for c in range(1, scores.shape[1]):
        with np.errstate(invalid="ignore"):
            labels[scores[:, c] > best] = c
        best = np.maximum(best, scores[:, c])
    return labels


@pytest.mark.parametrize("classes", [1, 2, 3, 4, 9])
def test_labels_are_the_argmax_with_ties_to_the_lower_class_and_nan_as_numpy(route, classes):
    rng = np.random.default_rng(classes)
    scores = rng.integers(-2, 3, (3, classes, 5000)).astype(np.float32)  # many ties
    scores[1, :, 100:140] = np.nan
    scores[2, 0, 10:20] = np.nan
    scores[2, -1, 30:40] = np.nan
    labels = np.full((3, 5000), 77, np.uint8)
    assert kernels.labels_into(scores, labels) is labels
    np.testing.assert_array_equal(labels, _reference_labels(scores))
    clean = scores[:1]
    np.testing.assert_array_equal(kernels.labels_into(clean, labels[:1]), clean.argmax(1) if classes > 1
                                  else (clean[:, 0] > 0))


def test_labels_across_blocks_and_runs(route, monkeypatch):
    """Pixels counts that are not a multiple of the kernels' steps are labelled exactly."""
    monkeypatch.setattr(kernels, "BLOCK", 64)
    monkeypatch.setattr(kernels, "LABEL_CHUNK_PIXELS", 100)
    scores = np.random.default_rng(5).standard_normal((2, 6, 1001)).astype(np.float32)
    labels = np.empty((2, 1001), np.uint8)
    np.testing.assert_array_equal(kernels.labels_into(scores, labels), scores.argmax(1))


def test_other_score_dtypes_take_the_numpy_route(route):
    scores = np.random.default_rng(2).integers(0, 9, (2, 3, 300)).astype(np.int32)
    np.testing.assert_array_equal(kernels.labels_into(scores, np.empty((2, 300), np.uint8)), scores.argmax(1))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("mode", ["zscore", "minmax"])
def test_normalisation_is_bit_identical_to_normalize(route, dtype, mode):
    info = np.iinfo(dtype)
    raw = np.random.default_rng(3).integers(info.min, info.max, (3, 41, 57), endpoint=True).astype(dtype)
    stats = NormStats(mean=float(raw.mean()) + 0.3, std=float(raw.std()) / 4, minimum=float(raw.min()) + 5,
                      maximum=float(raw.max()) - 5, count=raw.size)
    expected = normalize(raw.astype(np.int32), stats, mode).numpy()
    out = np.full(raw.shape, np.nan, np.float32)
    assert kernels.normalise_into(raw, out, affine(stats, mode)) is out
    assert out.tobytes() == expected.tobytes()
    view = raw[:, 3::2, 1:-4]  # a strided view of the source, as a memory-mapped slab is read
    part = np.empty(view.shape, np.float32)
    assert kernels.normalise_into(view, part, affine(stats, mode)).tobytes() == expected[:, 3::2, 1:-4].tobytes()


def test_a_single_image_normalises_as_a_stack(route):
    raw = np.arange(600, dtype=np.uint16).reshape(20, 30)
    out = np.empty(raw.shape, np.float32)
    kernels.normalise_into(raw, out, (100.0, 0.5, -10.0, 10.0))
    np.testing.assert_array_equal(out, np.clip((raw.astype(np.float32) - 100) * np.float32(0.5), -10, 10))


def test_numba_that_cannot_load_falls_back_to_numpy(monkeypatch, caplog):
    import sys

    import bone_avizo
    monkeypatch.setenv("BONE_AVIZO_NUMBA", "1")
    monkeypatch.setitem(sys.modules, "bone_avizo._numba_kernels", None)  # import fails
    monkeypatch.delattr(bone_avizo, "_numba_kernels", raising=False)
    kernels.compiled.cache_clear()
    try:
        with caplog.at_level("INFO", logger="bone_avizo.kernels"):
            assert kernels.compiled() is None
        assert "numpy kernels" in caplog.text
        scores = torch.randn(1, 3, 40).numpy()
        np.testing.assert_array_equal(kernels.labels_into(scores, np.empty((1, 40), np.uint8)), scores.argmax(1))
    finally:
        kernels.compiled.cache_clear()


def test_predictions_do_not_depend_on_numba(monkeypatch):
    """The engine's labels are the same with the numba kernels and with the numpy ones."""
    pytest.importorskip("numba")
    from bone_avizo.config import PredictConfig
    from bone_avizo.predict.engine import predict_volume
    from tests.fakes import fake_loaded
    volume = np.random.default_rng(4).integers(0, 4000, (5, 48, 40)).astype(np.uint16)
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("BONE_AVIZO_NUMBA", flag)
        kernels.compiled.cache_clear()
        results.append(predict_volume(volume, fake_loaded(num_classes=3), PredictConfig(backend="torch")).labels.array)
    kernels.compiled.cache_clear()
    np.testing.assert_array_equal(results[0], results[1])
    assert len(np.unique(results[0])) > 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("skip_zeros", [True, False])
def test_moments_are_exact(route, dtype, skip_zeros, monkeypatch):
    """Count, sum, sum of squares, minimum and maximum: exact integers, the same on both routes, across
    the kernel's runs (made small here) and for all-zero data."""
    from bone_avizo.data.normalize import _unsigned_moments
    monkeypatch.setattr(kernels, "MOMENTS_RUN", 1000)
    flat = np.random.default_rng(6).integers(0, np.iinfo(dtype).max, 4321, endpoint=True).astype(dtype)
    flat[::5] = 0
    flat[7] = np.iinfo(dtype).max
    selected = flat[flat != 0] if skip_zeros else flat
    wide = selected.astype(np.int64)
    found = _unsigned_moments(flat, skip_zeros=skip_zeros)
    assert (found.count, found.total, found.squares, found.minimum, found.maximum) == (
        wide.size, int(wide.sum()), int((wide * wide).sum()), int(wide.min()), int(wide.max()))
    assert _unsigned_moments(np.zeros(100, dtype), skip_zeros=True).count == 0
