"""DLFit over several processes without torchrun: SLURM's variables, a rank that dies, a cancel on one rank.

The multi-process tests start plain subprocesses that carry only SLURM_* variables (+ MASTER_ADDR and a
free MASTER_PORT), as ``srun`` with one task per GPU would, and train a tiny network with gloo on the CPU.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bone_avizo.config import FitConfig
from bone_avizo.errors import BoneAvizoError, ConfigError
from bone_avizo.fit import checkpoint_path, load_checkpoint
from bone_avizo.fit.distributed import (DistContext, dist_timeout_s, first_host, init_distributed, is_lost_rank,
                                        lost_ranks_fail, slurm_rendezvous)
from bone_avizo.models import load_model
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.runtime import Ranks, ranks_from_env

OPTIONS = dict(encoder_depth=3, decoder_channels=(8, 8, 8), patch_size=32, batch_size=2, steps_per_epoch=2,
               patches_per_slice=2, val_slices=2, plot=False, epochs=2, deterministic=True, val_fraction=0.34,
               device="cpu", seed=3, num_classes=3)
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "TORCHELASTIC_RUN_ID", "CUDA_VISIBLE_DEVICES")
WAIT_S = 300  # generous bound on one process: a rank that hangs fails the test instead of blocking it

# one rank of a training job started through the API; JOB (a JSON file) names the scans, the options and
# what a rank's progress callback does on reaching a message: "cancel" (ask to stop) or "park" (announce
# its pid in a file, then sleep until the test kills it)
CHILD = '''
import json, logging, os, sys, time
from pathlib import Path
from bone_avizo.errors import BoneAvizoError
from bone_avizo.fit import FitConfig, fit_model

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
job = json.loads(Path(sys.argv[1]).read_text())
rank = int(os.environ["SLURM_PROCID"])
when, action = job["at"].get(str(rank), ("never", ""))

def progress(done, total, message):
    if when in message and action == "park":
        Path(job["parked"]).write_text(str(os.getpid()))
        time.sleep(3600)
    return when in message and action == "cancel"

try:
    fit_model(job["scans"], FitConfig.from_dict(job["config"]), output=job["output"], progress=progress)
except BoneAvizoError as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
'''


# -- environment mapping (no processes) ------------------------------------------------------------
@pytest.mark.parametrize("nodelist, host", [
    ("node07", "node07"),
    ("node[01-04,07],gpu5", "node01"),
    ("node[007-010]", "node007"),
    ("gpu5,node[1-2]", "gpu5"),
    ("rack[2-3]-n[8,9],login1", "rack2-n8"),
    ("cn-[12,3-4]-ib", "cn-12-ib"),
    (" node1 ", "node1"),
])
def test_first_host_of_compact_node_lists(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize("nodelist", ["", "node[01-04", "node]1", "node[[1]]", ",node1"])
def test_unreadable_node_lists_are_config_errors(nodelist):
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        first_host(nodelist)


def test_slurm_rendezvous_address_and_port():
    job = {"SLURM_JOB_NODELIST": "job[3-4]", "SLURM_JOB_ID": "4812345"}
    assert slurm_rendezvous(job) == ("job3", 15000 + 2345)
    assert slurm_rendezvous({**job, "SLURM_NODELIST": "step[9-10]"}) == ("step9", 17345)
    assert slurm_rendezvous({**job, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29999"}) == ("10.0.0.5", 29999)
    assert slurm_rendezvous({"SLURM_NODELIST": "n1"}) == ("n1", 29500)
    for bad, message in (({}, "MASTER_ADDR"), ({**job, "MASTER_PORT": "70000"}, "MASTER_PORT"),
                         ({**job, "SLURM_JOB_ID": "12_3"}, "SLURM_JOB_ID")):
        with pytest.raises(ConfigError, match=message):
            slurm_rendezvous(bad)


def test_torchrun_variables_take_precedence_over_slurm():
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    torchrun = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}
    assert ranks_from_env({}).launcher == "" and ranks_from_env({}) == Ranks()
    assert ranks_from_env(slurm).launcher == "slurm" and ranks_from_env(slurm) == Ranks(5, 8, 1)
    both = ranks_from_env({**slurm, **torchrun})
    assert both.launcher == "torchrun" and both == Ranks(2, 4, 0)
    assert ranks_from_env({"SLURM_PROCID": "0"}) == Ranks()  # an sbatch script without --ntasks: one process


@pytest.mark.parametrize("env, message", [
    ({"RANK": "1"}, "RANK is set but WORLD_SIZE is not"),
    ({"WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "WORLD_SIZE is set but RANK is not"),
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "2"}, "inconsistent"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "inconsistent"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "-1"}, "inconsistent"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2(x3)"}, "SLURM_NTASKS='2\\(x3\\)' is not an integer"),
])
def test_inconsistent_rank_variables_are_config_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        ranks_from_env(env)


def test_process_group_timeout_is_configurable():
    assert dist_timeout_s({}) == 1800.0
    assert dist_timeout_s({"BONE_AVIZO_DIST_TIMEOUT": "90"}) == 90.0
    for bad in ("0", "-5", "ten"):
        with pytest.raises(ConfigError, match="BONE_AVIZO_DIST_TIMEOUT"):
            dist_timeout_s({"BONE_AVIZO_DIST_TIMEOUT": bad})


def test_a_missing_rank_stops_the_start_after_the_timeout(monkeypatch):
    """One process of two (as a fit started in an sbatch script outside srun): rank 0 waits for rank 1 at
    most BONE_AVIZO_DIST_TIMEOUT seconds, then stops with one error."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in dict(SLURM_PROCID="0", SLURM_NTASKS="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                            BONE_AVIZO_DIST_TIMEOUT="1").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BoneAvizoError, match=r"rank 0 of 2: the process group did not form within 1 s .*1/2 clients "
                                             r"joined.*start all 2 processes"):
        init_distributed("cpu", ranks_from_env())
    assert not torch.distributed.is_initialized()


