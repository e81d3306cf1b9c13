"""Model files are data, not code.

tests/test_modelfile.py already proves: a ``.pth`` whose metadata holds a payload is refused and the
payload never runs (``test_malicious_pickle_is_refused_and_never_runs``); a header length of 10^12
bytes, garbage, a truncated file and a tensor shape that disagrees with the data are ModelErrors.
Here: payloads in every place a checkpoint can hold one, by every way a file reaches the loader
(load_model, BONe import, ``info``, ``export``, fit's ``--weights`` and ``--resume``); the header bound
at its edge; offsets and dtypes that disagree with the tensors; and any damage to the header bytes
is a BoneAvizoError, never another exception.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bone_avizo.errors import BoneAvizoError, CorruptFileError, ModelError
from bone_avizo.fit import FitConfig, checkpoint_path, fit_model
from bone_avizo.models import import_bone_checkpoint, load_model, read_metadata
from bone_avizo.models.modelfile import MAX_HEADER_BYTES, detect_model_format

from .helpers import FIT_OPTIONS, run_cli


# ---------------------------------------------------------------------------------------------
# payloads: each would create ``target`` if it were ever unpickled
class OpensFile:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class RunsShell:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


class ExecsPython:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').close()",))


PAYLOADS = {"open": OpensFile, "os.system": RunsShell, "exec": ExecsPython}


def _state() -> dict:
    return {"encoder.conv1.weight": torch.zeros(2, 1, 3, 3)}


def _bone_metadata() -> dict:
    return {"model_arch": "Unet", "backbone": "resnet18", "num_classes": 3, "in_channels": 1, "patch_size": 32}


PLACES = {
    "in the metadata": lambda p: {"model_state": _state(), "metadata": {**_bone_metadata(), "note": p}},
    "as a state-dict value": lambda p: {"model_state": {**_state(), "evil": p}, "metadata": _bone_metadata()},
    "as the whole file": lambda p: p,
    "as a state-dict key's container": lambda p: {"model_state": _state(), "metadata": _bone_metadata(),
                                                   "extra": [1, 2, {"x": p}]},
}


def write_checkpoint(path: Path, obj, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_each_payload_is_live(payload, tmp_path):
    """The control: unpickled normally, each payload does create its file."""
    target = tmp_path / "proof"
    result = pickle.loads(pickle.dumps(PAYLOADS[payload](target)))
    if hasattr(result, "close"):
        result.close()
    assert target.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_checkpoint_payloads_are_refused_without_running(payload, place, legacy, tmp_path):
    target = tmp_path / "pwned"
    path = write_checkpoint(tmp_path / "evil.pth", PLACES[place](PAYLOADS[payload](target)), legacy=legacy)
    with pytest.raises(ModelError, match="refused to load .*arbitrary code"):
        load_model(path)
    with pytest.raises(ModelError, match="refused"):
        import_bone_checkpoint(path, tmp_path / "converted.safetensors")
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]


def test_plain_pickle_file_with_a_payload_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(RunsShell(target), protocol=2))
    with pytest.raises(ModelError, match="refused"):
        load_model(path)
    assert not target.exists()


@pytest.mark.parametrize("argv", [
    ["info", "{model}"],
    ["export", "--model", "{model}", "--output", "{dir}/out.safetensors"],
    ["export", "--model", "{model}", "--output", "{dir}/out.onnx"],
    ["predict", "--model", "{model}", "--input", "{dir}/scan.npy", "--output", "{dir}/labels.tif"],
])
def test_every_command_refuses_the_payload(argv, tmp_path):
    import numpy as np

    target = tmp_path / "pwned"
    model = write_checkpoint(tmp_path / "evil.pth", PLACES["in the metadata"](RunsShell(target)))
    np.save(tmp_path / "scan.npy", np.ones((3, 32, 32), np.uint16))
    code, _, err = run_cli([a.format(model=model, dir=tmp_path) for a in argv])
    assert code == 2 and "refused to load" in err and "Traceback" not in err
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth", "scan.npy"]


def test_fit_refuses_payloads_in_weights_and_checkpoints(phantom_pairs, tmp_path):
    target = tmp_path / "pwned"
    evil = write_checkpoint(tmp_path / "evil.pth", PLACES["in the metadata"](OpensFile(target)))
    config = FitConfig(**FIT_OPTIONS, epochs=1, weights=str(evil))
    with pytest.raises(ModelError, match="refused"):
        fit_model(phantom_pairs, config, output=tmp_path / "m.safetensors")
    output = tmp_path / "r.safetensors"
    write_checkpoint(checkpoint_path(output), {"model": _state(), "optimizer": {}, "scheduler": {}, "epoch": 1,
                                               "history": [], "config": {}, "rng": OpensFile(target)})
    with pytest.raises(CorruptFileError, match="cannot be read"):
        fit_model(phantom_pairs, FitConfig(**FIT_OPTIONS, epochs=1), output=output, resume=True)
    assert not target.exists()


# ---------------------------------------------------------------------------------------------
# safetensors headers
def _parts(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def _write(path: Path, header: dict, body: bytes, *, pad: int = 0) -> Path:
    text = json.dumps(header).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)
    return path


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    return Path(shutil.copyfile(tiny_model, tmp_path / "model.safetensors"))


@pytest.mark.parametrize("excess", [1, 2**40])
def test_a_header_length_above_the_bound_is_refused_before_reading(model_copy, excess):
    header, body = _parts(model_copy)
    data = model_copy.read_bytes()
    model_copy.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + excess) + data[8:])
    for load in (load_model, read_metadata):
        with pytest.raises(ModelError, match=f"limit {MAX_HEADER_BYTES}"):
            load(model_copy)


def test_a_header_length_within_the_bound_but_beyond_the_file_is_truncation(model_copy):
    data = model_copy.read_bytes()
    model_copy.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES) + data[8:])
    with pytest.raises(ModelError, match="is truncated: its header needs"):
        load_model(model_copy)


def _first_tensor(header: dict) -> str:
    return next(k for k, v in header.items() if k != "__metadata__" and v["shape"])


def _shift_offsets(header, body):
    name = _first_tensor(header)
    start, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [start + 4, end + 4]
    return header, body


def _overlap(header, body):
    names = [k for k in header if k != "__metadata__"]
    a, b = names[0], names[1]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    header[b]["shape"], header[b]["dtype"] = header[a]["shape"], header[a]["dtype"]
    return header, body


def _dtype(header, body):
    header[_first_tensor(header)]["dtype"] = "F64"
    return header, body


def _unknown_dtype(header, body):
    header[_first_tensor(header)]["dtype"] = "Q7"
    return header, body


def _beyond_the_data(header, body):
    name = _first_tensor(header)
    start, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [start, end + len(body)]
    return header, body


def _negative_offset(header, body):
    header[_first_tensor(header)]["data_offsets"] = [-8, 0]
    return header, body


def _not_a_mapping(header, body):
    return [header], body


def _metadata_not_text(header, body):
    header["__metadata__"]["bone_avizo"] = {"arch": "unet"}
    return header, body


INCONSISTENT = {"offsets shifted": _shift_offsets, "two tensors on the same bytes": _overlap,
                "dtype wider than the data": _dtype, "unknown dtype": _unknown_dtype,
                "offsets beyond the data": _beyond_the_data, "negative offset": _negative_offset,
                "header is a list": _not_a_mapping, "metadata value not text": _metadata_not_text}


@pytest.mark.parametrize("damage", sorted(INCONSISTENT))
def test_headers_inconsistent_with_the_tensors_are_refused(model_copy, damage):
    header, body = INCONSISTENT[damage](*_parts(model_copy))
    _write(model_copy, header, body)
    with pytest.raises(ModelError):
        load_model(model_copy)


def test_a_header_length_whose_low_byte_is_a_pickle_opcode_still_loads(model_copy):
    """One model file in 256 has a header length whose first byte is 0x80, a pickle's first byte; it
    must load as safetensors (it used to be read as a .pth and refused)."""
    header, body = _parts(model_copy)
    length = len(json.dumps(header).encode())
    pad = (0x80 - length) % 256
    path = _write(model_copy, header, body, pad=pad)
    assert path.read_bytes()[0] == 0x80
    assert detect_model_format(path) == "bone_avizo"
    assert load_model(path).metadata.num_classes == 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_the_header_is_a_bone_avizo_error(tiny_model, tmp_path_factory, data):
    raw = bytearray(tiny_model.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        position = data.draw(st.integers(0, 8 + length - 1), label="position")
        raw[position] = data.draw(st.integers(0, 255), label="byte")
    path = tmp_path_factory.mktemp("damaged") / "model.safetensors"
    path.write_bytes(bytes(raw))
    try:
        load_model(path)
    except BoneAvizoError:
        pass

