"""DLPred from files: the CLI contract, real model files (ours and BONe .pth), resume, bad input."""
import json
import os

import numpy as np
import pytest
import torch

from bone_avizo.config import PredictConfig
from bone_avizo.errors import OutputExistsError, OutputWriteError
from bone_avizo.io import load_volume, open_volume, save_volume
from bone_avizo.models import ModelMetadata, build_model, load_model, save_model
from bone_avizo.predict import predict_volume
from bone_avizo.predict.engine import PREDICT_UNITS, STATS_UNITS
from bone_avizo.standalone.__main__ import main
from bone_avizo.volume import Volume
from fakes import fake_loaded, pointwise_reference

TINY = dict(encoder_depth=3, decoder_channels=(16, 8, 4))


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=1, num_classes=3, **TINY).eval()
    meta = ModelMetadata(arch="unet", encoder="resnet18", in_channels=1, num_classes=3, patch_size=32,
                         class_names=("background", "bone", "pores"), arch_options=TINY)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, model, meta)
    return path


@pytest.fixture
def scan_file(tmp_path):
    rng = np.random.default_rng(0)
    volume = Volume(rng.integers(1, 3000, (6, 40, 52)).astype(np.uint16), voxel_size=(0.03, 0.02, 0.02),
                    name="scan")
    return save_volume(volume, tmp_path / "scan.tif"), volume


def test_cli_predict_writes_labels_and_resolved_config(tmp_path, tiny_model_file, scan_file):
    src, volume = scan_file
    out = tmp_path / "labels.h5"
    code = main(["predict", "--model", str(tiny_model_file), "--input", str(src), "--output", str(out),
                 "--backend", "torch", "--tile-size", "32", "--slab-slices", "4"])
    assert code == 0
    labels = load_volume(out)
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    assert labels.voxel_size == pytest.approx(volume.voxel_size)
    expected = predict_volume(volume, load_model(tiny_model_file),
                              PredictConfig(backend="torch", tile_size=32)).labels.array
    np.testing.assert_array_equal(labels.array, expected)
    resolved = json.loads((tmp_path / "labels.h5.config.json").read_text())
    assert resolved["options"]["tile_size"] == 32 and resolved["model"] == str(tiny_model_file)


