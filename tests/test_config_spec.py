"""A task's spec is read from its config dataclass: one Param per field, named, typed and ordered by it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from bone_avizo.config import ConfigBase, FitConfig, IoUConfig, PredictConfig, param, spec_of
from bone_avizo.errors import ConfigError
from bone_avizo.phantom import PhantomConfig
from bone_avizo.studies import BenchConfig, CVConfig

CONFIGS = (PredictConfig, IoUConfig, FitConfig, PhantomConfig, CVConfig, BenchConfig)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_spec_has_one_param_per_field_with_its_default(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert cls.SPEC is spec_of(cls)
    assert sorted(p.name for p in cls.SPEC) == sorted(fields)
    for p in cls.SPEC:
        assert p.default == fields[p.name].default
        assert p.multiple == isinstance(p.default, tuple)
        assert p.type in (bool, int, float, str)
    assert cls().to_dict() == {p.name: list(p.default) if p.multiple else p.default for p in cls.SPEC}


def test_study_options_follow_the_study_own_options():
    assert [p.name for p in CVConfig.SPEC] == ["folds", "replicates", "reshuffle", "selection",
                                               "keep_predictions", "keep_checkpoints"]
    assert [p.name for p in BenchConfig.SPEC] == ["selection", "keep_predictions", "keep_checkpoints"]


def test_fields_convert_and_validate_as_their_param_says():
    assert PredictConfig(planes="xy,yz", tile_size="64").planes == ("xy", "yz")
    with pytest.raises(ConfigError, match=r"^tile_size \(--tile-size\): 100 is not valid; expected 32..4096, "
                                          r"a multiple of 32, 0 = auto"):
        PredictConfig(tile_size=100)
    with pytest.raises(ConfigError, match="unknown option"):
        CVConfig.from_dict({"tile_size": 64})


def test_a_field_without_param_or_of_another_type_is_refused():
    @dataclass(frozen=True)
    class Plain(ConfigBase):
        size: int = 3

    @dataclass(frozen=True)
    class Listed(ConfigBase):
        sizes: list = param((1,), "sizes")

    with pytest.raises(TypeError, match=r"Plain.size: declare every config field with param"):
        spec_of(Plain)
    with pytest.raises(TypeError, match=r"Listed.sizes: annotate a config field as int, float, bool, str"):
        spec_of(Listed)