def test_a_lost_rank_becomes_one_clear_error(tmp_path):
    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.0.0.2]:4")
    assert is_lost_rank(gloo) and is_lost_rank(torch.distributed.DistBackendError("NCCL watchdog"))
    assert not is_lost_rank(RuntimeError("CUDA out of memory"))
    ctx = DistContext(Ranks(1, 2, 1))
    with pytest.raises(BoneAvizoError, match=r"rank 1 of 2: another process .* died .* rerun the same command$"):
        with lost_ranks_fail(ctx, tmp_path / "m.ckpt"):
            raise gloo
    (tmp_path / "m.ckpt").write_bytes(b"")
    with pytest.raises(BoneAvizoError, match="m.ckpt is intact: rerun the same command with --resume"):
        with lost_ranks_fail(ctx, tmp_path / "m.ckpt"):
            raise gloo
    with pytest.raises(RuntimeError, match="out of memory"):  # other errors pass unchanged
        with lost_ranks_fail(ctx, tmp_path / "m.ckpt"):
            raise RuntimeError("CUDA out of memory")


# -- two processes with gloo ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Three tiny phantom scans and the options of every run below (a --config file for the CLI)."""
    folder = tmp_path_factory.mktemp("scaleout_fit")
    scans = []
    for seed in range(3):
        image, labels = make_phantom(PhantomConfig(shape=(5, 40, 56), seed=30 + seed))
        np.save(folder / f"s{seed}.npy", image.array)
        np.save(folder / f"s{seed}_labels.npy", labels.array)
        scans.append((str(folder / f"s{seed}.npy"), str(folder / f"s{seed}_labels.npy")))
    config = FitConfig(**OPTIONS).to_dict()
    (folder / "options.json").write_text(json.dumps(config))
    (folder / "child.py").write_text(CHILD)
    return {"folder": folder, "scans": scans, "config": config}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(argv: list[str], folder: Path, tag: str, *, world: int = 2, timeout_s: int = 120) -> list[subprocess.Popen]:
    """``world`` processes as srun starts them: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, no RANK."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
        env.update(OMP_NUM_THREADS="1", SLURM_PROCID=str(rank), SLURM_NTASKS=str(world), SLURM_LOCALID=str(rank),
                   SLURM_JOB_ID="77", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   BONE_AVIZO_DIST_TIMEOUT=str(timeout_s))
        with open(folder / f"{tag}.{rank}.out", "w") as out, open(folder / f"{tag}.{rank}.err", "w") as err:
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True))
    return procs


def _finish(procs: list[subprocess.Popen], folder: Path, tag: str) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each rank; fails (and kills the ranks) if one does not end in time."""
    try:
        codes = [proc.wait(timeout=WAIT_S) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"{tag}: a rank did not end within {WAIT_S} s")
    return [(code, (folder / f"{tag}.{r}.out").read_text(), (folder / f"{tag}.{r}.err").read_text())
            for r, code in enumerate(codes)]


def _cli_fit(job, output: Path, tag: str, *extra: str) -> list[tuple[int, str, str]]:
    images = [image for image, _ in job["scans"]] if not extra else []
    labels = [labels for _, labels in job["scans"]] if not extra else []
    argv = [sys.executable, "-m", "bone_avizo.standalone", "fit", "--output", str(output), *extra]
    if images:
        argv += ["--images", *images, "--labels", *labels, "--config", str(job["folder"] / "options.json")]
    return _finish(_start(argv, job["folder"], tag), job["folder"], tag)


def _child(job, output: Path, tag: str, at: dict, *, timeout_s: int = 120) -> tuple[list[subprocess.Popen], Path]:
    parked = job["folder"] / f"{tag}.parked"
    spec = {"scans": job["scans"], "config": job["config"], "output": str(output), "at": at, "parked": str(parked)}
    (job["folder"] / f"{tag}.json").write_text(json.dumps(spec))
    argv = [sys.executable, str(job["folder"] / "child.py"), str(job["folder"] / f"{tag}.json")]
    return _start(argv, job["folder"], tag, timeout_s=timeout_s), parked


