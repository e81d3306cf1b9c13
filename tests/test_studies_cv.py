"""Cross-validation study: folds, scoring, summary, resume, ranks, model selection, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bone_avizo.config import FitConfig, IoUConfig, PredictConfig
from bone_avizo.errors import Cancelled, ConfigError, InputFileError, OutputExistsError
from bone_avizo.studies import CVConfig, StudyIncompleteError, merge_cv, run_cv
from bone_avizo.studies.tasks import read_json
from test_studies_tasks import no_rank_env, write_phantoms  # noqa: F401 - fixture

TINY = FitConfig(encoder_depth=3, decoder_channels=(8, 8, 8), patch_size=32, batch_size=2, steps_per_epoch=2,
                 patches_per_slice=2, val_slices=2, epochs=1, plot=False, device="cpu")
PREDICT = PredictConfig(backend="torch", device="cpu")


@pytest.fixture(autouse=True)
def one_process(no_rank_env):
    return no_rank_env


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Four 6 x 64 x 64 phantom scans (Bone-Pores labels) as .npy pairs."""
    return write_phantoms(tmp_path_factory.mktemp("cv_scans"), (6, 64, 64), range(4))


@pytest.fixture(scope="module")
def single(scans, tmp_path_factory):
    """A 2-fold study of the four scans, run in one process."""
    out = tmp_path_factory.mktemp("cv_single") / "study"
    return run_cv(scans, TINY, CVConfig(folds=2), output=out, predict=PREDICT)


def _confusions(summary_folder):
    return {r["name"]: [s["confusion"] for s in r["scans"]]
            for r in (read_json(p) for p in sorted(summary_folder.glob("tasks/*/result.json")))}


def test_every_scan_is_held_out_once_and_scored_like_iou_of_its_prediction(single, scans):
    from bone_avizo.metrics import compute_iou
    from bone_avizo.predict import predict_volume

    summary = single.summary
    assert single.tasks_run == ["r0_f0", "r0_f1"]
    assert sorted(r["scan"] for r in summary["scans"]) == ["scan0", "scan1", "scan2", "scan3"]
    for fold in summary["tasks"]:
        assert not set(fold["train_scans"]) & set(fold["test_scans"])
        assert sorted(fold["train_scans"] + fold["test_scans"]) == ["scan0", "scan1", "scan2", "scan3"]
        assert fold["fit"]["val_scans"] == fold["test_scans"]  # BONe-style selection by default
    result = read_json(single.output / "tasks" / "r0_f1" / "result.json")
    index = int(result["test_scans"][0][-1])
    labels = predict_volume(np.load(scans[index][0]), single.output / "tasks" / "r0_f1" / "model.safetensors",
                            PREDICT).labels
    expected = compute_iou(labels, np.load(scans[index][1]), IoUConfig(num_classes=3, per_slice=False))
    assert result["scans"][0]["confusion"] == expected.confusion.tolist()
    assert result["scans"][0]["mean_iou"] == pytest.approx(expected.mean_iou)


def test_summary_tables_and_figure(single):
    summary, paths = single.summary, single.paths
    folds = summary["folds"]
    assert [(f["replicate"], f["fold"]) for f in folds] == [(0, 0), (0, 1)]
    stats = {(r["level"], r["metric"]): r for r in summary["summary"]}
    values = [f["mean_iou"] for f in folds]
    assert stats[("folds", "mean_iou")]["mean"] == pytest.approx(np.mean(values))
    assert stats[("folds", "mean_iou")]["std"] == pytest.approx(np.std(values, ddof=1))
    assert stats[("scans", "iou_class_1")]["n"] == 4
    assert set(paths) == {"json", "scans_csv", "folds_csv", "replicates_csv", "summary_csv", "png"}
    header = paths["scans_csv"].read_text().splitlines()[0]
    assert header == "replicate,fold,scan,mean_iou,mean_iou_fg,iou_class_0,iou_class_1,iou_class_2"
    assert "train_seconds" in paths["folds_csv"].read_text().splitlines()[0]
    assert paths["summary_csv"].read_text().splitlines()[0] == "level,metric,mean,std,min,max,n"
    assert json.loads(paths["json"].read_text())["summary"] == summary["summary"]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert not list(single.output.glob("tasks/*/predictions/*"))


def test_a_rerun_skips_finished_folds_and_rescoring_needs_no_training(single, scans):
    before = single.paths["scans_csv"].read_text()
    (single.output / "tasks" / "r0_f1" / "result.json").unlink()
    model = single.output / "tasks" / "r0_f1" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    again = run_cv(scans, TINY, CVConfig(folds=2), output=single.output, predict=PREDICT)
    assert again.tasks_run == ["r0_f1"] and model.stat().st_mtime_ns == stamp
    assert again.paths["scans_csv"].read_text() == before
    assert run_cv(scans, TINY.with_(threads=1), CVConfig(folds=2), output=single.output,
                  predict=PREDICT).tasks_run == []


