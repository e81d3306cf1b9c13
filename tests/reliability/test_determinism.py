"""Determinism on CPU: the same seed gives bit-identical weights and labels, run after run and face after face.

Covered elsewhere: an interrupted and resumed training equals an uninterrupted one
(tests/test_fit.py::test_interrupted_and_resumed_run_ends_bit_identical and the kill tests here); the
Avizo module BONeDLFit trains the weights of the ``fit`` command bit for bit
(tests/test_avizo_fit.py::test_trained_weights_equal_the_command_line_ones), and BONeDLPred gives the
label volume and probability maps of ``predict`` (tests/test_avizo_consistency.py::
test_label_volumes_are_bit_identical). Here: two trainings with the same seed, one through the API and
one through the command line with the options in another order, give identical weights; a different
seed gives other weights (so the comparison can fail); two predictions with the trained model are
identical.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.fit import fit_model
from bone_avizo.models import load_model
from bone_avizo.predict import predict_volume

from .helpers import FIT_OPTIONS, fit_argv, run_cli

OPTIONS = dict(FIT_OPTIONS, epochs=2, deterministic=True, extra_augment=("gamma", "noise"))  # spec order


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, phantom_pairs) -> Path:
    """A model trained through the API with seed 1."""
    folder = tmp_path_factory.mktemp("determinism")
    return fit_model(phantom_pairs, FitConfig(**OPTIONS, seed=1), output=folder / "api.safetensors").model_path


def test_another_seed_gives_other_weights(trained, phantom_pairs, tmp_path):
    """So the identities below can fail."""
    other = fit_model(phantom_pairs, FitConfig(**OPTIONS, seed=2), output=tmp_path / "other.safetensors")
    assert not identical(tensors(trained), tensors(other.model_path))


def test_the_same_seed_trains_identical_weights_from_the_command_line(trained, phantom_pairs, tmp_path):
    cli = tmp_path / "cli.safetensors"
    code, _, err = run_cli(fit_argv(phantom_pairs, cli, "--epochs", "2", "--deterministic", "--seed", "1",
                                    "--extra-augment", "noise", "gamma"))  # another order, same training
    assert code == 0, err
    assert identical(tensors(trained), tensors(cli))


def test_predictions_with_the_trained_model_are_bit_identical(trained, phantom_pairs):
    scan = np.load(phantom_pairs[0][0])
    config = PredictConfig(backend="torch", device="cpu", threads=1, probabilities=True, tta="flips")
    first = predict_volume(scan, load_model(trained), config)
    second = predict_volume(scan, load_model(trained), config)
    assert np.array_equal(first.labels.array, second.labels.array)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(first.probabilities, second.probabilities))
    assert len(np.unique(first.labels.array)) > 1
