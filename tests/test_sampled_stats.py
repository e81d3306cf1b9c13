"""Normalisation statistics from a sample of slices: which slices are read, when reading stops, and how
close the result stays to the exact statistics (0.1 %), on synthetic and real scans and in the engine."""
from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from bone_avizo.config import PredictConfig
from bone_avizo.data.normalize import scan_stats
from bone_avizo.data.sampled_stats import FIRST_SLICES, TOLERANCE, first_stride, sample_rounds, sampled_stats
from bone_avizo.io import open_volume
from bone_avizo.io.base import ArraySource
from bone_avizo.predict import engine, predict_volume
from bone_avizo.volume import Volume
from conftest import REAL_SCANS, real_scan
from fakes import fake_loaded


class CountingSource(ArraySource):
    """An in-memory source that lends nothing and records the slabs read (as a file source would)."""

    def __init__(self, array: np.ndarray):
        super().__init__(Volume(array))
        self.reads = []

    def view_slab(self, z0, z1):
        return None

    def read_slab(self, z0, z1):
        self.reads.append((z0, z1))
        return super().read_slab(z0, z1)


def smooth_scan(nz=192, size=256, seed=0, slice_jitter=0.0, period2=0.0) -> np.ndarray:
    """uint16 (z, y, x): a slow trend along z (2 %), optional per-slice jitter (relative sd) and a
    brightness difference between odd and even slices, plus voxel noise; a zero border (padding)."""
    rng = np.random.default_rng(seed)
    z = np.arange(nz)
    level = 20000 * (1 + 0.02 * np.sin(z / nz * 3)) * (1 + rng.normal(0, slice_jitter, nz)) * (1 + period2 * (z % 2))
    volume = level[:, None, None] + rng.normal(0, 1500, (nz, size, size))
    volume[:, :4] = 0
    return volume.clip(0, 65535).astype(np.uint16)


def relative_error(found, exact) -> float:
    return max(abs(found.mean - exact.mean) / exact.mean, abs(found.std - exact.std) / exact.std)


