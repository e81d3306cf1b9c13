"""Binary models (one output channel, a sigmoid logit, as smp's and MONAI's classes=1): label 1 where the
logit is > 0, two probability maps (background, foreground), on every path of the engine and the CLI."""
import numpy as np
import pytest
import torch

from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.errors import ConfigError, ModelError
from bone_avizo.io import load_volume, open_volume, save_volume
from bone_avizo.models import ModelMetadata, build_model, load_model, save_model
from bone_avizo.predict import predict_volume
from bone_avizo.predict.engine import labels_from_scores
from bone_avizo.runtime import Ranks
from bone_avizo.standalone.__main__ import main
from bone_avizo.volume import Volume
from fakes import PointwiseNet, fake_loaded

SHAPE = (9, 40, 52)  # (z, y, x): several 32-px tiles per xy, xz and yz image
REGION = (slice(2, 7), slice(10, 31), slice(5, 40))


def scan(seed=5) -> np.ndarray:
    """Background 100..1000, a box of 3000..4000: min-max normalised, the box is > 0.74, the rest < 0.24."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(100, 1000, SHAPE).astype(np.uint16)
    volume[REGION] = rng.integers(3000, 4000, volume[REGION].shape)
    return volume


def region_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[REGION] = 1
    return labels


def binary_loaded():
    """A binary pointwise network: logit 2 x - 1 of the min-max normalised voxel x, > 0 in the box only."""
    net = PointwiseNet(1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(-1.0)
    return fake_loaded(num_classes=1, normalization="minmax", module=net)


def foreground_probability(volume: np.ndarray) -> np.ndarray:
    """round(255 * sigmoid(2 x - 1)) with x the min-max normalised volume (all its voxels are > 0)."""
    x = (volume.astype(np.float64) - volume.min()) / (volume.max() - volume.min())
    return np.rint(255 / (1 + np.exp(-(2 * x - 1))))


def cfg(**kw):
    kw.setdefault("tile_size", 32)
    kw.setdefault("backend", "torch")
    return PredictConfig(**kw)


def test_one_channel_scores_label_where_the_logit_is_above_zero():
    scores = torch.tensor([[[[-2.0, 0.0, 1e-6, 3.0], [0.5, -0.5, -1e-6, 0.0]]]])  # (1, 1, 2, 4)
    expected = np.array([[[0, 0, 1, 1], [1, 0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(labels_from_scores(scores).numpy(), expected)
    out = torch.full((1, 2, 4), 7, dtype=torch.uint8)
    assert labels_from_scores(scores, out=out) is out
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_channel_scores_on_cuda_label_as_on_cpu():
    scores = torch.randn(3, 1, 17, 29, generator=torch.Generator().manual_seed(2))
    expected = labels_from_scores(scores).numpy()
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(labels_from_scores(scores.cuda()).cpu().numpy(), expected)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_binary_model_segments_the_region_where_its_logit_is_positive(backend, tmp_path, monkeypatch):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
        monkeypatch.setenv("BONE_AVIZO_CACHE", str(tmp_path / "cache"))
    volume = scan()
    result = predict_volume(volume, binary_loaded(), cfg(backend=backend, slab_slices=4))
    assert result.backend == backend
    np.testing.assert_array_equal(result.labels.array, region_labels())
    assert result.labels.class_names == ("background", "bone")


def test_binary_probabilities_are_background_and_foreground_maps():
    volume = scan()
    result = predict_volume(volume, binary_loaded(), cfg(probabilities=True))
    background, foreground = (p.array.astype(int) for p in result.probabilities)
    assert len(result.probabilities) == 2 and result.probabilities[1].name.endswith("_prob_bone")
    np.testing.assert_allclose(foreground, foreground_probability(volume), atol=1)
    assert np.abs(background + foreground - 255).max() <= 1
    np.testing.assert_array_equal(foreground >= 128, result.labels.array == 1)


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_binary_model_with_test_time_augmentation(tta):
    result = predict_volume(scan(), binary_loaded(), cfg(tta=tta, slab_slices=3))
    np.testing.assert_array_equal(result.labels.array, region_labels())


def test_binary_model_fuses_three_planes():
    volume = scan()
    result = predict_volume(volume, binary_loaded(), cfg(planes=("xy", "xz", "yz"), slab_slices=4,
                                                         probabilities=True))
    np.testing.assert_array_equal(result.labels.array, region_labels())
    background, foreground = (p.array.astype(int) for p in result.probabilities)
    np.testing.assert_allclose(foreground, foreground_probability(volume), atol=1)
    assert np.abs(background + foreground - 255).max() <= 1


def test_binary_model_on_two_devices_and_two_ranks(tmp_path):
    volume = Volume(scan(), voxel_size=0.02, name="scan")
    two = predict_volume(volume, binary_loaded(), cfg(devices=("cpu", "cpu"), slab_slices=2))
    np.testing.assert_array_equal(two.labels.array, region_labels())
    output = tmp_path / "ranked.h5"
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(predict_volume, volume, binary_loaded(), cfg(slab_slices=2, probabilities=True),
                            output=output, ranks=Ranks(r, 2)) for r in (1, 0)]
        [run.result(timeout=300) for run in runs]
    np.testing.assert_array_equal(load_volume(output).array, region_labels())
    foreground = load_volume(tmp_path / "ranked_prob_bone.h5").array.astype(int)
    np.testing.assert_allclose(foreground, foreground_probability(volume.array), atol=1)


def test_binary_model_file_to_file(tmp_path):
    source = save_volume(Volume(scan(), voxel_size=0.02, name="scan"), tmp_path / "scan.tif")
    output = tmp_path / "labels.h5"
    with open_volume(source) as volume:
        result = predict_volume(volume, binary_loaded(), cfg(probabilities=True), output=output)
    assert [p.name for p in result.probability_outputs] == ["labels_prob_background.h5", "labels_prob_bone.h5"]
    labels = load_volume(output)
    np.testing.assert_array_equal(labels.array, region_labels())
    assert labels.class_names == ("background", "bone")
    foreground = load_volume(tmp_path / "labels_prob_bone.h5").array.astype(int)
    np.testing.assert_array_equal(foreground >= 128, labels.array == 1)


TINY = dict(encoder_depth=3, decoder_channels=(16, 8, 4))


def binary_model_file(path, bias: float, class_names=()):
    """A tiny smp U-Net with classes=1 whose logit is ``bias`` everywhere (its head's weights are 0)."""
    torch.manual_seed(0)
    module = build_model("unet", "resnet18", in_channels=1, num_classes=1, **TINY).eval()
    with torch.no_grad():
        module.segmentation_head[0].weight.zero_()
        module.segmentation_head[0].bias.fill_(bias)
    meta = ModelMetadata("unet", "resnet18", 1, 1, 32, class_names=class_names, arch_options=TINY)
    return save_model(path, module, meta)


@pytest.mark.parametrize("bias", [3.0, -3.0])
def test_cli_predicts_with_a_binary_model_file(tmp_path, bias):
    model = binary_model_file(tmp_path / "binary.safetensors", bias)
    assert load_model(model).metadata.class_names == ("background", "foreground")
    source = save_volume(Volume(scan(), voxel_size=0.02, name="scan"), tmp_path / "scan.tif")
    output = tmp_path / "labels.tif"
    assert main(["predict", "--model", str(model), "--input", str(source), "--output", str(output),
                 "--backend", "torch", "--probabilities"]) == 0
    labels = load_volume(output).array
    assert (labels == (1 if bias > 0 else 0)).all()
    foreground = load_volume(tmp_path / "labels_prob_foreground.tif").array
    assert (foreground == round(255 / (1 + np.exp(-bias)))).all()
    assert (tmp_path / "labels_prob_background.tif").is_file()


@pytest.mark.parametrize("given,expected", [
    ((), ("background", "foreground")), (("air", "bone"), ("air", "bone")), (("bone",), ("background", "bone")),
    (("class_0",), ("background", "foreground"))])
def test_binary_metadata_names_two_labels(given, expected):
    meta = ModelMetadata("unet", "resnet18", 1, 1, 32, class_names=given)
    assert (meta.num_labels, meta.class_names) == (2, expected)
    assert ModelMetadata.from_json(meta.to_json()).class_names == expected


def test_binary_metadata_refuses_three_names_and_multiclass_keeps_one_per_class():
    with pytest.raises(ModelError, match="binary model .* give two names"):
        ModelMetadata("unet", "resnet18", 1, 1, 32, class_names=("a", "b", "c"))
    with pytest.raises(ModelError, match="2 name"):
        ModelMetadata("unet", "resnet18", 1, 3, 32, class_names=("a", "b"))
    meta = ModelMetadata("unet", "resnet18", 1, 3, 32)
    assert (meta.num_labels, meta.class_names) == (3, ("class_0", "class_1", "class_2"))


@pytest.mark.parametrize("value", [1, "1"])
def test_fit_refuses_one_class_and_says_to_use_two(value):
    with pytest.raises(ConfigError, match="use --num-classes 2") as caught:
        FitConfig(num_classes=value)
    assert "\n" not in str(caught.value)
    assert FitConfig(num_classes=2).num_classes == 2


def test_fit_cli_refuses_one_class(tmp_path, capsys):
    image = save_volume(Volume(scan()), tmp_path / "scan.tif")
    labels = save_volume(Volume(region_labels()), tmp_path / "labels.tif")
    assert main(["fit", "--images", str(image), "--labels", str(labels), "--output", str(tmp_path / "m.safetensors"),
                 "--num-classes", "1"]) != 0
    assert "use --num-classes 2" in capsys.readouterr().err


def test_fine_tuning_a_binary_model_file_keeps_its_labels(tmp_path):
    """A binary model file fine-tuned on 0/1 labels becomes a 2-class model whose head gives (0, logit):
    before training it labels exactly where the binary model's logit was > 0."""
    from bone_avizo.fit.network import build_network

    torch.manual_seed(1)
    binary = build_model("unet", "resnet18", in_channels=1, num_classes=1, **TINY).eval()
    path = save_model(tmp_path / "binary.safetensors", binary, ModelMetadata("unet", "resnet18", 1, 1, 32,
                                                                              arch_options=TINY))
    config = FitConfig(encoder_depth=3, decoder_channels=(16, 8, 4), patch_size=32, weights=str(path))
    net = build_network(config, num_classes=2, device=torch.device("cpu")).module.eval()
    images = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logit, two = binary(images), net(images)
    assert two.shape[1] == 2 and (two[:, 0] == 0).all()
    torch.testing.assert_close(two[:, 1:], logit)
    torch.testing.assert_close(torch.softmax(two, 1)[:, 1:], torch.sigmoid(logit))


def test_bone_checkpoint_with_one_class_imports_as_binary(tmp_path):
    from bone_avizo.models import import_bone_checkpoint
    from test_bone_checkpoints import save_bone

    module = build_model("unet", "resnet18", in_channels=1, num_classes=1)
    with torch.no_grad():
        module.segmentation_head[0].weight.zero_()
        module.segmentation_head[0].bias.fill_(2.0)
    pth = save_bone(tmp_path / "binary.pth", module, num_classes=1, patch_size=32, classes=["trabecular"])
    model = import_bone_checkpoint(pth, tmp_path / "binary.safetensors")
    loaded = load_model(model)
    assert (loaded.metadata.num_classes, loaded.metadata.class_names) == (1, ("background", "trabecular"))
    labels = predict_volume(scan()[:3], loaded, cfg()).labels
    assert (labels.array == 1).all() and labels.class_names == ("background", "trabecular")


def test_faces_describe_a_binary_model(tmp_path):
    from bone_avizo.models.cache import describe_model

    loaded = load_model(binary_model_file(tmp_path / "binary.safetensors", 1.0, class_names=("air", "bone")))
    assert describe_model(loaded).splitlines()[1] == "binary (one sigmoid output), 2 labels: air, bone"


def test_avizo_dlpred_makes_a_two_material_label_field_from_a_binary_model(tmp_path):
    import fake_hx
    from test_avizo_modules import add_field, dlpred_module, errors_and_warnings, make_scan

    world = fake_hx.HxWorld()
    field = add_field(world, make_scan(), name="scan.am")
    module = dlpred_module(world, field, binary_model_file(tmp_path / "binary.safetensors", 3.0, ("air", "bone")))
    module.ports.probabilities.toggles[0].checked = True
    module.do_it.press()
    assert errors_and_warnings(world) == []
    labels = world.hx_project.get("scan.labels")
    assert isinstance(labels, fake_hx.HxUniformLabelField3) and (labels.get_array() == 1).all()
    assert list(labels.parameters["Materials"]) == ["air", "bone"]
    foreground = world.hx_project.get("scan.prob_bone").get_array().astype(int)
    background = world.hx_project.get("scan.prob_air").get_array().astype(int)
    assert (foreground == round(255 / (1 + np.exp(-3.0)))).all() and (background + foreground == 255).all()


def test_studies_score_a_binary_model_on_two_labels(tmp_path):
    from bone_avizo.data.scans import ScanSpec
    from bone_avizo.studies.records import MODEL_FILE
    from bone_avizo.studies.scoring import score_task

    binary_model_file(tmp_path / MODEL_FILE, 3.0)
    image = save_volume(Volume(scan(), voxel_size=0.02), tmp_path / "scan.npy")
    labels = save_volume(Volume(region_labels(), voxel_size=0.02), tmp_path / "labels.npy")
    scores = score_task(tmp_path, [ScanSpec(image, labels, name="scan")], cfg())
    assert scores["class_names"] == ["background", "foreground"]
    foreground = int(region_labels().sum())
    assert scores["scans"][0]["confusion"] == [[0, region_labels().size - foreground], [0, foreground]]


def test_exported_onnx_binary_model_predicts_as_its_model_file(tmp_path):
    pytest.importorskip("onnxruntime")
    model = binary_model_file(tmp_path / "binary.safetensors", 3.0, class_names=("bone",))
    onnx = tmp_path / "binary.onnx"
    assert main(["export", "--model", str(model), "--output", str(onnx)]) == 0
    loaded = load_model(onnx)
    assert loaded.metadata.class_names == ("background", "bone")
    result = predict_volume(scan()[:3], loaded, cfg(backend="onnxruntime", probabilities=True))
    assert (result.labels.array == 1).all() and len(result.probabilities) == 2
