"""Kill and resume: fit and predict are killed with SIGKILL at random points (several seeds), rerun with
``--resume``, and must end with results bit-identical to an uninterrupted run (deterministic mode, CPU).

The fast tests run the CLI in a forked child (it reuses this process's imports, so it starts in
milliseconds) whose progress callback writes ``progress DONE/TOTAL`` markers to its log and sleeps a
little per step; the child is killed once a randomly chosen marker has appeared, after a further random
delay. The slow tests run ``python -m bone_avizo.standalone`` in a fresh interpreter and kill it after a
random delay once it has started working (a log line, or the first checkpoint on disk).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bone_avizo.config import FitConfig
from bone_avizo.errors import Cancelled
from bone_avizo.fit import checkpoint_path, fit_model, load_checkpoint
from bone_avizo.io import create_writer, load_volume
from bone_avizo.io.base import partial_path
from bone_avizo.predict.engine import PREDICT_UNITS, STATS_UNITS
from bone_avizo.volume import VolumeInfo

from .helpers import (FIT_OPTIONS, PREDICT_FLAGS, fit_argv, progress_done, run_cli, scan_array, start_cli_child,
                      wait_for)

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2)
CLASS_NAMES = ("background", "bone", "pores")


# ---------------------------------------------------------------------------------------------
# predict
def predict_argv(model: Path, scan: Path, output: Path) -> list:
    return ["predict", "--model", model, "--input", scan, "--output", output, "--slab-slices", "2",
            "--tile-size", "32", "--probabilities", "--resume", *PREDICT_FLAGS]


def prediction_files(output: Path) -> list[Path]:
    """The label volume and the probability maps of one prediction."""
    suffix = output.suffix
    return [output] + [output.with_name(f"{output.stem}_prob_{name}{suffix}") for name in CLASS_NAMES]


def assert_same_prediction(result: Path, reference: Path) -> None:
    for a, b in zip(prediction_files(result), prediction_files(reference)):
        assert np.array_equal(load_volume(a).array, load_volume(b).array), a.name
    assert not list(result.parent.glob("*.partial")), "a partial output was left"


def uninterrupted(argv_for, folder: Path, name: str) -> Path:
    output = folder / name
    code, _, err = run_cli(argv_for(output))
    assert code == 0, err
    return output


@pytest.fixture(scope="module")
def predict_setup(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("kill_predict")
    scan = folder / "scan.npy"
    np.save(scan, scan_array((24, 48, 64), seed=3))
    argv_for = lambda output: predict_argv(tiny_model, scan, output)  # noqa: E731
    reference = uninterrupted(argv_for, folder, "reference.h5")
    probabilities = load_volume(prediction_files(reference)[2]).array
    assert len(np.unique(probabilities)) > 10  # the maps vary: the comparison compares something
    return argv_for, reference


def test_predict_killed_at_random_points_resumes_bit_identical(predict_setup, tmp_path):
    argv_for, reference = predict_setup
    total = 24 * (STATS_UNITS["cpu"] + PREDICT_UNITS)  # statistics pass + prediction, weighted by their cost
    resumed_after = []
    for seed in SEEDS:
        rng = random.Random(seed)
        suffix = (".h5", ".zarr")[seed % 2]
        output, log = tmp_path / f"labels{seed}{suffix}", tmp_path / f"child{seed}.log"
        child = start_cli_child(argv_for(output), log, step_delay=0.02)
        stop_at = rng.randint(1, total - 6 * PREDICT_UNITS)
        assert wait_for(lambda: progress_done(log) >= stop_at, process=child), log.read_text()
        time.sleep(rng.uniform(0.0, 0.03))
        child.kill()
        child.join()
        assert child.exitcode == -signal.SIGKILL and not output.exists()
        code, _, err = run_cli(argv_for(output))
        assert code == 0, err
        resumed_after += [int(line.split("resuming after ")[1].split()[0]) for line in err.splitlines()
                          if "resuming after" in line and "bone_avizo.predict" in line]
        assert_same_prediction(output, reference)
    assert any(done > 0 for done in resumed_after), "no run was resumed part-way: the test proved nothing"


def _die_after_commits(count: int):
    """In the child: SIGKILL itself right after the ``count``-th output is committed (renamed)."""
    def prepare():
        from bone_avizo.io.base import VolumeWriter

        commit, done = VolumeWriter.commit, []

        def commit_then_die(self):
            path = commit(self)
            done.append(path)
            if len(done) == count:
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        VolumeWriter.commit = commit_then_die
    return prepare


@pytest.mark.parametrize("committed", [1, 4], ids=["between commits", "after the last commit"])
def test_predict_killed_while_committing_its_outputs_resumes(predict_setup, tmp_path, committed):
    argv_for, reference = predict_setup
    output = tmp_path / "labels.h5"
    child = start_cli_child(argv_for(output), tmp_path / "child.log", prepare=_die_after_commits(committed))
    child.join()
    assert child.exitcode == -signal.SIGKILL
    finished = [p for p in prediction_files(output) if p.exists()]
    assert len(finished) == committed and len(list(tmp_path.glob("*.partial"))) == 4 - committed
    for attempt in range(2):  # resuming a finished job changes nothing
        code, _, err = run_cli(argv_for(output))
        assert code == 0, err
        assert_same_prediction(output, reference)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
@pytest.mark.parametrize("seed", SEEDS)
def test_predict_cli_process_killed_and_resumed(tmp_path_factory, tiny_model, suffix, seed):
    folder = tmp_path_factory.mktemp("kill_predict_process")
    scan = folder / "scan.npy"
    np.save(scan, scan_array((64, 96, 128), seed=4))
    argv_for = lambda output: predict_argv(tiny_model, scan, output)  # noqa: E731
    start = time.perf_counter()
    reference = uninterrupted(argv_for, folder, "reference" + suffix)
    seconds = time.perf_counter() - start  # the kill lands part-way at any machine speed
    output = folder / ("labels" + suffix)
    log = folder / "child.log"
    killed = kill_cli_process(argv_for(output), log, started=lambda: "normalisation" in log.read_text(),
                              delay=random.Random(seed).uniform(0.05, 0.6) * seconds)
    assert killed, "the prediction finished before it could be killed; use a larger scan"
    done = subprocess.run(cli_command(argv_for(output)), env=cli_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_prediction(output, reference)


# ---------------------------------------------------------------------------------------------
# fit
KILL_FIT_FLAGS = ["--epochs", "3", "--deterministic", "--seed", "1", "--extra-augment", "noise"]


def assert_same_training(result: Path, reference: Path) -> None:
    """Bit-identical model files and checkpoints (weights, optimiser state, history)."""
    a, b = load_file(str(result)), load_file(str(reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = load_checkpoint(checkpoint_path(result)), load_checkpoint(checkpoint_path(reference))
    assert ca["epoch"] == cb["epoch"]
    assert all(torch.equal(v, cb["model"][k]) for k, v in ca["model"].items())
    for key, state in ca["optimizer"]["state"].items():
        assert all(torch.equal(v, cb["optimizer"]["state"][key][n]) for n, v in state.items()
                   if isinstance(v, torch.Tensor))
    strip = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa: E731
    assert strip(ca["history"]) == strip(cb["history"])
    assert not list(result.parent.glob("*.partial")), "a partial output was left"


@pytest.fixture(scope="module")
def fit_setup(tmp_path_factory, phantom_pairs):
    folder = tmp_path_factory.mktemp("kill_fit")
    argv_for = lambda output: fit_argv(phantom_pairs, output, *KILL_FIT_FLAGS)  # noqa: E731
    return argv_for, uninterrupted(argv_for, folder, "reference.safetensors")


def kill_fit_child(argv_for, output: Path, log: Path, rng: random.Random, *, after_checkpoint: bool) -> None:
    """Start fit in a child, wait for a random progress marker (and the first checkpoint), kill it."""
    child = start_cli_child(argv_for(output), log, step_delay=0.03)
    total = 3 * 2  # epochs x steps
    stop_at = rng.randint(2, total - 1) if after_checkpoint else 1
    ready = lambda: progress_done(log) >= stop_at and (  # noqa: E731
        checkpoint_path(output).exists() or not after_checkpoint)
    assert wait_for(ready, process=child), log.read_text()
    time.sleep(rng.uniform(0.0, 0.1) if after_checkpoint else 0.0)
    child.kill()
    child.join()
    assert child.exitcode == -signal.SIGKILL


def test_fit_killed_at_random_points_resumes_bit_identical(fit_setup, tmp_path):
    argv_for, reference = fit_setup
    epochs_before = []
    for seed in SEEDS:
        output = tmp_path / f"m{seed}.safetensors"
        kill_fit_child(argv_for, output, tmp_path / f"child{seed}.log", random.Random(seed), after_checkpoint=True)
        epochs_before.append(load_checkpoint(checkpoint_path(output))["epoch"])
        code, _, err = run_cli(argv_for(output) + ["--resume"])
        assert code == 0, err
        assert_same_training(output, reference)
    assert any(epoch < 3 for epoch in epochs_before), "no run was resumed part-way: the test proved nothing"


def test_fit_killed_before_its_first_checkpoint_resumes(fit_setup, tmp_path):
    argv_for, reference = fit_setup
    output = tmp_path / "m.safetensors"
    kill_fit_child(argv_for, output, tmp_path / "child.log", random.Random(0), after_checkpoint=False)
    assert not checkpoint_path(output).exists()
    code, _, err = run_cli(argv_for(output) + ["--resume"])
    assert code == 0, err
    assert_same_training(output, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_fit_cli_process_killed_and_resumed(fit_setup, tmp_path, seed):
    argv_for, reference = fit_setup
    output = tmp_path / "m.safetensors"
    argv = argv_for(output)
    killed = kill_cli_process(argv, tmp_path / "child.log", started=checkpoint_path(output).exists,
                              delay=random.Random(seed).uniform(0.0, 0.6))
    assert killed, "the training finished before it could be killed"
    done = subprocess.run(cli_command(argv + ["--resume"]), env=cli_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(output, reference)


# ---------------------------------------------------------------------------------------------
# a real CLI process
def cli_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def cli_command(argv: list) -> list[str]:
    return [sys.executable, "-m", "bone_avizo.standalone", *map(str, argv)]


def kill_cli_process(argv: list, log: Path, *, started, delay: float) -> bool:
    """Run the CLI in a new interpreter; once ``started()`` is true wait ``delay`` seconds and SIGKILL it.
    Returns False when it ended before the kill."""
    with open(log, "w") as fh:
        process = subprocess.Popen(cli_command(argv), env=cli_env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: started() or process.poll() is not None, timeout=300)
        time.sleep(delay)
        if process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_fit_resumes_with_the_augmentations_in_another_order(phantom_pairs, tmp_path):
    output = tmp_path / "m.safetensors"
    with pytest.raises(Cancelled):
        fit_model(phantom_pairs, FitConfig(**FIT_OPTIONS, epochs=2, extra_augment=("noise", "gamma")), output=output,
                  progress=lambda done, total, message: "epoch 2" in message)
    result = fit_model(phantom_pairs, FitConfig(**FIT_OPTIONS, epochs=2, extra_augment=("gamma", "noise")),
                       output=output, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2]



def _damage_chunks(path: Path, layers: set[int]) -> int:
    """Flip bytes inside the stored chunks of dataset 'data' whose first slice is in ``layers``, as a kill
    while HDF5 rewrote them can leave them; returns how many chunks were damaged."""
    import h5py

    with h5py.File(path, "r") as fh:
        ds = fh["data"]
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    raw = bytearray(path.read_bytes())
    damaged = [info for info in infos if info.chunk_offset[0] in layers]
    for info in damaged:
        for k in range(info.byte_offset + 8, info.byte_offset + min(info.size, 40)):
            raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))
    return len(damaged)


@pytest.mark.parametrize("damaged, resumes_at", [({16}, 16), ({32}, 20)],
                         ids=["the layer of the resume point", "a later layer"])
def test_hdf5_chunks_damaged_by_a_kill_are_recovered_on_resume(tmp_path, damaged, resumes_at):
    """A partial HDF5 output of a (40, 300, 280) volume (chunks 16 x 256 x 256) records 20 slices done;
    slices up to 36 were flushed too when the process was killed while HDF5 rewrote chunks. Resuming
    recomputes what does not decode and ends with the right volume."""
    expected = np.random.default_rng(0).integers(0, 200, (40, 300, 280)).astype(np.uint8)
    info, output = VolumeInfo(expected.shape, np.uint8), tmp_path / "labels.h5"
    writer = create_writer(output, info, resume=True)
    writer.write_slab(0, expected[:20])
    writer.mark_done(20)
    writer.write_slab(20, expected[20:36])
    writer._file.flush()
    writer._close()
    assert _damage_chunks(partial_path(output), damaged) == 4
    with create_writer(output, info, resume=True) as writer:
        assert writer.done_slices == resumes_at
        writer.write_slab(resumes_at, expected[resumes_at:])
        writer.mark_done(40)
    assert np.array_equal(load_volume(output).array, expected)
