"""Which voxels the normalisation statistics are taken over: BONe's > 0, != 0, or all; recorded per model."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from bone_avizo.data.normalize import StatsAccumulator, scan_stats
from bone_avizo.errors import InvalidVolumeError, ModelError
from bone_avizo.io.base import ArraySource
from bone_avizo.models.metadata import ModelMetadata

HU = np.array([-1000, -100, 0, 0, 500, 1500], np.int16).reshape(1, 2, 3)   # air, fat, water, bone
UNSIGNED = np.array([0, 0, 2, 4], np.uint16).reshape(1, 2, 2)


@pytest.mark.parametrize("mask,count,mean,minimum", [
    ("positive", 2, 1000.0, 500.0),
    ("nonzero", 4, 225.0, -1000.0),
    ("all", 6, 150.0, -1000.0),
])
def test_masks_on_signed_data(mask, count, mean, minimum):
    stats = scan_stats(ArraySource(HU), mask=mask)
    assert (stats.count, stats.mean, stats.minimum, stats.maximum) == (count, mean, minimum, 1500.0)


@pytest.mark.parametrize("mask,count,mean,std", [("positive", 2, 3.0, 1.0), ("nonzero", 2, 3.0, 1.0),
                                                 ("all", 4, 1.5, np.sqrt(2.75))])
def test_masks_on_unsigned_data_through_the_exact_sums(mask, count, mean, std):
    stats = scan_stats(ArraySource(UNSIGNED), mask=mask)
    assert (stats.count, stats.mean, stats.minimum) == (count, mean, 0.0 if mask == "all" else 2.0)
    assert stats.std == pytest.approx(std)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("skip_zeros", [True, False])
def test_unsigned_moments_are_exact_across_runs_and_threads(monkeypatch, dtype, skip_zeros):
    """Runs of 7 voxels summed in rows of 3, parts of 50 between the threads, an all-zero run and the
    extreme values: the count, sums and extremes equal Python's integer arithmetic on the same voxels."""
    import bone_avizo.data.normalize as normalize
    monkeypatch.setattr(normalize, "MOMENTS_RUN", 7)
    monkeypatch.setattr(normalize, "SUM_ROW", 3)
    monkeypatch.setattr(normalize, "MOMENTS_PART", 50)
    monkeypatch.setattr(normalize, "io_threads", lambda: 4)  # 3 parts, whatever this machine's cores
    top = np.iinfo(dtype).max
    values = np.random.default_rng(5).integers(0, top, 400, endpoint=True).astype(dtype)
    values[10:30] = 0
    values[[3, 250]] = [top, 1]
    kept = [int(v) for v in values if v or not skip_zeros]
    found = normalize.parallel_moments(values.reshape(4, 10, 10), skip_zeros=skip_zeros)
    assert (found.count, found.total, found.squares) == (len(kept), sum(kept), sum(v * v for v in kept))
    assert (found.minimum, found.maximum) == (min(kept), top)


def test_a_whole_run_of_the_largest_uint16_sums_exactly():
    """Two full-size runs of 65535s: each square fills a uint32 and a run's sum of squares (2**18 *
    65535**2) is far beyond it, yet the sums come out exactly."""
    import bone_avizo.data.normalize as normalize
    values = np.full(2 * normalize.MOMENTS_RUN, 65535, np.uint16)
    found = normalize.parallel_moments(values.reshape(2, 1, -1), skip_zeros=True)
    assert (found.count, found.total, found.squares) == (values.size, values.size * 65535, values.size * 65535 ** 2)


def test_default_is_bones_rule():
    assert scan_stats(ArraySource(HU)).count == 2
    acc = StatsAccumulator()
    acc.add(HU)
    assert acc.result().mean == 1000.0


def test_signed_scan_mostly_below_zero_warns_once_under_the_positive_rule(caplog):
    with caplog.at_level(logging.WARNING, logger="bone_avizo.data.normalize"):
        scan_stats(ArraySource(np.concatenate([HU] * 4)), slab_slices=1)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("only 33% of the voxels of this signed scan are > 0")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bone_avizo.data.normalize"):
        scan_stats(ArraySource(HU), mask="nonzero")
        scan_stats(ArraySource(UNSIGNED))  # unsigned: zero is padding, no warning
    assert not caplog.records


def test_nothing_selected_names_the_rule():
    with pytest.raises(InvalidVolumeError, match=r"^the scan has no voxels != 0, so it cannot be normalised"):
        scan_stats(ArraySource(np.zeros((1, 2, 2), np.int16)), mask="nonzero")


BASE = dict(arch="unet", encoder="resnet18", in_channels=1, num_classes=3, patch_size=32)


def test_model_files_without_the_rule_keep_bones():
    assert ModelMetadata.from_dict(BASE).normalization_mask == "positive"
    assert ModelMetadata.from_dict({**BASE, "normalization_stats": "per_scan_all"}).normalization_mask == "all"
    meta = ModelMetadata.from_dict({**BASE, "normalization_mask": "nonzero"})
    assert ModelMetadata.from_json(meta.to_json()).normalization_mask == "nonzero"
    with pytest.raises(ModelError, match="metadata key 'normalization_mask': 'negative' is not one of positive, "
                                         "nonzero, all"):
        ModelMetadata.from_dict({**BASE, "normalization_mask": "negative"})


def test_bone_checkpoints_keep_bones_rule():
    from bone_avizo.models.bone_import import metadata_from_bone
    meta = metadata_from_bone({"num_classes": 3, "patch_size": 256, "in_channels": 1, "model_arch": "Unet",
                               "backbone": "resnet18", "normalization": "zscore"})
    assert meta.normalization_mask == "positive"


def test_fit_takes_its_statistics_with_the_configured_rule(tmp_path):
    from bone_avizo.config import FitConfig
    from bone_avizo.data.scans import ScanSpec, open_scans

    image = np.tile(HU, (2, 2, 2))  # (2, 4, 6) int16
    np.save(tmp_path / "ct.npy", image)
    np.save(tmp_path / "ct_labels.npy", (image > 200).astype(np.uint8))
    spec = ScanSpec(tmp_path / "ct.npy", tmp_path / "ct_labels.npy", "ct")
    assert FitConfig().normalization_mask == "nonzero"  # new models: right for signed data
    for mask, mean in (("nonzero", 225.0), ("positive", 1000.0), ("all", 150.0)):
        (scan,) = open_scans([spec], mask=mask)
        assert scan.stats.mean == mean


def test_predict_applies_the_rule_the_model_records(tmp_path, monkeypatch):
    from bone_avizo.config import PredictConfig
    from bone_avizo.models import load_model
    from bone_avizo.predict import engine, predict_volume
    from reliability.helpers import write_tiny_model

    path = write_tiny_model(tmp_path / "m.safetensors")
    loaded = load_model(path)
    loaded.metadata = loaded.metadata.with_(normalization_mask="nonzero")
    seen = []

    def recording(source, **kwargs):
        seen.append(kwargs.get("mask", "positive"))
        return scan_stats(source, **kwargs)
    monkeypatch.setattr(engine, "scan_stats", recording)
    predict_volume(np.tile(HU, (2, 6, 6)), loaded, PredictConfig(backend="torch", device="cpu", threads=1))
    assert seen == ["nonzero"]
