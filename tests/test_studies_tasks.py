"""Study machinery without training: ranks, task ownership, plan checks, results, barrier, statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bone_avizo.config import FitConfig
from bone_avizo.errors import ConfigError, OutputExistsError
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.runtime import ranks_from_env
from bone_avizo.studies import StudyIncompleteError
from bone_avizo.studies.report import csv_text, describe, flat_scores, text_table
from bone_avizo.studies.scoring import confusion_scores, pooled_confusion
from bone_avizo.studies.selection import selection_inputs
from bone_avizo.studies.study import task_device
from bone_avizo.studies.tasks import (RankInfo, Task, finished_result, load_results, prepare_output, read_json,
                                      result_path, save_result, wait_for_results)


def _plan(**changes):
    plan = {"kind": "cv", "options": {"folds": 2}, "fit": FitConfig().to_dict(), "outputs": ["cv_summary.json"],
            "tasks": [{"name": "a"}, {"name": "b"}]}
    plan.update(changes)
    return plan


@pytest.fixture
def no_rank_env(monkeypatch):
    """No torchrun or SLURM rank in the environment (the study tests import this fixture)."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def write_phantoms(folder, shape, seeds, prefix="scan") -> list[tuple[Path, Path]]:
    """Phantom scans (Bone-Pores labels) as .npy (image, labels) pairs in ``folder``."""
    pairs = []
    for seed in seeds:
        image, labels = make_phantom(PhantomConfig(shape=shape, seed=seed))
        pairs.append((folder / f"{prefix}{seed}.npy", folder / f"{prefix}{seed}_labels.npy"))
        np.save(pairs[-1][0], image.array)
        np.save(pairs[-1][1], labels.array)
    return pairs


def test_ranks_from_torchrun_variables(no_rank_env):
    assert ranks_from_env() == RankInfo(0, 1, 0)
    no_rank_env.setenv("RANK", "3")
    no_rank_env.setenv("WORLD_SIZE", "4")
    no_rank_env.setenv("LOCAL_RANK", "1")
    info = ranks_from_env()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)
    assert [i for i in range(10) if info.owns(i)] == [3, 7]


@pytest.mark.parametrize("rank, world", [("2", "2"), ("-1", "2"), ("x", "2")])
def test_ranks_refuses_inconsistent_variables(no_rank_env, rank, world):
    no_rank_env.setenv("RANK", rank)
    no_rank_env.setenv("WORLD_SIZE", world)
    with pytest.raises(ConfigError, match="RANK|rank"):
        ranks_from_env()


def test_every_task_has_exactly_one_rank():
    for world in (1, 2, 3, 5):
        owners = [[r for r in range(world) if RankInfo(r, world).owns(i)] for i in range(11)]
        assert all(len(o) == 1 for o in owners)


def test_task_device_keeps_explicit_devices_and_single_processes():
    assert task_device("auto", RankInfo(0, 1)) == "auto"
    assert task_device("cpu", RankInfo(1, 2, 1)) == "cpu"
    assert task_device("auto", RankInfo(1, 2, 1)) in ("cpu", "cuda:1")


def test_prepare_output_refuses_another_study_and_overwrite_clears_it(tmp_path):
    out = tmp_path / "study"
    prepare_output(out, _plan(), RankInfo(), overwrite=False)
    prepare_output(out, _plan(fit=FitConfig(threads=3, device="cpu").to_dict()), RankInfo(), overwrite=False)
    (out / "cv_summary.json").write_text("{}")
    (out / "tasks" / "a").mkdir(parents=True)
    (out / "tasks" / "old").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="fit differs in epochs"):
        prepare_output(out, _plan(fit=FitConfig(epochs=3).to_dict()), RankInfo(), overwrite=False)
    prepare_output(out, _plan(fit=FitConfig(epochs=3).to_dict()), RankInfo(), overwrite=True)
    assert read_json(out / "study.json")["fit"]["epochs"] == 3
    assert not (out / "cv_summary.json").exists() and not (out / "tasks" / "old").exists()
    assert (out / "tasks" / "a").is_dir()


