"""Ranks from the launcher's environment, the one device rule, and studies that leave the environment alone."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bone_avizo.config import FitConfig, IoUConfig, PredictConfig
from bone_avizo.data.scans import ScanSpec
from bone_avizo.errors import ConfigError
from bone_avizo.runtime import SINGLE, Ranks, ranks_from_env, resolve_device
from test_studies_tasks import write_phantoms

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
SLURM = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}


@pytest.fixture
def launcher_env(monkeypatch):
    """The process environment without any launcher's rank variables; setenv() adds some back."""
    for name in (*TORCHRUN, *SLURM):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------------------------
# ranks
def test_no_launcher_is_one_process():
    ranks = ranks_from_env({})
    assert ranks == SINGLE == Ranks(0, 1, 0, 0) and not ranks.distributed and ranks.is_main
    assert ranks.launcher == ""


def test_torchrun_variables_give_all_four_numbers():
    ranks = ranks_from_env(TORCHRUN)
    assert (ranks.rank, ranks.world, ranks.local_rank, ranks.local_world) == (3, 4, 1, 2)
    assert ranks.launcher == "torchrun" and ranks.distributed and not ranks.is_main
    assert [i for i in range(10) if ranks.owns(i)] == [3, 7]


def test_slurm_variables_and_their_defaults():
    assert ranks_from_env(SLURM) == Ranks(5, 8, 1) and ranks_from_env(SLURM).launcher == "slurm"
    without_local = {k: v for k, v in SLURM.items() if k != "SLURM_LOCALID"}
    assert ranks_from_env(without_local).local_rank == 5  # one task per node: the local rank is the rank
    assert ranks_from_env({**SLURM, "LOCAL_WORLD_SIZE": "9"}).local_world == 0  # torchrun's, not read for srun


@pytest.mark.parametrize("env, names", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": ""}, "WORLD_SIZE='' is not an integer"),
    ({**TORCHRUN, "LOCAL_RANK": "one"}, "LOCAL_RANK='one' is not an integer"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "two"}, "LOCAL_WORLD_SIZE='two' is not an integer"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "1"}, "LOCAL_WORLD_SIZE=1, LOCAL_RANK=1, WORLD_SIZE=4 are inconsistent"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "0"}, "LOCAL_WORLD_SIZE=0, .* are inconsistent"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "5", "LOCAL_RANK": "0"}, "LOCAL_WORLD_SIZE=5, .* are inconsistent"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4, WORLD_SIZE=4, .* are inconsistent"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
    ({**SLURM, "SLURM_LOCALID": "-1"}, "SLURM_LOCALID=-1 are inconsistent"),
])
def test_bad_rank_variables_are_one_line_config_errors(env, names):
    with pytest.raises(ConfigError, match=names) as caught:
        ranks_from_env(env)
    message = str(caught.value)
    assert "\n" not in message and ("check the launcher's settings" in message or "or neither" in message)


def test_the_default_environment_is_the_process_environment(launcher_env):
    assert ranks_from_env() == SINGLE
    for name, value in TORCHRUN.items():
        launcher_env.setenv(name, value)
    assert ranks_from_env() == ranks_from_env(TORCHRUN)


# ---------------------------------------------------------------------------------------------
# the device rule (``gpus`` stands for the visible CUDA devices, so it runs without one)
TWO_OF_FOUR = Ranks(1, 4, 1, 2, "torchrun")


@pytest.mark.parametrize("requested, ranks, gpus, expected", [
    ("cpu", SINGLE, 2, "cpu"),
    ("cpu", TWO_OF_FOUR, 2, "cpu"),
    ("auto", SINGLE, 0, "cpu"),
    ("auto", TWO_OF_FOUR, 0, "cpu"),
    ("auto", SINGLE, 2, "cuda"),
    ("cuda", SINGLE, 2, "cuda"),
    ("auto", TWO_OF_FOUR, 2, "cuda:1"),
    ("cuda", TWO_OF_FOUR, 2, "cuda:1"),
    ("cuda:1", SINGLE, 2, "cuda:1"),
    ("cuda:0", TWO_OF_FOUR, 2, "cuda:0"),                  # a named GPU is kept, whatever the ranks
    ("auto", Ranks(3, 4, 3, 0, "slurm"), 1, "cuda:0"),     # srun --gpus-per-task 1: each task its own GPU
    (torch.device("cpu"), SINGLE, 0, "cpu"),
])
def test_the_device_rule(requested, ranks, gpus, expected):
    assert resolve_device(requested, ranks, gpus=gpus) == torch.device(expected)