@pytest.mark.parametrize("units", [1, 5, 31, 32, 64, 100, 495, 1000])
def test_rounds_are_nested_one_slice_per_stratum_and_end_with_every_slice(units):
    rounds = list(sample_rounds(units))
    assert rounds[-1] == list(range(units))
    assert len(rounds[0]) >= min(units, FIRST_SLICES) - 1  # the last stratum may fall past the end
    stride = first_stride(units)
    for level in rounds:
        assert len(set(u // stride for u in level)) == len(level)  # at most one unit per stratum
        stride = max(stride // 2, 1)
    for smaller, larger in zip(rounds, rounds[1:]):
        assert set(smaller) < set(larger)
    assert list(sample_rounds(units)) == rounds  # the same on every call (and machine)


def test_a_homogeneous_scan_is_sampled_and_stays_within_the_tolerance():
    volume = smooth_scan()
    exact = scan_stats(ArraySource(Volume(volume)))
    found, report = sampled_stats(ArraySource(Volume(volume)))
    assert report.slices_read < report.slices and not report.exact
    assert relative_error(found, exact) <= TOLERANCE
    assert found.count < exact.count and "sampled" in report.describe()


@pytest.mark.parametrize("kind", ["jittered slices", "odd and even slices differ"])
def test_slice_to_slice_variation_makes_it_read_more_and_stay_within_the_tolerance(kind):
    """Slices that differ by 3 % at random, or odd slices 3 % brighter than even ones (a pattern a fixed
    stride of 2 would line up with): the estimate must not pass off a biased sample."""
    volume = smooth_scan(slice_jitter=0.03) if kind == "jittered slices" else smooth_scan(period2=0.03)
    exact = scan_stats(ArraySource(Volume(volume)))
    found, report = sampled_stats(ArraySource(Volume(volume)))
    assert relative_error(found, exact) <= TOLERANCE
    homogeneous = sampled_stats(ArraySource(Volume(smooth_scan())))[1]
    assert report.slices_read > homogeneous.slices_read


def test_reading_every_slice_gives_the_exact_statistics():
    volume = smooth_scan(nz=40, size=64, slice_jitter=0.05)  # too few voxels to pin anything down
    found, report = sampled_stats(ArraySource(Volume(volume)))
    assert report.exact and found == scan_stats(ArraySource(Volume(volume)))
    assert report.describe() == "exact (every slice: too few to sample)"  # 40 slices: a first round is all
    jittered = sampled_stats(ArraySource(Volume(smooth_scan(nz=128, size=64, slice_jitter=0.05))))[1]
    assert jittered.exact and jittered.rounds > 1 and "no smaller sample" in jittered.describe()


def test_each_sampled_slice_is_read_once_and_progress_reaches_the_scan_s_slices():
    source = CountingSource(smooth_scan(nz=600, size=96))
    steps = []
    progress = type("P", (), {"advance": lambda self, n=1, message=None: steps.append(n)})()
    _, report = sampled_stats(source, progress=progress)
    assert all(z1 == z0 + 1 for z0, z1 in source.reads) and len(set(source.reads)) == len(source.reads)
    assert sum(steps) == 600 and report.slices_read == len(source.reads)


class LayeredSource(CountingSource):
    """A source that decodes chunk layers of 8 slices (as HDF5 and Zarr do with their chunks)."""

    read_depth = 8


def test_a_chunked_source_decodes_each_layer_once_across_rounds():
    """Slices sampled in different rounds from one chunk layer: the layer is read once, all of its slices
    counted then; the statistics are those of the same sample read slice by slice."""
    volume = smooth_scan(nz=600, size=96)
    layered = LayeredSource(volume)
    found, report = sampled_stats(layered)
    assert report.rounds > 1 and all(z0 % 8 == 0 and z1 - z0 <= 8 for z0, z1 in layered.reads)
    assert len(set(layered.reads)) == len(layered.reads)  # no layer read twice
    assert (found, report) == sampled_stats(CountingSource(volume))


def test_a_chunk_layer_beyond_the_byte_cap_is_read_in_parts(monkeypatch):
    from bone_avizo.data import sampled_stats as sampling
    volume = smooth_scan(nz=600, size=96)
    monkeypatch.setattr(sampling, "LAYER_BYTES", 3 * 96 * 96 * 2)  # 3 slices a read
    layered = LayeredSource(volume)
    found, report = sampled_stats(layered)
    assert {z1 - z0 for z0, z1 in layered.reads} <= {3, 2}  # 8 slices a layer: 3 + 3 + 2
    assert all(z0 // 8 == (z1 - 1) // 8 for z0, z1 in layered.reads)
    assert (found, report) == sampled_stats(CountingSource(volume))


def test_the_same_scan_gets_the_same_statistics_in_memory_and_in_every_format(tmp_path):
    """Which slices are read depends on the scan alone, not on its chunks (HDF5 and Zarr keep 16 slices a
    chunk) nor on whether its voxels are lent or read: identical statistics and slices read."""
    from bone_avizo.io import create_writer
    from bone_avizo.volume import VolumeInfo
    volume = smooth_scan(nz=256, size=256)
    expected, report = sampled_stats(ArraySource(Volume(volume)))
    assert not report.exact  # a real sample, not the exact statistics every source would agree on
    suffixes = [".tif", ".h5"] + ([".zarr"] if importlib.util.find_spec("zarr") else [])
    for suffix in suffixes:
        path = tmp_path / f"scan{suffix}"
        with create_writer(path, VolumeInfo(volume.shape, volume.dtype), overwrite=True) as writer:
            writer.write_slab(0, volume)
        with open_volume(path) as source:
            assert sampled_stats(source) == (expected, report), suffix


@pytest.mark.parametrize("key", sorted(REAL_SCANS))
def test_real_scans_stay_within_the_tolerance(key):
    with open_volume(real_scan(key)) as source:
        exact = scan_stats(source)
        found, report = sampled_stats(source)
    assert relative_error(found, exact) <= TOLERANCE, report.describe()


def test_the_engine_samples_on_request_and_reports_how(caplog):
    volume = smooth_scan()
    loaded = fake_loaded()
    with caplog.at_level(logging.INFO, logger="bone_avizo.predict.engine"):
        sampled = predict_volume(volume, loaded, PredictConfig(statistics="sampled", backend="torch"))
    exact = predict_volume(volume, loaded, PredictConfig(backend="torch"))  # auto: small scan -> exact
    assert sampled.statistics.startswith("sampled") and exact.statistics == "exact (every slice)"
    assert sampled.statistics in caplog.text
    assert relative_error(sampled.stats, exact.stats) <= TOLERANCE
    assert (sampled.labels.array == exact.labels.array).mean() >= 0.999


def test_auto_samples_large_integer_scans_only(monkeypatch):
    monkeypatch.setattr(engine, "SAMPLED_MIN_VOXELS", 192 * 256 * 256)
    loaded = fake_loaded()
    large = predict_volume(smooth_scan(), loaded, PredictConfig(backend="torch"))
    small = predict_volume(smooth_scan(nz=191), loaded, PredictConfig(backend="torch"))
    assert large.statistics.startswith("sampled") and small.statistics.startswith("exact")
    forced = predict_volume(smooth_scan(), loaded, PredictConfig(backend="torch", statistics="exact"))
    assert forced.statistics.startswith("exact")


@pytest.mark.parametrize("case", ["minmax model", "float scan"])
def test_sampling_falls_back_to_exact_where_a_sample_cannot_serve(case, caplog):
    """Min-max normalisation needs the true extremes; a float scan is read whole so that every voxel is
    checked for NaN and infinity. Both say so in one logged line and read every slice."""
    volume = smooth_scan(nz=64, size=64)
    loaded = fake_loaded(normalization="minmax" if case == "minmax model" else "zscore")
    if case == "float scan":
        volume = volume.astype(np.float32)
    with caplog.at_level(logging.INFO, logger="bone_avizo.predict.engine"):
        result = predict_volume(volume, loaded, PredictConfig(statistics="sampled", backend="torch"))
    assert result.statistics.startswith("exact")
    assert ("minimum and maximum" if case == "minmax model" else "NaN and infinity") in caplog.text


def test_moment_scratch_arrays_serve_concurrent_threads_without_mixing(monkeypatch):
    """The pooled scratch arrays of the exact sums: many slabs summed at once by the I/O threads give
    what each gives alone."""
    from bone_avizo.data import normalize
    from bone_avizo.io.threads import parallel_map
    monkeypatch.setattr(normalize, "MOMENTS_RUN", 1000)
    slabs = [np.random.default_rng(i).integers(0, 65535, 5000).astype(np.uint16) for i in range(24)]
    alone = [normalize._unsigned_moments(s, skip_zeros=True) for s in slabs]
    together = parallel_map(lambda s: normalize._unsigned_moments(s, skip_zeros=True), slabs)
    assert together == alone
    assert len(normalize._SCRATCH._free) <= normalize._SCRATCH.keep



@pytest.mark.parametrize("seed", [1, 3])
def test_padding_slices_and_an_empty_half_field_stay_within_the_tolerance(seed):
    """A specimen in the middle third of the slices, zeros (padding, not counted) before and after it and in
    part of its field of view: units without selected voxels sit beside full ones."""
    volume = smooth_scan(nz=384, size=256, seed=seed)
    volume[:128], volume[256:], volume[128:256, :, :100] = 0, 0, 0
    exact = scan_stats(ArraySource(Volume(volume)))
    found, report = sampled_stats(ArraySource(Volume(volume)))
    assert relative_error(found, exact) <= TOLERANCE, report.describe()
    assert found.count <= exact.count and found.minimum >= exact.minimum and found.maximum <= exact.maximum