def test_cli_refuses_existing_output_without_overwrite(tmp_path, tiny_model_file, scan_file, capsys):
    src, _ = scan_file
    out = tmp_path / "labels.tif"
    out.write_bytes(b"precious")
    args = ["predict", "--model", str(tiny_model_file), "--input", str(src), "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0]
    assert out.read_bytes() == b"precious"
    assert main(args + ["--overwrite", "--backend", "torch"]) == 0
    assert load_volume(out).dtype == np.uint8


@pytest.mark.parametrize("bad, message", [
    (["--tile-size", "50"], "tile_size"),
    (["--planes", "xw"], "planes"),
    (["--overlap", "0.95"], "overlap"),
])
def test_cli_bad_option_values(tmp_path, tiny_model_file, scan_file, bad, message, capsys):
    src, _ = scan_file
    code = main(["predict", "--model", str(tiny_model_file), "--input", str(src),
                 "--output", str(tmp_path / "o.tif")] + bad)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_cli_missing_model_and_corrupt_model(tmp_path, scan_file, capsys):
    src, _ = scan_file
    out = tmp_path / "o.tif"
    assert main(["predict", "--model", str(tmp_path / "none.safetensors"), "--input", str(src),
                 "--output", str(out)]) == 2
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["predict", "--model", str(corrupt), "--input", str(src), "--output", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob("o.tif*"))


def test_unwritable_output_folder_is_refused_before_work(tmp_path, scan_file):
    _, volume = scan_file
    with pytest.raises(OutputWriteError, match="does not exist"):
        predict_volume(volume, fake_loaded(), PredictConfig(backend="torch"), output=tmp_path / "no" / "x.h5")


def test_bone_pth_checkpoint_predicts_like_the_original(tmp_path, scan_file):
    _, volume = scan_file
    torch.manual_seed(1)
    model = build_model("Unet", "resnet18", in_channels=1, num_classes=3).eval()  # BONe's default network
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    pth = tmp_path / "bone.pth"
    torch.save({"model_state": state, "metadata": {
        "num_classes": 3, "patch_size": 32, "in_channels": 1, "model_arch": "Unet", "backbone": "resnet18",
        "normalization": "zscore"}}, pth)
    loaded = load_model(pth)
    assert loaded.format == "bone_pth"
    ours = predict_volume(volume, loaded, PredictConfig(backend="torch", tile_size=32)).labels.array
    meta = ModelMetadata(arch="unet", encoder="resnet18", in_channels=1, num_classes=3, patch_size=32)
    direct = predict_volume(volume, type(loaded)(module=model, metadata=meta, source_path=pth, format="x"),
                            PredictConfig(backend="torch", tile_size=32)).labels.array
    np.testing.assert_array_equal(ours, direct)


def test_interrupted_hdf5_prediction_resumes_bit_identical(tmp_path):
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 4000, (10, 33, 47)).astype(np.uint16)
    loaded = fake_loaded()
    cfg = PredictConfig(backend="torch", tile_size=32, slab_slices=3, resume=True)
    out = tmp_path / "labels.h5"

    stats = 10 * STATS_UNITS["cpu"]  # the statistics pass of 10 slices, in progress units

    def stop_after_two_blocks(done, total, message):
        return done >= stats + 6 * PREDICT_UNITS  # two blocks of 3 slices predicted

    with pytest.raises(Exception, match="cancelled"):
        predict_volume(volume, loaded, cfg, output=out, progress=stop_after_two_blocks)
    assert not out.exists() and (tmp_path / "labels.h5.partial").exists()
    seen = []
    predict_volume(volume, loaded, cfg, output=out, progress=lambda d, t, m: seen.append(d))
    assert out.exists() and not (tmp_path / "labels.h5.partial").exists()
    first_after_stats = next(s for s in seen if s > stats)
    assert first_after_stats - stats >= 3 * PREDICT_UNITS  # the finished slices are skipped, not predicted again
    np.testing.assert_array_equal(load_volume(out).array, pointwise_reference(volume, loaded))


def test_fused_planes_to_file_leave_no_temporary_buffer(tmp_path):
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 4000, (7, 33, 40)).astype(np.uint16)
    out = tmp_path / "labels.npy"
    predict_volume(volume, fake_loaded(), PredictConfig(backend="torch", tile_size=32,
                                                        planes=("xy", "xz", "yz"), probabilities=True),
                   output=out)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == sorted(
        ["labels.npy", "labels_prob_background.npy", "labels_prob_bone.npy", "labels_prob_pores.npy"])
    np.testing.assert_array_equal(load_volume(out).array, pointwise_reference(volume, fake_loaded()))


def test_input_is_untouched(tmp_path, scan_file, tiny_model_file):
    src, _ = scan_file
    before = (src.stat().st_mtime_ns, src.read_bytes())
    assert main(["predict", "--model", str(tiny_model_file), "--input", str(src), "--output",
                 str(tmp_path / "l.tif"), "--backend", "torch"]) == 0
    assert (src.stat().st_mtime_ns, src.read_bytes()) == before


def test_onnxruntime_backend_agrees_with_torch_and_caches_the_export(tmp_path, monkeypatch, tiny_model_file,
                                                                      scan_file):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("BONE_AVIZO_CACHE", str(tmp_path / "cache"))
    _, volume = scan_file
    loaded = load_model(tiny_model_file)
    a = predict_volume(volume, loaded, PredictConfig(backend="torch", tile_size=32)).labels.array
    b = predict_volume(volume, loaded, PredictConfig(backend="onnxruntime", tile_size=32)).labels.array
    assert (a == b).mean() >= 0.999
    exports = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exports) == 1
    stamp = exports[0].stat().st_mtime_ns
    predict_volume(volume, loaded, PredictConfig(backend="auto", tile_size=32, device="cpu"))
    assert exports[0].stat().st_mtime_ns == stamp