@pytest.mark.parametrize("requested, ranks, gpus, message", [
    ("cuda", SINGLE, 0, "device cuda requested but CUDA is not available here; use --device cpu"),
    ("cuda", TWO_OF_FOUR, 0, "device cuda requested but CUDA is not available here"),
    ("cuda:2", SINGLE, 2, r"device cuda:2 does not exist: 2 CUDA device\(s\); use cuda:0 .. cuda:1 or auto"),
    ("gpu0", SINGLE, 2, "device 'gpu0' is not valid; use cpu, cuda, cuda:N or auto"),
    ("cuda:x", SINGLE, 2, "device 'cuda:x' is not valid"),
    ("meta", SINGLE, 2, "device 'meta' is not supported; use cpu, cuda, cuda:N or auto"),
    ("auto", Ranks(2, 4, 2, 4, "torchrun"), 2, r"local rank 2 but only 2 GPU\(s\) on this node; start at most"),
    ("cuda", Ranks(1, 2, 1, 2, "torchrun"), 1, r"local rank 1 but only 1 GPU\(s\)"),
    ("auto", Ranks(5, 8, 3, 0, "slurm"), 2, r"local rank 3 but only 2 GPU\(s\)"),
])
def test_devices_that_cannot_be_used_are_one_line_config_errors(requested, ranks, gpus, message):
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_device(requested, ranks, gpus=gpus)
    assert "\n" not in str(caught.value)


def test_the_rule_asks_torch_for_the_gpus_by_default():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)


def test_prediction_takes_its_device_from_the_rule_with_its_ranks(monkeypatch):
    import bone_avizo.predict.engine as engine

    seen = []
    monkeypatch.setattr(engine, "resolve_device", lambda d, ranks=SINGLE: seen.append((d, ranks)) or torch.device("cpu"))
    plan = engine._Plan.__new__(engine._Plan)
    plan.ranks = TWO_OF_FOUR
    assert plan._devices(PredictConfig(device="auto")) == [torch.device("cpu")]
    assert seen == [("auto", TWO_OF_FOUR)]


def test_training_takes_its_device_from_the_rule_with_its_ranks():
    from bone_avizo.fit.distributed import init_distributed

    ctx = init_distributed("cpu", SINGLE)
    assert ctx.ranks == SINGLE and ctx.device == torch.device("cpu") and not ctx.initialised
    with pytest.raises(ConfigError, match="'gpu0' is not valid"):
        init_distributed("gpu0", Ranks(0, 2, 0, 2, "torchrun"))


def test_a_named_gpu_shared_by_the_trainers_of_a_node_is_refused(monkeypatch):
    import bone_avizo.fit.distributed as distributed

    monkeypatch.setattr(distributed, "resolve_device", lambda d, ranks: torch.device(d))
    with pytest.raises(ConfigError, match="--device cuda:0 puts all 2 processes of this node on one GPU"):
        distributed._rank_device("cuda:0", Ranks(1, 2, 1, 2, "torchrun"))


def test_study_tasks_get_the_device_of_their_rank():
    from bone_avizo.studies.study import placed

    info, fit, predict = placed(FitConfig(device="auto"), None, Ranks(1, 2, 1, 2, "torchrun"))
    assert info == Ranks(1, 2, 1, 2) and fit.device == predict.device == str(resolve_device("auto", info))
    info, fit, predict = placed(FitConfig(device="auto"), PredictConfig(device="cpu"), SINGLE)
    assert (fit.device, predict.device) == ("auto", "cpu")  # one process: the options as given


# ---------------------------------------------------------------------------------------------
# studies pass one-process ranks down and leave os.environ alone
class _Stop(Exception):
    pass


def test_a_study_task_trains_and_predicts_as_one_process(launcher_env, monkeypatch, tmp_path):
    import bone_avizo.fit
    import bone_avizo.predict
    from bone_avizo.studies.run import train_task
    from bone_avizo.studies.scoring import _score_scan

    for name, value in TORCHRUN.items():
        launcher_env.setenv(name, value)
    given = []

    def record(*args, ranks=None, **kwargs):
        given.append(ranks)
        raise _Stop

    monkeypatch.setattr(bone_avizo.fit, "fit_model", record)
    monkeypatch.setattr(bone_avizo.predict, "predict_volume", record)
    ((image, labels),) = write_phantoms(tmp_path, (3, 16, 16), [0])
    with pytest.raises(_Stop):
        train_task(tmp_path / "task", [ScanSpec(image, labels)], [], FitConfig(device="cpu"))
    with pytest.raises(_Stop):
        _score_scan(ScanSpec(image, labels), None, PredictConfig(device="cpu"), IoUConfig(), tmp_path, False)
    assert given == [SINGLE, SINGLE]


def test_a_ranked_study_leaves_the_environment_as_it_found_it(launcher_env, monkeypatch, tmp_path):
    import bone_avizo.studies.cv as cv

    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        launcher_env.setenv(name, value)
    before = dict(os.environ)
    during = []

    def fake_train(folder, *args, **kwargs):
        during.append(dict(os.environ))
        return {"best_epoch": 1}

    def fake_score(folder, tests, config, **kwargs):
        during.append(dict(os.environ))
        return {"class_names": ["a"], "scans": [], "pooled": {}, "scan_mean_iou": None, "predict": {}}

    monkeypatch.setattr(cv, "train_task", fake_train)
    monkeypatch.setattr(cv, "score_task", fake_score)
    scans = write_phantoms(tmp_path, (3, 16, 16), range(4))
    result = cv.run_cv(scans, FitConfig(device="cpu", epochs=1), cv.CVConfig(folds=2), output=tmp_path / "study",
                       merge=False)
    assert result.tasks_run == ["r0_f1"]
    assert during == [before, before] and dict(os.environ) == before
    np.testing.assert_equal(sorted(os.environ), sorted(before))
