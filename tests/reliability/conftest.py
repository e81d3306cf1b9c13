"""Fixtures of the reliability tests: a tiny model file and phantom training scans, made once."""
from __future__ import annotations

import pytest

from .helpers import write_phantom_pairs, write_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2D 3-class model file (read-only for the tests: copy it before spoiling it)."""
    return write_tiny_model(tmp_path_factory.mktemp("reliability_model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def phantom_pairs(tmp_path_factory):
    """Three (image, labels) .npy phantom scans of shape (5, 40, 48) for training."""
    return write_phantom_pairs(tmp_path_factory.mktemp("reliability_phantoms"))
