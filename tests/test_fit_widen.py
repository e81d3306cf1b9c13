"""A 2D model file seeds a 2.5D run: the first convolution is widened to the neighbouring slices."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_fit import TINY as FIT_TINY
from test_studies_tasks import write_phantoms

from bone_avizo.config import FitConfig
from bone_avizo.errors import ConfigError
from bone_avizo.fit import fit_model
from bone_avizo.fit.network import widen_to_stack
from bone_avizo.models import build_model, load_model

TINY = {**FIT_TINY, "epochs": 1}


def _tiny_unet(channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", "resnet18", in_channels=channels, num_classes=3, encoder_depth=3,
                       decoder_channels=[8, 8, 8]).eval()


@pytest.mark.parametrize("channels", [3, 5])
def test_the_widened_network_predicts_the_centre_slice_as_before(channels, tmp_path):
    flat = _tiny_unet()
    stack = torch.randn(2, channels, 32, 32)
    with torch.no_grad():
        expected = flat(stack[:, channels // 2:channels // 2 + 1])
        wide = widen_to_stack(flat, channels, source=tmp_path / "m")
        got = wide(stack)
    assert next(wide.parameters()).shape[1] == channels
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_network_without_a_single_channel_first_convolution_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot widen"):
        widen_to_stack(_tiny_unet(3), 5, source=tmp_path / "m")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three 6 x 64 x 64 phantom scans as .npy (image, labels) pairs."""
    return write_phantoms(tmp_path_factory.mktemp("widen"), (6, 64, 64), range(3))


def test_fitting_a_2d_model_file_as_2_5d(scans, tmp_path):
    flat = fit_model(scans, FitConfig(**TINY), output=tmp_path / "flat.safetensors")
    wide = fit_model(scans, FitConfig(**TINY, in_channels=3, weights=str(flat.model_path), lr=1e-9, min_lr=0.0),
                     output=tmp_path / "wide.safetensors")
    meta = load_model(wide.model_path).metadata
    assert meta.in_channels == 3 and meta.training["initial_weights"] == str(flat.model_path)
    start = load_file(flat.model_path)
    tuned = load_file(wide.model_path)
    first = "encoder.conv1.weight"  # the ResNet stem
    assert tuned[first].shape[1] == 3
    torch.testing.assert_close(tuned[first][:, 1:2].float(), start[first].float(), rtol=0, atol=1e-5)
    assert float(tuned[first][:, [0, 2]].abs().max()) < 1e-5  # neighbours start at zero; lr ~ 0 keeps them


def test_fit_cli_takes_the_stack_of_a_2_5d_model_file_unless_told(scans, tmp_path):
    from bone_avizo.standalone.__main__ import main

    wide = fit_model(scans, FitConfig(**TINY, in_channels=3), output=tmp_path / "wide.safetensors")
    io = ["--images", *(str(i) for i, _ in scans), "--labels", *(str(lab) for _, lab in scans)]
    small = ["--encoder-depth", "3", "--decoder-channels", "8", "8", "8", "--patch-size", "32", "--batch-size", "2",
             "--steps-per-epoch", "1", "--patches-per-slice", "2", "--val-slices", "2", "--epochs", "1", "--no-plot"]
    tuned = tmp_path / "tuned.safetensors"
    assert main(["fit", *io, "--output", str(tuned), "--weights", str(wide.model_path), *small]) == 0
    assert load_model(tuned).metadata.in_channels == 3
    assert main(["fit", *io, "--output", str(tmp_path / "flat.safetensors"), "--weights", str(wide.model_path),
                 "--in-channels", "1", *small]) == 2  # asked for 2D: the 3-slice file cannot start it
