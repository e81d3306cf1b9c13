"""Determinism on CPU: the same seed gives bit-identical weights and labels, run after run and face after face.

Covered elsewhere: an interrupted and resumed training equals an uninterrupted one
(tests/test_fit.py::test_interrupted_and_resumed_run_ends_bit_identical and the kill tests here), and
the Avizo module BONeDLPred gives the label volume and probability maps of the CLI bit for bit
(tests/test_avizo_consistency.py::test_label_volumes_are_bit_identical). Here: three trainings with the
same seed (through the API, through a config made by Avizo ports -- spec -> ports -> config, what an
Avizo DLFit module would do -- and from the command line) give identical weights, a different seed
differs (so the comparison can fail), and two predictions with the trained model are identical.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import fake_hx
from bone_avizo.avizo import config_to_ports, ports_to_config
from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.fit import fit_model
from bone_avizo.models import load_model
from bone_avizo.predict import predict_volume
from test_avizo_adapter import options_module

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


def test_the_same_seed_trains_identical_weights_through_avizo_ports_and_the_command_line(trained, phantom_pairs,
                                                                                         tmp_path):
    """Three runs with seed 1: the API (fixture), a config made by Avizo ports, the command line."""
    config = FitConfig(**OPTIONS, seed=1)
    module = options_module(fake_hx.HxWorld(), tmp_path, "FIT_SPEC")
    config_to_ports(config, module)
    from_ports = ports_to_config(FitConfig, module)
    assert from_ports == config
    by_ports = fit_model(phantom_pairs, from_ports, output=tmp_path / "ports.safetensors").model_path
    cli = tmp_path / "cli.safetensors"
    code, _, err = run_cli(fit_argv(phantom_pairs, cli, "--epochs", "2", "--deterministic", "--seed", "1",
                                    "--extra-augment", "noise", "gamma"))  # another order, same training
    assert code == 0, err
    assert identical(tensors(trained), tensors(by_ports)) and identical(tensors(trained), tensors(cli))


def test_predictions_with_the_trained_model_are_bit_identical(trained, phantom_pairs):
    scan = np.load(phantom_pairs[0][0])
    config = PredictConfig(backend="torch", device="cpu", threads=1, probabilities=True, tta="flips")
    first = predict_volume(scan, load_model(trained), config)
    second = predict_volume(scan, load_model(trained), config)
    assert np.array_equal(first.labels.array, second.labels.array)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(first.probabilities, second.probabilities))
    assert len(np.unique(first.labels.array)) > 1