def test_prepare_output_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(Exception, match="is a file"):
        prepare_output(tmp_path / "f", _plan(), RankInfo(), overwrite=False)


def test_results_carry_their_fingerprint(tmp_path):
    task = Task("a", 0, {"x": 1})
    assert finished_result(tmp_path, task) is None
    save_result(tmp_path, task, {"status": "done"})
    assert finished_result(tmp_path, task)["status"] == "done"
    assert load_results(tmp_path, [task])[0]["name"] == "a"
    other = Task("a", 0, {"x": 2})
    with pytest.raises(StudyIncompleteError, match="other options"):
        load_results(tmp_path, [other])
    assert finished_result(tmp_path, other) is None and not result_path(tmp_path, "a").exists()


def test_wait_for_results_returns_when_all_exist_and_times_out_naming_the_missing(tmp_path):
    tasks = [Task("a", 0, {}), Task("b", 1, {})]
    save_result(tmp_path, tasks[0], {})
    with pytest.raises(StudyIncompleteError, match="1 task.*: b;"):
        wait_for_results(tmp_path, tasks, timeout_s=0.05)
    save_result(tmp_path, tasks[1], {})
    wait_for_results(tmp_path, tasks, timeout_s=0.05)
    with pytest.raises(StudyIncompleteError, match="no result yet: c"):
        load_results(tmp_path, tasks + [Task("c", 2, {})])


def test_describe_uses_the_sample_standard_deviation_and_skips_undefined():
    stats = describe([0.5, None, 0.7, float("nan"), 0.9])
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert (stats["min"], stats["max"]) == (0.5, 0.9)
    assert describe([0.4])["std"] is None and describe([None])["mean"] is None


def test_confusion_scores_and_pooling():
    a = {"confusion": [[8, 2], [0, 10]]}
    b = {"confusion": [[10, 0, 0], [0, 0, 0], [0, 0, 0]]}
    pooled = pooled_confusion([a, b])
    assert pooled.tolist() == [[18, 2, 0], [0, 10, 0], [0, 0, 0]]
    scores = confusion_scores(pooled, ("bg", "bone", "pores"))
    assert scores["iou"]["bg"] == pytest.approx(18 / 20) and scores["iou"]["bone"] == pytest.approx(10 / 12)
    assert scores["iou"]["pores"] is None
    assert scores["mean_iou"] == pytest.approx((18 / 20 + 10 / 12) / 2)
    assert scores["mean_iou_fg"] == pytest.approx(10 / 12)
    assert flat_scores(scores)["iou_bone"] == scores["iou"]["bone"]


def test_selection_modes_choose_the_validation_scans():
    fit, tests = FitConfig(val_fraction=0.3, early_stopping=2), ["t1", "t2"]
    config, validation = selection_inputs(fit, "heldout", tests)
    assert validation == tests and config.folds == 0
    config, validation = selection_inputs(fit, "inner", tests)
    assert validation == [] and config.val_fraction == 0.3
    config, validation = selection_inputs(fit, "last", tests)
    assert validation == [] and config.val_fraction == 0 and config.early_stopping == 0
    with pytest.raises(ConfigError, match="val-fraction"):
        selection_inputs(fit.with_(val_fraction=0.0), "inner", tests)


def test_tables():
    rows = [{"cell": "a", "iou": 0.51234, "n": None}, {"cell": "bb", "iou": 1e-7, "n": 3}]
    assert csv_text(rows).splitlines() == ["cell,iou,n", "a,0.51234,", "bb,1e-07,3"]
    text = text_table(rows, ["cell", "iou", "n"])
    assert text.splitlines()[1].split() == ["a", "0.5123", "-"]
    assert text_table(rows, ["cell", "n"], markdown=True).splitlines()[:2] == ["| cell | n |", "|---|---|"]
