"""ONNX export: onnxruntime matches torch, dynamic axes, metadata, atomic writes, the ``export`` command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bone_avizo.errors import ConfigError, OutputExistsError
from bone_avizo.models import ModelMetadata, build_model, export_onnx, load_model, save_model
from bone_avizo.models.onnx_export import read_onnx_metadata
from bone_avizo.standalone.__main__ import main

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    meta = ModelMetadata("Unet", "mobilenet_v2", 1, 3, 64, class_names=("bg", "bone", "pores"),
                         arch_options={"decoder_channels": [32, 16, 8, 8, 8]}, training={"train_scans": ["s1"]})
    torch.manual_seed(0)
    model = build_model(meta.arch, meta.encoder, in_channels=1, num_classes=3, **meta.arch_options)
    _randomise_batchnorm(model)
    return save_model(tmp_path_factory.mktemp("onnx") / "m.safetensors", model, meta)


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode normalisation is exercised by the comparison."""
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnxruntime_matches_torch_at_two_sizes(tmp_path, model_file):
    loaded = load_model(model_file)
    path = export_onnx(loaded, tmp_path / "m.onnx", patch_size=64)
    session = _session(path)
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 64, 64), (2, 1, 96, 128)]:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            expected = loaded.module(torch.from_numpy(x)).numpy()
        got = session.run(None, {"input": x})[0]
        assert got.shape == (shape[0], 3, shape[2], shape[3])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert not list(tmp_path.glob("*.partial"))


