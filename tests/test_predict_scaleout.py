"""Scale-out of one prediction: several devices in one process, several ranks (torchrun/SLURM)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bone_avizo.config import PredictConfig
from bone_avizo.io import load_volume, save_volume
from bone_avizo.models import ModelMetadata, build_model, save_model
from bone_avizo.predict import predict_volume
from bone_avizo.predict.distributed import owned_blocks
from bone_avizo.runtime import Ranks, ranks_from_env
from bone_avizo.volume import Volume
from fakes import fake_loaded, pointwise_reference

ROOT = Path(__file__).resolve().parents[1]


def scan(shape=(13, 40, 52), seed=4):
    return np.random.default_rng(seed).integers(1, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize("planes", [("xy",), ("xy", "yz")])
def test_two_devices_in_one_process_equal_one_device(planes):
    volume = scan()
    loaded = fake_loaded()
    one = predict_volume(volume, loaded, PredictConfig(backend="torch", tile_size=32, slab_slices=2,
                                                       planes=planes))
    two = predict_volume(volume, loaded, PredictConfig(backend="torch", tile_size=32, slab_slices=2,
                                                       planes=planes, devices=("cpu", "cpu")))
    np.testing.assert_array_equal(one.labels.array, two.labels.array)
    np.testing.assert_array_equal(two.labels.array, pointwise_reference(volume, loaded))
    assert two.device == "cpu,cpu"


def test_ranks_take_disjoint_blocks_that_cover_the_volume():
    blocks = [(i, i + 3) for i in range(0, 30, 3)]
    shares = [owned_blocks(blocks, Ranks(r, 3)) for r in range(3)]
    assert sorted(b for share in shares for b in share) == blocks
    assert not set(shares[0]) & set(shares[1])


def test_rank_variables_from_torchrun_and_slurm(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert ranks_from_env() == Ranks(0, 1, 0)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert ranks_from_env() == Ranks(5, 8, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert ranks_from_env() == Ranks(2, 4, 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scaleout")
    torch.manual_seed(0)
    options = dict(encoder_depth=3, decoder_channels=(16, 8, 4))
    model = build_model("unet", "resnet18", in_channels=1, num_classes=3, **options)
    meta = ModelMetadata(arch="unet", encoder="resnet18", in_channels=1, num_classes=3, patch_size=32,
                         arch_options=options)
    model_path = save_model(folder / "m.safetensors", model, meta)
    scan_path = save_volume(Volume(scan((10, 40, 52)), voxel_size=0.02), folder / "scan.h5")
    common = ["--model", model_path, "--input", scan_path, "--backend", "torch", "--slab-slices", "3",
              "--threads", "1"]
    single = folder / "single.h5"
    assert subprocess.run(_cli(*common, "--output", single), env=_env(), capture_output=True).returncode == 0
    return folder, common, load_volume(single).array


def _cli(*args):
    return [sys.executable, "-m", "bone_avizo.standalone", "predict", *map(str, args)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def test_two_ranks_without_rendezvous_equal_one_process(files):
    """Two processes with RANK/WORLD_SIZE (as SLURM or a scheduler would start them), file barrier."""
    folder, common, single = files
    ranked = folder / "ranked.h5"
    procs = [subprocess.Popen(_cli(*common, "--output", ranked), env=_env(RANK=str(r), WORLD_SIZE="2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in (1, 0)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-2000:] for o in outs]
    np.testing.assert_array_equal(load_volume(ranked).array, single)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("ranked")) == [
        "ranked.h5", "ranked.h5.config.json"]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_equal_one_process(files):
    folder, common, single = files
    out = folder / "torchrun.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "bone_avizo.standalone", "predict", *map(str, common), "--output", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(load_volume(out).array, single)


def test_several_ranks_refuse_fusion_and_in_memory_output(monkeypatch):
    from bone_avizo.errors import ConfigError
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="output file"):
        predict_volume(scan(), fake_loaded(), PredictConfig(backend="torch"))
    with pytest.raises(ConfigError, match="one process"):
        predict_volume(scan(), fake_loaded(), PredictConfig(backend="torch", planes=("xy", "xz")),
                       output="/tmp/never.h5")


def test_file_barrier_accepts_only_this_jobs_markers_and_stops_on_a_failed_rank(tmp_path, monkeypatch):
    from bone_avizo.errors import BoneAvizoError
    from bone_avizo.predict.distributed import barrier, marker

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    parts = [tmp_path / "out.h5.part0of2.h5", tmp_path / "out.h5.part1of2.h5"]
    marker(parts[0], "done").write_text("job-a")
    marker(parts[1], "done").write_text("job-b")  # left by another job
    with pytest.raises(BoneAvizoError, match="did not finish"):
        barrier(Ranks(0, 2), parts, fingerprint="job-a", timeout_s=1.0)
    marker(parts[1], "failed").write_text("OutputWriteError: disk full")
    with pytest.raises(BoneAvizoError, match="another rank failed.*disk full"):
        barrier(Ranks(0, 2), parts, fingerprint="job-a", timeout_s=30.0)
    marker(parts[1], "failed").unlink()
    marker(parts[1], "done").write_text("job-a")
    barrier(Ranks(0, 2), parts, fingerprint="job-a", timeout_s=1.0)
    barrier(Ranks(1, 2), [], fingerprint="job-a")  # other ranks do not wait without a rendezvous
