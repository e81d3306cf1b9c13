"""The first slices of a scan kept from the statistics pass for the prediction pass."""
from __future__ import annotations

import numpy as np
import pytest

from bone_avizo.config import PredictConfig
from bone_avizo.io.base import ArraySource, VolumeSource
from bone_avizo.predict import predict_volume
from bone_avizo.predict.retained import RetainedSource
from tests.fakes import fake_loaded, pointwise_reference


class CountingSource(VolumeSource):
    """An on-disk-like source that records every slab and region it reads."""

    def __init__(self, array: np.ndarray):
        self.array, self.reads = array, []
        self.info = ArraySource(array).info

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        self.reads.append((z0, z1))
        return np.array(self.array[z0:z1])

    def read_region(self, z, y, x):
        self.reads.append(("region", z.start, z.stop))
        return np.array(self.array[z, y, x])


VOLUME = np.random.default_rng(2).integers(0, 4000, (12, 5, 6)).astype(np.uint16)
SLICE = VOLUME[0].nbytes


def statistics_pass(source: RetainedSource, step: int = 3) -> None:
    for z0 in range(0, source.shape[0], step):
        source.read_slab(z0, min(z0 + step, source.shape[0]))
    source.stop_retaining()


def test_kept_slices_are_served_from_memory_then_dropped_as_reads_move_on():
    counting = CountingSource(VOLUME)
    source = RetainedSource(counting, budget=7 * SLICE)  # two slabs of 3 fit, the third would not
    statistics_pass(source)
    assert source.kept_slices == (0, 6)
    counting.reads.clear()
    np.testing.assert_array_equal(source.read_slab(0, 4), VOLUME[0:4])
    np.testing.assert_array_equal(source.read_slab(2, 8), VOLUME[2:8])  # kept 2..5, read 6..7
    assert counting.reads == [(6, 8)]
    assert source.kept_slices == (0, 6)  # nothing ends at or before slice 2 yet: the halo may reread it
    np.testing.assert_array_equal(source.read_slab(4, 6), VOLUME[4:6])
    assert source.kept_slices == (3, 6) and counting.reads == [(6, 8)]
    np.testing.assert_array_equal(source.read_slab(6, 12), VOLUME[6:12])
    assert source.kept_slices == (6, 6) and counting.reads == [(6, 8), (6, 12)]


def test_reads_are_new_arrays_and_regions_inside_come_from_memory():
    counting = CountingSource(VOLUME)
    source = RetainedSource(counting, budget=VOLUME.nbytes)
    statistics_pass(source)
    counting.reads.clear()
    first = source.read_slab(0, 3)
    first[:] = 0  # a caller owns what it reads
    np.testing.assert_array_equal(source.read_slab(0, 3), VOLUME[0:3])
    np.testing.assert_array_equal(source.read_region(slice(0, 12), slice(1, 3), slice(None)), VOLUME[:, 1:3])
    assert counting.reads == []
    source.forget()
    np.testing.assert_array_equal(source.read_slab(0, 3), VOLUME[0:3])
    assert counting.reads == [(0, 3)]


def test_nothing_kept_for_in_memory_arrays_or_out_of_order_reads():
    in_memory = RetainedSource(ArraySource(VOLUME), budget=VOLUME.nbytes)
    statistics_pass(in_memory)
    assert in_memory.kept_slices == (0, 0)
    counting = CountingSource(VOLUME)
    source = RetainedSource(counting, budget=VOLUME.nbytes)
    source.read_slab(3, 6)  # not from slice 0: nothing to keep
    source.stop_retaining()
    assert source.kept_slices == (0, 0)


@pytest.mark.parametrize("context", [1, 3])
def test_prediction_reads_the_kept_slices_once_and_its_labels_do_not_change(monkeypatch, context):
    """A volume within the budget is read once (by the statistics pass); labels equal the reference."""
    volume = np.random.default_rng(4).integers(0, 3000, (9, 20, 24)).astype(np.uint16)
    loaded = fake_loaded(in_channels=context)
    config = PredictConfig(backend="torch", tile_size=32, slab_slices=2)
    counting = CountingSource(volume)
    result = predict_volume(counting, loaded, config)
    np.testing.assert_array_equal(result.labels.array, predict_volume(volume, loaded, config).labels.array)
    if context == 1:
        np.testing.assert_array_equal(result.labels.array, pointwise_reference(volume, loaded))
    assert sorted(counting.reads) == [(z, min(z + 2, 9)) for z in range(0, 9, 2)]  # the statistics pass only
    import bone_avizo.predict.engine as engine
    monkeypatch.setattr(engine, "RETAINED_SHARE", volume[:4].nbytes / (1 << 30))  # 4 slices of the 1 GB limit
    small = CountingSource(volume)
    again = predict_volume(small, loaded, config)
    np.testing.assert_array_equal(again.labels.array, result.labels.array)
    assert min(z0 for z0, _ in small.reads[5:]) == 4  # slices 0..3 kept (a halo reaching into them too)
