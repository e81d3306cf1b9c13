"""The record of a scan (ScanSpec.to_dict / from_dict) that study tasks and training checkpoints keep.

Study folders and checkpoints written by earlier versions must stay readable and keep their task
fingerprints, so the record's keys and values are pinned here."""
from pathlib import Path

import numpy as np
import pytest

from bone_avizo.data.scans import ScanSpec, as_specs
from bone_avizo.io import ArraySource
from bone_avizo.studies.tasks import fingerprint
from bone_avizo.volume import Volume

SPEC = ScanSpec(Path("/data/bone_a.tif"), Path("/data/bone_a_labels.tif"), "bone_a", {"voxel_size": 0.02},
                {"key": "labels"})
RECORD = {"name": "bone_a", "image": "/data/bone_a.tif", "labels": "/data/bone_a_labels.tif",
          "image_options": {"voxel_size": 0.02}, "label_options": {"key": "labels"}}


def test_the_record_of_a_scan_is_pinned():
    assert SPEC.to_dict() == RECORD
    assert list(SPEC.to_dict()) == list(RECORD)
    assert SPEC.to_dict(options=False) == {"name": "bone_a", "image": "/data/bone_a.tif",
                                           "labels": "/data/bone_a_labels.tif"}


def test_task_fingerprints_of_earlier_study_folders_are_kept():
    assert fingerprint({"train": [SPEC.to_dict()]}) == "75ee360638b1b7ca"


def test_records_read_back_to_the_same_scan():
    assert ScanSpec.from_dict(RECORD) == SPEC
    assert ScanSpec.from_dict({"image": "/a.tif", "labels": "/b.tif"}) == ScanSpec(Path("/a.tif"), Path("/b.tif"))
    record = dict(RECORD)
    ScanSpec.from_dict(record).image_options["voxel_size"] = 1.0
    assert record["image_options"] == {"voxel_size": 0.02}  # the spec holds its own copy


def test_in_memory_scans_are_recorded_by_name():
    image = ArraySource(Volume(np.ones((2, 3, 4), np.uint16), name="scan0"))
    labels = ArraySource(Volume(np.zeros((2, 3, 4), np.uint8), name="scan0.labels"))
    assert ScanSpec(image, labels).to_dict()["image"] == "in memory (scan0)"


def test_as_specs_takes_specs_records_and_pairs():
    specs = as_specs([SPEC, RECORD, ("/a.tif", "/b.tif"), ("/c.tif", "/d.tif", "c")])
    assert specs[:2] == [SPEC, SPEC]
    assert specs[2] == ScanSpec(Path("/a.tif"), Path("/b.tif")) and specs[3].name == "c"
    with pytest.raises(TypeError):
        as_specs([{"image": "/a.tif", "labels": "/b.tif", "mask": "/m.tif"}])
