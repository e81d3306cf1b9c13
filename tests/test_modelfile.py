"""Model metadata, the safetensors model file, BONe checkpoint import and the ``info`` command."""
from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

from bone_avizo.errors import InputFileError, ModelError, OutputExistsError
from bone_avizo.models import (ModelMetadata, build_model, import_bone_checkpoint, load_model, model_summary,
                               read_metadata, save_model)
from bone_avizo.models.metadata import canonical_normalization
from bone_avizo.standalone.__main__ import main

SMALL = {"decoder_channels": [32, 16, 8, 8, 8]}


def tiny_metadata(**changes) -> ModelMetadata:
    values = dict(arch="unet", encoder="mobilenet_v2", in_channels=1, num_classes=3, patch_size=64,
                  class_names=("background", "bone", "pores"), arch_options=SMALL,
                  training={"train_scans": ["a", "b"], "val_scans": ["c"], "epochs": 2, "lr": 1e-3,
                            "best_val_score": 0.5, "history": [{"epoch": 1, "loss": float("nan")}]})
    values.update(changes)
    return ModelMetadata(**values)


def tiny_model(meta: ModelMetadata | None = None, seed: int = 0) -> torch.nn.Module:
    meta = meta or tiny_metadata()
    torch.manual_seed(seed)
    return build_model(meta.arch, meta.encoder, in_channels=meta.in_channels, num_classes=meta.num_classes,
                       **meta.arch_options).eval()


def outputs(module: torch.nn.Module, channels: int = 1) -> torch.Tensor:
    torch.manual_seed(7)
    with torch.no_grad():
        return module.eval()(torch.randn(2, channels, 64, 96))


@pytest.fixture
def saved(tmp_path):
    meta = tiny_metadata()
    model = tiny_model(meta)
    path = save_model(tmp_path / "m.safetensors", model, meta)
    return path, model, meta


# -- metadata ---------------------------------------------------------------------------------
def test_metadata_json_round_trip_and_cleaning():
    meta = tiny_metadata(planes=["xy", "XZ"], training={"x": np.float64(0.25), "n": np.arange(3)})
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta and hash(again) == hash(meta)
    assert again.planes == ("xy", "xz") and again.training == {"x": 0.25, "n": [0, 1, 2]}
    assert tiny_metadata().training["history"][0]["loss"] is None  # NaN is not JSON


def test_metadata_defaults_class_names():
    assert ModelMetadata("Unet", "resnet18", 1, 2, 256).class_names == ("class_0", "class_1")


@pytest.mark.parametrize("spelling, expected", [("Z-score", "zscore"), ("zscore", "zscore"),
                                                ("min_max", "minmax"), ("MinMax", "minmax")])
def test_normalisation_spellings(spelling, expected):
    assert canonical_normalization(spelling) == expected


@pytest.mark.parametrize("changes, key", [
    (dict(normalization="histogram"), "normalization"), (dict(class_names=("a", "b")), "class_names"),
    (dict(context_slices=4, in_channels=4), "context_slices"), (dict(context_slices=3), "in_channels"),
    (dict(planes=("xy", "ab")), "planes"), (dict(patch_size=0), "patch_size"), (dict(arch="nonet"), "arch"),
    (dict(normalization_stats="global"), "normalization_stats"), (dict(training={"f": object()}), "training.f")])
def test_metadata_validation_names_the_key(changes, key):
    with pytest.raises(ModelError, match=f"'{key}'"):
        tiny_metadata(**changes)


def test_metadata_from_json_rejects_missing_unknown_and_newer():
    data = tiny_metadata().to_dict()
    with pytest.raises(ModelError, match="lacks required key.*num_classes"):
        ModelMetadata.from_dict({k: v for k, v in data.items() if k != "num_classes"})
    with pytest.raises(ModelError, match="unknown key.*colour"):
        ModelMetadata.from_dict({**data, "colour": "red"})
    with pytest.raises(ModelError, match="metadata_version"):
        ModelMetadata.from_dict({**data, "metadata_version": 99})
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelMetadata.from_json("{not json")


# -- save / load ------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_outputs(saved):
    path, model, meta = saved
    loaded = load_model(path)
    assert loaded.metadata == meta and loaded.format == "bone_avizo"
    assert not loaded.module.training
    torch.testing.assert_close(outputs(loaded.module), outputs(model), rtol=0, atol=0)
    assert read_metadata(path) == meta
    assert not list(path.parent.glob("*.partial"))


