"""``cv`` and ``bench`` commands: flags, a tiny run, rerun, ranks with --no-merge/--merge-only, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bone_avizo.standalone.__main__ import build_parser, main
from test_studies_tasks import no_rank_env, write_phantoms  # noqa: F401 - fixture

TINY = ["--encoder-depth", "3", "--decoder-channels", "8", "8", "8", "--patch-size", "32", "--batch-size", "2",
        "--steps-per-epoch", "1", "--patches-per-slice", "2", "--val-slices", "2", "--epochs", "1", "--no-plot",
        "--device", "cpu", "--num-classes", "3", "--predict-option", "backend=torch"]


@pytest.fixture(autouse=True)
def one_process(no_rank_env):
    return no_rank_env


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three 6 x 48 x 64 phantom scans: (image paths, label paths)."""
    pairs = write_phantoms(tmp_path_factory.mktemp("cli_study_scans"), (6, 48, 64), range(30, 33), "c")
    return [str(i) for i, _ in pairs], [str(lab) for _, lab in pairs]


def _grid(tmp_path, **changes):
    grid = {"arch": ["unet"], "encoder": ["resnet18"], "patch_size": [32],
            "fit": {"encoder_depth": 3, "batch_size": 2, "steps_per_epoch": 1, "patches_per_slice": 2,
                    "epochs": 1, "plot": False, "device": "cpu", "num_classes": 3}, "predict": {"backend": "torch"}}
    grid.update(changes)
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return str(path)


def test_flags_parse():
    args = build_parser().parse_args(["cv", "--images", "a", "b", "--labels", "c", "d", "--folds", "2",
                                      "--replicates", "3", "--selection", "inner", "--reshuffle", "--output", "o",
                                      "--epochs", "4", "--arch", "fpn", "--predict-option", "tta=flips"])
    assert (args.folds, args.replicates, args.selection, args.reshuffle, args.epochs, args.arch) == (
        "2", "3", "inner", True, "4", "fpn")
    assert not hasattr(args, "fold")
    args = build_parser().parse_args(["bench", "--config", "g.json", "--images", "a", "--labels", "b",
                                      "--test-images", "c", "--test-labels", "d", "--output", "o", "--no-merge"])
    assert (args.config, args.test_images, args.no_merge, args.selection) == ("g.json", ["c"], True, None)