def test_two_ranks_and_a_merge_give_the_single_run(single, scans, tmp_path, one_process):
    """WORLD_SIZE=2 emulated by two invocations: rank 0 trains r0_f0 and waits in vain for r0_f1, rank 1
    trains r0_f1, the merge equals the one-process study."""
    out = tmp_path / "ranks"
    one_process.setenv("WORLD_SIZE", "2")
    one_process.setenv("RANK", "0")
    with pytest.raises(StudyIncompleteError, match="1 task.*: r0_f1;"):
        run_cv(scans, TINY, CVConfig(folds=2), output=out, predict=PREDICT, wait_timeout_s=0.1)
    with pytest.raises(StudyIncompleteError, match="no result yet: r0_f1"):
        merge_cv(out)
    one_process.setenv("RANK", "1")
    result = run_cv(scans, TINY, CVConfig(folds=2), output=out, predict=PREDICT, merge=False)
    assert result.tasks_run == ["r0_f1"] and result.summary is None
    merged = merge_cv(out)
    assert _confusions(out) == _confusions(single.output)
    for key in ("scans", "summary", "replicates", "class_names"):
        assert merged.summary[key] == single.summary[key]
    assert [f["mean_iou"] for f in merged.summary["folds"]] == [f["mean_iou"] for f in single.summary["folds"]]


@pytest.mark.slow
def test_an_interrupted_fold_resumes_from_its_checkpoint(scans, tmp_path):
    config = TINY.with_(epochs=2, deterministic=True)
    clean = run_cv(scans, config, CVConfig(folds=2), output=tmp_path / "clean", predict=PREDICT)
    calls = {"n": 0}

    def cancel_in_second_epoch_of_second_fold(done, total, message):
        calls["n"] += message.startswith("r0_f1") and "epoch 2" in message
        return calls["n"] >= 1

    with pytest.raises(Cancelled):
        run_cv(scans, config, CVConfig(folds=2), output=tmp_path / "cut", predict=PREDICT,
               progress=cancel_in_second_epoch_of_second_fold)
    assert (tmp_path / "cut" / "tasks" / "r0_f1" / "model.safetensors.ckpt").is_file()
    assert not (tmp_path / "cut" / "tasks" / "r0_f1" / "result.json").exists()
    resumed = run_cv(scans, config, CVConfig(folds=2), output=tmp_path / "cut", predict=PREDICT)
    assert resumed.tasks_run == ["r0_f1"]
    assert _confusions(tmp_path / "cut") == _confusions(clean.output)


def test_replicates_change_the_seed_and_reshuffle_the_folds(scans):
    from bone_avizo.studies.cv import cv_tasks
    from bone_avizo.studies.study import checked_specs

    scans = checked_specs(scans)
    same = cv_tasks(scans, TINY, CVConfig(folds=2, replicates=2), PREDICT)
    assert [t.name for t in same] == ["r0_f0", "r0_f1", "r1_f0", "r1_f1"]
    assert [t.definition["seed"] for t in same] == [0, 0, 1, 1]
    assert same[0].definition["test"] == same[2].definition["test"]
    shuffled = cv_tasks(scans, TINY, CVConfig(folds=4, replicates=3, reshuffle=True), PREDICT)
    orders = {tuple(t.definition["test"][0]["name"] for t in shuffled[r * 4:(r + 1) * 4]) for r in range(3)}
    assert len(orders) > 1


@pytest.mark.slow
def test_inner_selection_keeps_the_test_scans_unseen(scans, tmp_path):
    inner = run_cv(scans, TINY.with_(val_fraction=0.5), CVConfig(folds=2, selection="inner"),
                   output=tmp_path / "inner", predict=PREDICT)
    for task in inner.summary["tasks"]:
        assert task["fit"]["val_scans"] and not set(task["fit"]["val_scans"]) & set(task["test_scans"])
        assert set(task["fit"]["val_scans"]) <= set(task["train_scans"])


def test_bad_input_is_refused_before_any_work(scans, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(ConfigError, match="--folds 5 is larger than the number of scans \\(4\\)"):
        run_cv(scans, TINY, CVConfig(folds=5), output=out)
    with pytest.raises(ConfigError, match="'inner' needs at least 2 training scans"):
        run_cv(scans[:2], TINY, CVConfig(folds=2, selection="inner"), output=out)
    with pytest.raises(ConfigError, match="not as a fit option"):
        run_cv(scans, TINY.with_(folds=2), CVConfig(folds=2), output=out)
    with pytest.raises(InputFileError, match="does not exist"):
        run_cv(scans[:2] + [(tmp_path / "missing.npy", scans[0][1])], TINY, CVConfig(folds=2), output=out)
    with pytest.raises(ConfigError, match="unknown architecture"):
        run_cv(scans, TINY.with_(arch="nonet"), CVConfig(folds=2), output=out)
    assert not out.exists()


def test_another_study_in_the_folder_is_refused(single, scans):
    with pytest.raises(OutputExistsError, match="another study"):
        run_cv(scans, TINY.with_(lr=0.01), CVConfig(folds=2), output=single.output, predict=PREDICT)