@pytest.fixture(scope="module")
def reference(job):
    """An uninterrupted 2-process run of the CLI under SLURM's variables (no torchrun)."""
    output = job["folder"] / "reference.safetensors"
    return output, _cli_fit(job, output, "reference")


def test_slurm_variables_alone_start_a_two_process_training(reference):
    output, ranks = reference
    for rank, (code, out, err) in enumerate(ranks):
        assert code == 0, err[-3000:]
        assert f"distributed training: rank {rank} of 2 (local rank {rank}, slurm)" in err
    (_, out0, err0), (_, out1, err1) = ranks
    assert "rank 1: weights agree with rank 0" in err1
    assert f"rank 0 wrote {output}" in err0 and " wrote " not in err1 + out1  # the model file: rank 0 only
    assert out0.startswith(f"wrote {output}") and out1 == ""
    training = load_model(output).metadata.training
    assert training["world_size"] == 2 and training["epochs_run"] == 2
    assert load_checkpoint(checkpoint_path(output))["epoch"] == 2


def _park_rank_one(job, output: Path, tag: str, *, timeout_s: int = 120) -> list[subprocess.Popen]:
    """Start a 2-process run whose rank 1 stops in its first step of epoch 2 (after the checkpoint of
    epoch 1), and return once it has stopped there."""
    procs, parked = _child(job, output, tag, {"1": ["epoch 2", "park"]}, timeout_s=timeout_s)
    deadline = time.monotonic() + WAIT_S
    while not parked.exists() and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    assert parked.exists(), f"rank 1 never reached epoch 2: {(job['folder'] / f'{tag}.1.err').read_text()[-2000:]}"
    assert int(parked.read_text()) == procs[1].pid
    return procs


def _check_failed_after_epoch_one(procs, job, output: Path, tag: str, cause: str | tuple[str, ...]) -> None:
    """Rank 0 ended with one clear error naming one of the ``cause`` texts (gloo words a dead peer
    in several ways); the checkpoint of epoch 1 is whole."""
    code0, _, err0 = _finish(procs, job["folder"], tag)[0]
    assert code0 == 3, err0[-3000:]
    assert "BoneAvizoError: rank 0 of 2: another process of the training job died or stopped answering" in err0
    assert any(text in err0 for text in ((cause,) if isinstance(cause, str) else cause)), err0[-3000:]
    assert f"{checkpoint_path(output)} is intact: rerun the same command with --resume" in err0
    state = load_checkpoint(checkpoint_path(output))
    assert state["epoch"] == 1 and [r["epoch"] for r in state["history"]] == [1]
    assert not list(output.parent.glob("*.partial"))


def test_a_killed_rank_fails_the_job_with_the_checkpoint_intact(job, tmp_path):
    output = tmp_path / "killed.safetensors"
    procs = _park_rank_one(job, output, "killed")
    os.kill(procs[1].pid, signal.SIGKILL)  # rank 1 dies in epoch 2
    _check_failed_after_epoch_one(procs, job, output, "killed", ("Connection closed by peer",
                                                                "Connection reset by peer", "gloo/transport"))
    assert procs[1].returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_hung_rank_times_out_and_resume_ends_as_an_uninterrupted_run(job, reference, tmp_path):
    output = tmp_path / "hung.safetensors"
    procs = _park_rank_one(job, output, "hung", timeout_s=30)
    os.kill(procs[1].pid, signal.SIGSTOP)  # rank 1 stops answering (as on a lost node): no error to see
    try:
        _check_failed_after_epoch_one(procs[:1], job, output, "hung", "Timed out waiting 30000ms")
    finally:
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(timeout=WAIT_S)

    ranks = _cli_fit(job, output, "resumed", "--resume")
    assert all(code == 0 for code, _, _ in ranks), ranks[0][2][-3000:] + ranks[1][2][-3000:]
    assert "resuming after epoch 1 of 2" in ranks[1][2]
    expected, resumed = load_file(reference[0]), load_file(output)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    a, b = load_checkpoint(checkpoint_path(reference[0])), load_checkpoint(checkpoint_path(output))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_a_cancel_on_one_rank_stops_every_rank(job, tmp_path):
    output = tmp_path / "cancelled.safetensors"
    procs, _ = _child(job, output, "cancel", {"1": ["epoch 2", "cancel"]})
    ranks = _finish(procs, job["folder"], "cancel")
    messages = []
    for code, _, err in ranks:
        assert code == 3, err[-3000:]
        messages.append([line for line in err.splitlines() if line.startswith("Cancelled: ")])
    assert messages[0] == messages[1] and len(messages[0]) == 1  # the same error on every rank
    assert "cancelled by the user on rank 1 at step 3/4" in messages[0][0]
    state = load_checkpoint(checkpoint_path(output))  # epoch 1's checkpoint, untouched by the cancel
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert load_model(output).metadata.training["best_epoch"] == 1
    assert not list(tmp_path.glob("*.partial"))
