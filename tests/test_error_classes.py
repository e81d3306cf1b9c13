"""Each BoneAvizoError subclass is also the built-in exception it means, with the CLI's exit codes kept,
and a handler of built-in errors does not swallow one of ours."""
import argparse

import numpy as np
import pytest

from bone_avizo import errors
from bone_avizo.avizo.hx import AvizoNameError
from bone_avizo.avizo.inputs import MissingInputError
from bone_avizo.standalone.__main__ import _run
from bone_avizo.studies.tasks import StudyIncompleteError

BUILT_IN = {
    errors.InputFileError: FileNotFoundError,
    errors.FormatError: ValueError,
    errors.CorruptFileError: ValueError,
    errors.ShapeMismatchError: ValueError,
    errors.UnsupportedDtypeError: ValueError,
    errors.InvalidVolumeError: ValueError,
    errors.OutputExistsError: FileExistsError,
    errors.OutputWriteError: OSError,
    errors.OutputIsInputError: OSError,
    errors.ConfigError: ValueError,
    errors.ModelError: ValueError,
    errors.LabelError: ValueError,
    errors.VoxelSizeError: ValueError,
    StudyIncompleteError: RuntimeError,
    AvizoNameError: NameError,
    MissingInputError: ValueError,
}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_names_its_built_in():
    mine = {cls for cls in _subclasses(errors.BoneAvizoError) if cls.__module__.startswith("bone_avizo")}
    assert mine - {errors.Cancelled} == set(BUILT_IN)


@pytest.mark.parametrize("cls", list(BUILT_IN), ids=lambda c: c.__name__)
def test_each_error_is_caught_by_its_built_in(cls):
    with pytest.raises(BUILT_IN[cls]) as caught:
        raise cls("what is wrong; how to fix it")
    assert isinstance(caught.value, errors.BoneAvizoError)
    assert str(caught.value) == "what is wrong; how to fix it"


def test_the_hierarchy_is_kept():
    assert issubclass(errors.OutputIsInputError, errors.OutputWriteError)
    assert not issubclass(errors.Cancelled, (ValueError, OSError, RuntimeError))


@pytest.mark.parametrize("error, code", [(errors.ConfigError("bad"), 2), (errors.InputFileError("missing"), 2),
                                         (errors.OutputWriteError("full"), 2), (errors.Cancelled("stop"), 130),
                                         (BrokenPipeError(), 141), (ValueError("bug"), 1)])
def test_the_cli_exit_codes_are_kept(error, code, capsys):
    def command(args):
        raise error

    assert _run(argparse.Namespace(_run=command, command="x", debug=False)) == code


def test_a_writer_keeps_its_own_output_error(tmp_path):
    from bone_avizo.io.amira import AmiraWriter
    from bone_avizo.volume import VolumeInfo

    info = VolumeInfo((2, 3, 4), np.uint8)
    writer = AmiraWriter(tmp_path / "v.am", info, compress="zip")
    writer.write_slab(0, np.zeros((1, 3, 4), np.uint8))
    with pytest.raises(errors.OutputWriteError) as caught:
        writer.write_slab(0, np.zeros((1, 3, 4), np.uint8))
    writer.abort()
    assert str(caught.value).count("v.am") == 1 and "already encoded" in str(caught.value)


def test_a_bad_voxel_size_in_npy_metadata_stays_an_invalid_volume(tmp_path):
    from bone_avizo.io.npy import info_from_attrs

    with pytest.raises(errors.InvalidVolumeError, match="voxel size must be three positive"):
        info_from_attrs({"voxel_size": [0.0, 1.0, 1.0]}, (2, 3, 4), np.uint8, name="v", where="v.npy")


def test_a_rank_variable_that_is_not_a_number_is_named(monkeypatch):
    from bone_avizo.runtime import ranks_from_env

    monkeypatch.setenv("RANK", "one")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(errors.ConfigError, match="RANK='one' is not an integer"):
        ranks_from_env()