def test_cv_runs_reruns_and_merges(scans, tmp_path, capsys, one_process):
    images, labels = scans
    out = tmp_path / "cv"
    argv = ["cv", "--images", *images[:2], "--labels", *labels[:2], "--folds", "2", "--output", str(out), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["metric", "folds", "mean"]
    assert f"wrote {out / 'cv_boxplot.png'}" in printed
    assert printed.splitlines()[-1].startswith(f"disk use of {out}: ") and "checkpoints 0.0 MB" in printed
    assert not list(out.glob("tasks/*/*.ckpt")) and len(list(out.glob("tasks/*/model.safetensors"))) == 2
    scans_csv = (out / "cv_scans.csv").read_text()
    assert main(argv + ["--threads", "1"]) == 0  # nothing left to train
    assert (out / "cv_scans.csv").read_text() == scans_csv
    assert main(["cv", "--output", str(out), "--merge-only"]) == 0
    one_process.setenv("WORLD_SIZE", "2")
    one_process.setenv("RANK", "1")
    capsys.readouterr()
    assert main(argv + ["--no-merge"]) == 0
    assert "ran 0 task(s) (none)" in capsys.readouterr().out


def test_cv_keeps_checkpoints_when_asked(scans, tmp_path, capsys):
    images, labels = scans
    out = tmp_path / "cv"
    argv = ["cv", "--images", *images[:2], "--labels", *labels[:2], "--folds", "2", "--output", str(out), *TINY]
    assert main(argv + ["--keep-checkpoints"]) == 0
    assert len(list(out.glob("tasks/*/model.safetensors.ckpt"))) == 2
    assert "checkpoints 0.0 MB" not in capsys.readouterr().out
    assert main(argv) == 0  # the same study: nothing is trained again
    assert "ran" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--folds", "4"], "--folds 4 is larger than the number of scans (3)"),
    (["--folds", "1"], "folds (--folds): '1' is not valid"),
    (["--selection", "best"], "selection (--selection): 'best' is not valid; expected one of heldout, inner, last"),
    (["--arch", "nonet"], "unknown architecture 'nonet'"),
    (["--predict-option", "tta"], "--predict-option: 'tta' is not KEY=VALUE"),
])
def test_cv_bad_input_is_one_line_exit_2(scans, tmp_path, capsys, argv, message):
    images, labels = scans
    code = main(["cv", "--images", *images, "--labels", *labels, "--output", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (tmp_path / "o").exists()


def test_cv_needs_scans_and_a_merge_needs_a_study(tmp_path, capsys):
    assert main(["cv", "--output", str(tmp_path / "o")]) == 2
    assert "no scans" in capsys.readouterr().err
    assert main(["cv", "--output", str(tmp_path / "o"), "--merge-only"]) == 2
    assert "holds no study" in capsys.readouterr().err


def test_bench_runs_one_cell(scans, tmp_path, capsys):
    images, labels = scans
    out = tmp_path / "bench"
    code = main(["bench", "--config", _grid(tmp_path, arch=["unet", "unetplusplus"], encoder=["mit_b0"],
                                            fit={"batch_size": 2, "steps_per_epoch": 1, "patches_per_slice": 2,
                                                 "epochs": 1, "plot": False, "num_classes": 3}),
                 "--images", *images[:2], "--labels", *labels[:2], "--test-images", images[2],
                 "--test-labels", labels[2], "--output", str(out), "--selection", "last"])
    printed = capsys.readouterr().out
    assert code == 0
    lines = printed.splitlines()
    assert lines[0].split()[:3] == ["cell", "status", "mean_iou"]
    assert lines[1].split()[:2] == ["unet_mit_b0_p32", "done"] and lines[2].split()[:2] == [
        "unetplusplus_mit_b0_p32", "skipped"]
    assert json.loads((out / "study.json").read_text())["options"]["selection"] == "last"


@pytest.mark.parametrize("grid, message", [
    ({"arch": []}, "'arch' is an empty list"),
    ({"arch": ["unet", "nonet"]}, "unknown architecture 'nonet'"),
    ({"encoder": ["resnet18", "nope"]}, "unknown encoder 'nope'"),
    ({"fit": {"folds": 3}}, "'fit' sets folds"),
])
def test_bench_refuses_a_bad_grid_before_training(scans, tmp_path, capsys, grid, message):
    images, labels = scans
    code = main(["bench", "--config", _grid(tmp_path, **grid), "--images", *images[:2], "--labels", *labels[:2],
                 "--test-images", images[2], "--test-labels", labels[2], "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bench_needs_a_grid_and_test_scans(scans, tmp_path, capsys):
    images, labels = scans
    assert main(["bench", "--images", *images, "--labels", *labels, "--output", str(tmp_path / "o")]) == 2
    assert "no grid" in capsys.readouterr().err
    assert main(["bench", "--config", _grid(tmp_path), "--images", *images, "--labels", *labels,
                 "--output", str(tmp_path / "o")]) == 2
    assert "test scans" in capsys.readouterr().err
    assert main(["bench", "--config", str(tmp_path / "none.json"), "--images", *images, "--labels", *labels,
                 "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cv_under_torchrun_with_two_cpu_processes(scans, tmp_path):
    """Two real processes under torchrun (gloo is not needed: a file barrier); equal to one process."""
    images, labels = scans
    argv = ["--images", *images, "--labels", *labels, "--folds", "3", *TINY]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    "29517", "-m", "bone_avizo.standalone", "-q", "cv", *argv, "--output", str(tmp_path / "tr")],
                   check=True, env=env, capture_output=True, timeout=600)
    assert main(["cv", *argv, "--output", str(tmp_path / "one")]) == 0
    assert (tmp_path / "tr" / "cv_scans.csv").read_text() == (tmp_path / "one" / "cv_scans.csv").read_text()
