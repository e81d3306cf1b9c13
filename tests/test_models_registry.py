"""The architecture x encoder registry: names, building, forward shapes, weights, size and cost."""
from __future__ import annotations

import json

import pytest
import torch

from bone_avizo.errors import ConfigError, ModelError
from bone_avizo.models import (ARCHITECTURES, build_model, count_parameters, estimate_gflops, list_architectures,
                               list_encoders)
from bone_avizo.models.registry import canonical_arch, canonical_encoder, weights_cached

SMALL = dict(decoder_channels=(32, 16, 8, 8, 8))


@pytest.mark.parametrize("name, ours", [
    ("Unet", "unet"), ("UnetPlusPlus", "unetplusplus"), ("unet++", "unetplusplus"), ("FPN", "fpn"),
    ("PSPNet", "pspnet"), ("DeepLabV3Plus", "deeplabv3plus"), ("deeplabv3+", "deeplabv3plus"),
    ("Linknet", "linknet"), ("MAnet", "manet"), ("UPerNet", "upernet"), ("Segformer", "segformer"),
    ("U-Net", "unet"), (" unet ", "unet")])
def test_bone_and_smp_architecture_names_are_accepted(name, ours):
    assert canonical_arch(name) == ours


def test_registry_lists_smp_architectures_and_encoders():
    assert list_architectures()[:2] == ["unet", "unetplusplus"]
    assert {"fpn", "pspnet", "deeplabv3plus", "linknet", "manet", "upernet", "segformer"} <= set(ARCHITECTURES)
    encoders = list_encoders()
    assert {"resnet18", "mobilenet_v2", "mit_b0", "efficientnet-b0", "mobileone_s0"} <= set(encoders)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown architecture 'UNetX'.*unet, unetplusplus"):
        build_model("UNetX", "resnet18", in_channels=1, num_classes=3)


def test_unknown_encoder_suggests_close_matches_and_how_to_list_all():
    with pytest.raises(ConfigError) as err:
        canonical_encoder("resnet81")
    message = str(err.value)
    assert "resnet18" in message and "info --encoders" in message and "\n" not in message


def test_encoder_names_are_case_insensitive_and_timm_names_are_checked():
    assert canonical_encoder("ResNet18") == "resnet18"
    assert canonical_encoder("tu-mobilenetv3_small_050") == "tu-mobilenetv3_small_050"
    with pytest.raises(ConfigError, match="timm"):
        canonical_encoder("tu-not_a_timm_model_xyz")


@pytest.mark.parametrize("arch, encoder", [("unet", "resnet18"), ("Unet", "mobilenet_v2"),
                                           ("FPN", "mobilenet_v2"), ("segformer", "mit_b0")])
def test_forward_shape(arch, encoder):
    torch.manual_seed(0)
    model = build_model(arch, encoder, in_channels=1, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 96))
    assert out.shape == (2, 3, 64, 96)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("arch", ["unetplusplus", "pspnet", "deeplabv3", "deeplabv3plus", "linknet", "manet",
                                  "upernet", "segformer"])
@pytest.mark.parametrize("encoder", [pytest.param("resnet18", marks=pytest.mark.slow), "mobilenet_v2"])
def test_forward_shape_all_architectures(arch, encoder):
    model = build_model(arch, encoder, in_channels=3, num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 2, 64, 64)


def test_architecture_options_reach_smp():
    model = build_model("unet", "mobilenet_v2", in_channels=5, num_classes=4, **SMALL)
    assert model.segmentation_head[0].in_channels == 8
    with pytest.raises(ConfigError, match="invalid architecture option"):
        build_model("unet", "mobilenet_v2", in_channels=1, num_classes=2, no_such_option=3)


@pytest.mark.parametrize("arch, encoder", [("unetplusplus", "mit_b0"), ("dpt", "resnet18")])
def test_incompatible_encoder_is_a_config_error(arch, encoder):
    with pytest.raises(ConfigError, match=f"architecture '{arch}' cannot be built with encoder '{encoder}'"):
        build_model(arch, encoder, in_channels=1, num_classes=3)


@pytest.mark.parametrize("key, value", [("in_channels", 0), ("num_classes", 2.5), ("num_classes", True)])
def test_channel_and_class_counts_are_validated(key, value):
    kwargs = dict(in_channels=1, num_classes=3)
    kwargs[key] = value
    with pytest.raises(ConfigError, match=key):
        build_model("unet", "resnet18", **kwargs)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in offline mode (no network attempt, no retries)."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_imagenet_weights_offline_raise_model_error(empty_hf_cache):
    assert not weights_cached("resnet18")
    with pytest.raises(ModelError, match="ImageNet weights for encoder resnet18 are not available offline.*"
                                         "weights=None"):
        build_model("unet", "resnet18", in_channels=1, num_classes=3, weights="imagenet")


def test_unknown_weights_name_lists_available(empty_hf_cache):
    with pytest.raises(ConfigError, match="no pretrained weights 'instagram'.*imagenet"):
        build_model("unet", "resnet18", in_channels=1, num_classes=3, weights="instagram")


def test_cached_imagenet_weights_load_offline(empty_hf_cache):
    """Weights placed in the local cache are used without the network (smp sums RGB filters for 1 channel)."""
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    setting = encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    folder = (empty_hf_cache / ("models--" + setting["repo_id"].replace("/", "--")) / "snapshots"
              / setting["revision"])
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    fake = {k: torch.randn_like(v.float()) if v.is_floating_point() else v
            for k, v in get_encoder("mobilenet_v2", in_channels=3).state_dict().items()}
    save_file(fake, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3}))
    assert weights_cached("mobilenet_v2")
    model = build_model("unet", "mobilenet_v2", in_channels=1, num_classes=2, weights="imagenet")
    first = "features.0.0.weight"
    expected = fake[first].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.encoder.state_dict()[first], expected)


def test_count_parameters_and_trainable_only():
    model = build_model("unet", "mobilenet_v2", in_channels=1, num_classes=3, **SMALL)
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters()) > 0
    for p in model.encoder.parameters():
        p.requires_grad = False
    assert count_parameters(model, trainable_only=True) == total - count_parameters(model.encoder)


def test_gflops_of_unet_resnet18_match_the_known_figure_and_keep_the_mode():
    model = build_model("unet", "resnet18", in_channels=1, num_classes=3)
    model.train()
    bn = model.encoder.bn1
    before = bn.running_mean.clone()
    gflops = estimate_gflops(model, 1, 256)
    assert gflops == pytest.approx(10.63, abs=0.05)  # 2 FLOPs per multiply-accumulate
    assert model.training
    torch.testing.assert_close(bn.running_mean, before)
    assert estimate_gflops(model, 1, (128, 256)) == pytest.approx(gflops / 2, rel=1e-6)


def test_pan_needs_at_least_128_pixels():
    model = build_model("pan", "mobilenet_v2", in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 128, 160)).shape == (1, 2, 128, 160)