def test_header_holds_metadata_json(saved):
    path, _, meta = saved
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8:8 + length])["__metadata__"]
    assert header["format_version"] == "1"
    assert json.loads(header["bone_avizo"])["encoder"] == meta.encoder


def test_fp16_weights_are_half_size_and_load_as_float32(tmp_path, saved):
    path, model, meta = saved
    half = save_model(tmp_path / "half.safetensors", model, meta, dtype="fp16")
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded = load_model(half)
    assert loaded.weights_dtype == "float16"
    assert next(loaded.module.parameters()).dtype == torch.float32
    torch.testing.assert_close(outputs(loaded.module), outputs(model), rtol=0.02, atol=0.02)


def test_existing_output_is_refused_unless_overwrite(saved):
    path, model, meta = saved
    with pytest.raises(OutputExistsError):
        save_model(path, model, meta)
    save_model(path, model, meta, overwrite=True)


def test_save_refuses_metadata_that_does_not_match_the_network(tmp_path, saved):
    _, model, meta = saved
    target = tmp_path / "bad.safetensors"
    with pytest.raises(ModelError, match="shape mismatch.*segmentation_head"):
        save_model(target, model, meta.with_(num_classes=2, class_names=()))
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_load_refuses_weights_that_do_not_fit_the_architecture(tmp_path, saved):
    _, model, meta = saved
    path = save_model(tmp_path / "bad.safetensors", model, meta.with_(encoder="resnet18"), check=False)
    with pytest.raises(ModelError, match="do not fit.*missing \\(\\d+\\): encoder\\."):
        load_model(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputFileError):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [4, 100, -1000])
def test_truncated_file_is_a_model_error(tmp_path, saved, cut):
    data = saved[0].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelError):
        load_model(bad)


def test_huge_header_and_garbage_are_refused(tmp_path):
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ModelError, match="header"):
        load_model(huge)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello, this is not a model")
    with pytest.raises(ModelError, match="not a model file"):
        load_model(garbage)


def test_header_inconsistent_with_tensors_is_refused(tmp_path, saved):
    data = saved[0].read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["shape"])
    header[name]["shape"] = [s + 1 for s in header[name]["shape"]]
    text = json.dumps(header).encode()
    bad = tmp_path / "inconsistent.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    with pytest.raises(ModelError, match="damaged"):
        load_model(bad)


def test_plain_safetensors_and_metadata_without_required_keys_are_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelError, match="without bone_avizo metadata"):
        load_model(plain)
    partial = tmp_path / "partial.safetensors"
    save_file({"w": torch.zeros(2)}, str(partial), metadata={"bone_avizo": json.dumps({"arch": "unet"})})
    with pytest.raises(ModelError, match="lacks required key"):
        load_model(partial)


def test_model_summary(saved):
    summary = model_summary(load_model(saved[0]))
    assert summary["arch"] == "unet" and summary["class_names"] == ["background", "bone", "pores"]
    assert summary["train_scans"] == ["a", "b"] and summary["val_scans"] == ["c"]
    assert summary["parameters"] == sum(p.numel() for p in saved[1].parameters())


def test_input_multiple_is_the_encoder_output_stride():
    from bone_avizo.models.modelfile import input_multiple

    assert input_multiple(build_model("fpn", "mobilenet_v2", in_channels=1, num_classes=2)) == 32
    assert input_multiple(build_model("deeplabv3plus", "mobilenet_v2", in_channels=1, num_classes=2)) == 16


# -- BONe checkpoints ---------------------------------------------------------------------------
BONE_METADATA = {"num_classes": 3, "patch_size": 64, "in_channels": 1, "model_arch": "Unet",
                 "backbone": "resnet18",
                 "normalization": "zscore", "augmentations": {"hflip": 0.166}, "learning_rate": 0.001,
                 "criterion": "Jaccard", "best_val_score": np.float64(0.93), "best_epoch": 7, "flops_G": 10.6,
                 "param_count": 14322227, "peak_ram_GB": 3.5, "peak_vram_GB": 5.1, "wall_time_sec": 1234.5}


@pytest.fixture
def bone_pth(tmp_path):
    """A BONe-style checkpoint of a tiny Unet(resnet18) saved from DistributedDataParallel (module. keys)."""
    torch.manual_seed(3)
    model = build_model("Unet", "resnet18", in_channels=1, num_classes=3).eval()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "bone.pth"
    torch.save({"model_state": state, "metadata": BONE_METADATA}, path)
    return path, model