def test_the_cpu_backend_writes_outputs_into_pooled_buffers_without_aliasing(tmp_path, model_file):
    """After a first run per shape, outputs go straight into pooled arrays: outputs still held by the caller
    are never written over, and a buffer comes back once its last view is gone."""
    from bone_avizo.predict.backends import OnnxBackend
    loaded = load_model(model_file)
    backend = OnnxBackend(export_onnx(loaded, tmp_path / "m.onnx", patch_size=64), device=torch.device("cpu"))
    inputs = [torch.randn(2, 1, 64, 96, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    held = [backend(x) for x in inputs]  # all alive at once
    with torch.no_grad():
        for x, out in zip(inputs, held):
            np.testing.assert_allclose(out.numpy(), loaded.module(x).numpy(), atol=1e-4, rtol=0)
    assert len({out.data_ptr() for out in held}) == len(held)
    released = {out.data_ptr() for out in held[1:]}  # the first run of a shape returns onnxruntime's own array
    del held, out
    assert backend(inputs[0]).data_ptr() in released


def test_pooled_outputs_keep_the_networks_output_type(tmp_path):
    """A network whose output is float16 (an ONNX file made elsewhere) gives float16 through the pooled
    outputs too."""
    from onnx import TensorProto, helper
    from bone_avizo.predict.backends import OnnxBackend
    graph = helper.make_graph([helper.make_node("Cast", ["input"], ["logits"], to=TensorProto.FLOAT16)], "half",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 1, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["b", 1, "h", "w"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "half.onnx")
    backend = OnnxBackend(tmp_path / "half.onnx", device=torch.device("cpu"))
    x = torch.linspace(-2, 2, 2 * 8 * 8).reshape(2, 1, 8, 8)
    first, second = backend(x), backend(x)
    assert first.dtype == second.dtype == torch.float16
    assert torch.equal(second, x.half())


def test_metadata_is_stored_in_metadata_props(tmp_path, model_file):
    loaded = load_model(model_file)
    path = export_onnx(loaded, tmp_path / "m.onnx", patch_size=64, opset=13)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["bone_avizo"])["class_names"] == ["bg", "bone", "pores"]
    assert props["format_version"] == "1"
    assert read_onnx_metadata(path) == loaded.metadata
    assert proto.opset_import[0].version == 13


def test_bare_module_export_without_metadata(tmp_path):
    model = build_model("fpn", "mobilenet_v2", in_channels=3, num_classes=2).eval()
    path = export_onnx(model, tmp_path / "bare.onnx", patch_size=64)
    assert read_onnx_metadata(path) is None
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert _session(path).run(None, {"input": x})[0].shape == (1, 2, 64, 64)


def test_existing_output_and_bad_opset_are_refused(tmp_path, model_file):
    loaded = load_model(model_file)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        export_onnx(loaded, target)
    assert target.read_bytes() == b"old"
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(loaded, tmp_path / "other.onnx", opset=3)


def test_export_command(tmp_path, model_file, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(model_file), "--output", str(out), "--patch-size", "64"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == "unet"
    assert main(["export", "--model", str(model_file), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_command_converts_a_bone_checkpoint(tmp_path, capsys):
    model = build_model("Unet", "mobilenet_v2", in_channels=1, num_classes=2)
    pth = tmp_path / "bone.pth"
    torch.save({"model_state": model.state_dict(), "metadata": {
        "model_arch": "Unet", "backbone": "mobilenet_v2", "num_classes": 2, "in_channels": 1, "patch_size": 64,
        "normalization": "minmax"}}, pth)
    out = tmp_path / "bone.safetensors"
    assert main(["export", "--model", str(pth), "--output", str(out), "--class-names", "bg", "bone"]) == 0
    assert load_model(out).metadata.class_names == ("bg", "bone")


def test_export_command_resaves_a_model_file_in_fp16_with_new_class_names(tmp_path, model_file):
    out = tmp_path / "half.safetensors"
    assert main(["export", "--model", str(model_file), "--output", str(out), "--fp16",
                 "--class-names", "a", "b", "c"]) == 0
    loaded = load_model(out)
    assert loaded.weights_dtype == "float16" and loaded.metadata.class_names == ("a", "b", "c")


@pytest.mark.parametrize("argv_tail, message", [
    (["--model", "missing.safetensors", "--output", "x.onnx"], "does not exist"),
    (["--output", "x.txt"], ".onnx"),
])
def test_export_command_bad_input_exits_2(tmp_path, model_file, monkeypatch, capsys, argv_tail, message):
    monkeypatch.chdir(tmp_path)
    argv = ["export", *argv_tail] if "--model" in argv_tail else ["export", "--model", str(model_file), *argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_an_exported_onnx_file_is_a_model_for_predict(tmp_path, model_file, monkeypatch):
    """`predict --model bone.onnx` runs the file itself (its metadata says how); the torch backend too."""
    from bone_avizo.config import PredictConfig
    from bone_avizo.predict import predict_volume

    monkeypatch.setenv("BONE_AVIZO_CACHE", str(tmp_path / "cache"))
    path = export_onnx(load_model(model_file), tmp_path / "bone.onnx", patch_size=64)
    loaded = load_model(path)
    assert loaded.format == "onnx" and loaded.metadata == load_model(model_file).metadata
    volume = np.random.default_rng(1).integers(1, 200, (3, 64, 96)).astype(np.uint8)
    options = dict(tile_size=64, device="cpu", threads=1)
    reference = predict_volume(volume, load_model(model_file), PredictConfig(backend="torch", **options)).labels.array
    for backend in ("onnxruntime", "torch"):
        labels = predict_volume(volume, loaded, PredictConfig(backend=backend, **options)).labels.array
        assert (labels == reference).mean() >= 0.999, backend
    assert not (tmp_path / "cache").exists()  # the file runs as it is: nothing exported, nothing cached
    assert main(["predict", "--model", str(path), "--input", str(_npy(tmp_path, volume)), "--output",
                 str(tmp_path / "labels.npy"), "--tile-size", "64", "--threads", "1"]) == 0
    assert (np.load(tmp_path / "labels.npy") == reference).mean() >= 0.999


def _npy(tmp_path, volume):
    np.save(tmp_path / "scan.npy", volume)
    return tmp_path / "scan.npy"


def test_an_onnx_file_cannot_be_fine_tuned_or_exported_again(tmp_path, model_file, capsys):
    path = export_onnx(load_model(model_file), tmp_path / "bone.onnx", patch_size=64)
    assert main(["export", "--model", str(path), "--output", str(tmp_path / "again.onnx")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{path} is an exported ONNX file, which predicts but cannot be trained or exported again; give the "
        ".safetensors model file it was exported from")