def test_bone_checkpoint_loads_with_identical_outputs(bone_pth):
    path, model = bone_pth
    loaded = load_model(path)
    assert loaded.format == "bone_pth"
    meta = loaded.metadata
    assert (meta.arch, meta.encoder, meta.num_classes, meta.patch_size) == ("unet", "resnet18", 3, 64)
    assert meta.normalization == "zscore" and meta.normalization_stats == "per_scan_nonzero"
    assert meta.training["lr"] == 0.001 and meta.training["best_val_score"] == pytest.approx(0.93)
    assert meta.training["bone_metadata"]["criterion"] == "Jaccard"
    torch.testing.assert_close(outputs(loaded.module), outputs(model), rtol=0, atol=0)


def test_bone_checkpoint_converts_to_model_file(tmp_path, bone_pth):
    path, model = bone_pth
    out = import_bone_checkpoint(path, tmp_path / "bp.safetensors", class_names=("bg", "bone", "pores"))
    loaded = load_model(out)
    assert loaded.metadata.class_names == ("bg", "bone", "pores")
    assert loaded.metadata.extra["imported_file"] == "bone.pth"
    torch.testing.assert_close(outputs(loaded.module), outputs(model), rtol=0, atol=0)


def test_bone_2p5d_checkpoint_maps_in_channels_to_context_slices(tmp_path):
    meta = {**BONE_METADATA, "in_channels": 5, "backbone": "mobilenet_v2", "normalization": "minmax"}
    model = build_model("unet", "mobilenet_v2", in_channels=5, num_classes=3)
    path = tmp_path / "b25.pth"
    torch.save({"model_state": model.state_dict(), "metadata": meta}, path)
    loaded = load_model(path)
    assert loaded.metadata.context_slices == 5 and loaded.metadata.in_channels == 5
    assert loaded.metadata.normalization == "minmax"
    assert read_metadata(path) == loaded.metadata  # the same, without building the network


def test_bare_state_dict_needs_the_architecture(tmp_path):
    model = tiny_model()
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    for read in (load_model, read_metadata):
        with pytest.raises(ModelError, match="bare state dict.*architecture, encoder"):
            read(path)
    overrides = {"model_arch": "Unet", "backbone": "mobilenet_v2", "num_classes": 3, "in_channels": 1,
                 "patch_size": 64}
    with pytest.raises(ModelError, match="do not fit"):  # decoder channels differ from smp's default
        import_bone_checkpoint(path, tmp_path / "x.safetensors", overrides=overrides)


class _Payload:
    """Unpickling this creates ``target``: what a malicious checkpoint could do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    proof = tmp_path / "proof.txt"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()  # the payload is live when unpickled normally
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"model_state": {}, "metadata": {"x": _Payload(target)}}, path)
    with pytest.raises(ModelError, match="refused.*arbitrary code"):
        load_model(path)
    assert not target.exists()


def test_damaged_checkpoint_is_a_model_error(tmp_path, bone_pth):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(bone_pth[0].read_bytes()[:5000])
    with pytest.raises(ModelError):
        load_model(bad)


# -- info command ---------------------------------------------------------------------------------
def test_info_prints_model_metadata(saved, capsys):
    assert main(["info", str(saved[0])]) == 0
    out = capsys.readouterr().out
    assert "arch: unet" in out and "encoder: mobilenet_v2" in out and "train_scans: a, b" in out
    assert "class_names: background, bone, pores" in out and "normalization: zscore" in out


def test_info_json(saved, capsys):
    assert main(["info", "--json", str(saved[0])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 3 and info["patch_size"] == 64 and info["val_scans"] == ["c"]


def test_info_volume(tmp_path, capsys):
    path = tmp_path / "vol.npy"
    np.save(path, np.zeros((7, 13, 29), np.uint16))
    assert main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "volume" and info["shape_zyx"] == [7, 13, 29] and info["dtype"] == "uint16"


def test_info_lists_encoders_and_architectures(capsys):
    assert main(["info", "--encoders", "--architectures", "--json"]) == 0
    lists = json.loads(capsys.readouterr().out)
    assert "resnet18" in lists["encoders"] and "unet" in lists["architectures"]


@pytest.mark.parametrize("argv", [["info", "missing.safetensors"], ["info"]])
def test_info_bad_input_exits_2_with_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bone-avizo info: error:") and "\n" not in err


def test_info_damaged_model_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"12345678{broken")
    assert main(["info", str(bad)]) == 2
    assert "damaged" in capsys.readouterr().err
