"""The CLI contract users' scripts depend on (docs/cli.md): stable flag names, complete --help,
one-line refusals of bad input with exit code 2 naming the flag, progress bars and -q/-v/-vv."""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys

import numpy as np
import pytest

from pathlib import Path

from bone_avizo.demo import default_model_path
from bone_avizo.phantom import PhantomConfig, make_phantom
from bone_avizo.standalone.__main__ import COMMANDS, build_parser, main

CONFIGS = Path(__file__).resolve().parents[1] / "standalone" / "configs"
STABLE_FLAGS = {
    "predict": ["--model", "--input", "--output", "--overwrite"],
    "fit": ["--images", "--labels", "--output", "--val-images", "--val-labels", "--resume", "--arch", "--encoder",
            "--patch-size", "--epochs", "--batch-size", "--lr", "--loss", "--optimizer", "--seed", "--planes",
            "--in-channels"],
    "iou": ["--prediction", "--reference", "--report"],
    "demo": ["--output"],
    "info": [],
}
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING) bone_avizo")
TINY_FIT = ["--encoder-depth", "3", "--decoder-channels", "8", "8", "8", "--patch-size", "32", "--batch-size", "2",
            "--steps-per-epoch", "2", "--patches-per-slice", "2", "--val-slices", "2", "--no-plot", "--epochs", "1"]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of ``parser`` by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def subcommand_parser(command: str) -> argparse.ArgumentParser:
    """The real parser of ``bone-avizo <command>``; skips when the command is not there yet."""
    parsers = subcommands(build_parser())
    if command not in parsers:
        pytest.skip(f"bone-avizo {command} is not available yet (bone_avizo/standalone/cmd_{command}.py)")
    return parsers[command]


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny phantom scans (8 x 48 x 64) with labels, as .npy files."""
    folder = tmp_path_factory.mktemp("contract")
    files = {}
    for seed in (1, 2):
        image, labels = make_phantom(PhantomConfig(shape=(8, 48, 64), seed=seed))
        files[f"image{seed}"] = folder / f"scan{seed}.npy"
        files[f"labels{seed}"] = folder / f"scan{seed}_labels.npy"
        np.save(files[f"image{seed}"], image.array)
        np.save(files[f"labels{seed}"], labels.array)
    return {key: str(path) for key, path in files.items()}


# -- flags and --help -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(STABLE_FLAGS))
def test_stable_flags_exist(command):
    flags = long_flags(subcommand_parser(command))
    assert [f for f in STABLE_FLAGS[command] if f not in flags] == []


def _help_targets():
    for command in COMMANDS:
        yield [command]
    yield ["avizo", "install"]
    yield ["avizo", "uninstall"]
    yield ["avizo", "python-help"]


@pytest.mark.parametrize("words", list(_help_targets()), ids=" ".join)
def test_help_exits_0_and_mentions_every_flag(words, capsys):
    parser = subcommand_parser(words[0])
    for word in words[1:]:
        parser = subcommands(parser)[word]
    assert main([*words, "--help"]) == 0
    text = capsys.readouterr().out
    assert [f for f in long_flags(parser) if f not in text] == []
    for name in subcommands(parser):  # nested actions (avizo install|uninstall|python-help)
        assert name in text


# -- bad input: exit 2, one line naming the flag ------------------------------------------------------
def refuses(capsys, argv: list[str], *expected: str) -> None:
    """``bone-avizo argv`` exits 2 with a single stderr line that contains every expected text."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    message = [line for line in err.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert "Traceback" not in err and len(message) == 1, err
    err = message[0]
    for text in expected:
        assert text in err, (text, err)


def _model():
    return str(default_model_path())


def test_predict_refuses_bad_input(tiny, tmp_path, capsys):
    io = ["--model", _model(), "--input", tiny["image1"], "--output", tmp_path / "p.tif"]
    refuses(capsys, ["predict", *io[:3], tmp_path / "missing.tif", *io[4:]], "--input", "missing.tif")
    refuses(capsys, ["predict", *io, "--tile-sise", "64"], "--tile-sise")
    refuses(capsys, ["predict", *io, "--overlap", "0.95"], "--overlap", "0.0..0.9")
    refuses(capsys, ["predict", *io[:5], tmp_path / "no" / "p.tif"], "--output", "does not exist")
    assert not list(tmp_path.iterdir())


def _fit_io(tiny, tmp_path):
    return ["--images", tiny["image1"], "--labels", tiny["labels1"], "--output", tmp_path / "m.safetensors"]


def test_fit_refuses_unknown_options_and_values_out_of_range(tiny, tmp_path, capsys):
    io = _fit_io(tiny, tmp_path)
    refuses(capsys, ["fit", *io, "--epoch", "3"], "--epoch")  # abbreviations are refused too
    refuses(capsys, ["fit", *io, "--patch-size", "48"], "--patch-size", "32..2048", "multiple of 32")
    refuses(capsys, ["fit", *io, "--in-channels", "4"], "--in-channels", "odd")
    assert not list(tmp_path.iterdir())


def test_iou_refuses_bad_input(tiny, tmp_path, capsys):
    pair = ["--prediction", tiny["labels1"], "--reference", tiny["labels2"]]
    refuses(capsys, ["iou", *pair[:3], tmp_path / "missing.npy"], "--reference", "missing.npy")
    refuses(capsys, ["iou", *pair, "--reprot", tmp_path / "r.json"], "--reprot")
    refuses(capsys, ["iou", *pair, "--num-classes", "300"], "--num-classes", "1..256")
    assert not list(tmp_path.iterdir())


def test_info_refuses_bad_input(tiny, tmp_path, capsys):
    refuses(capsys, ["info", tmp_path / "missing.npy"], "PATH", "missing.npy")
    refuses(capsys, ["info", tiny["image1"], "--jsn"], "--jsn")
    refuses(capsys, ["info", tiny["image1"], "--input-option", "dataset"], "--input-option", "KEY=VALUE")


def test_export_refuses_bad_input(tmp_path, capsys):
    out = ["--output", tmp_path / "m.onnx"]
    refuses(capsys, ["export", "--model", tmp_path / "missing.safetensors", *out], "--model", "missing.safetensors")
    refuses(capsys, ["export", "--model", _model(), *out, "--opset-version", "17"], "--opset-version")
    refuses(capsys, ["export", "--model", _model(), *out, "--patch-size", "-32"], "--patch-size", "32..4096")
    refuses(capsys, ["export", "--model", _model(), *out, "--opset", "2"], "--opset", "11..")
    refuses(capsys, ["export", "--model", _model(), "--output", tmp_path / "no" / "m.onnx"], "--output")
    assert not list(tmp_path.iterdir())


def test_phantom_refuses_bad_input(tmp_path, capsys):
    out = ["--output", tmp_path / "ph.npy", "--labels", tmp_path / "lab.npy", "--shape", "7", "32", "29"]
    refuses(capsys, ["phantom", *out[:3], tmp_path / "no" / "lab.npy", *out[4:]], "--labels", "does not exist")
    refuses(capsys, ["phantom", *out, "--sead", "3"], "--sead")
    refuses(capsys, ["phantom", *out, "--slab-slices", "0"], "--slab-slices", "1..65536")
    refuses(capsys, ["phantom", *out, "--noise", "-0.5"], "--noise")
    assert not list(tmp_path.iterdir())


def test_demo_refuses_bad_input(tmp_path, capsys):
    out = ["--output", tmp_path / "demo", "--shape", "4", "64", "64"]
    refuses(capsys, ["demo", *out, "--model", tmp_path / "missing.safetensors"], "--model", "missing.safetensors")
    refuses(capsys, ["demo", *out, "--sede", "1"], "--sede")
    refuses(capsys, ["demo", *out, "--seed", "-1"], "--seed", "0..")
    refuses(capsys, ["demo", *out, "--device", "gpu7"], "--device")
    assert not list(tmp_path.iterdir())


def test_avizo_refuses_bad_input(tmp_path, capsys):
    root = ["--avizo-root", tmp_path / "missing"]
    refuses(capsys, ["avizo", "install", *root, "--dry-run"], "--avizo-root", "missing")
    refuses(capsys, ["avizo", "install", *root, "--dry-runn"], "--dry-runn")
    refuses(capsys, ["avizo", "reinstall", *root], "ACTION", "reinstall")


def test_cv_refuses_bad_input(tiny, tmp_path, capsys):
    subcommand_parser("cv")
    scans = ["--images", tiny["image1"], tiny["image2"], "--labels", tiny["labels1"], tiny["labels2"],
             "--output", tmp_path / "cv"]
    refuses(capsys, ["cv", *scans[:2], tmp_path / "missing.npy", *scans[3:]], "missing.npy", "does not exist")
    refuses(capsys, ["cv", *scans, "--foldz", "2"], "--foldz")
    refuses(capsys, ["cv", *scans, "--folds", "1"], "--folds", "2..1000")
    refuses(capsys, ["cv", *scans, "--folds", "3"], "--folds", "number of scans")
    assert not list(tmp_path.iterdir())


def test_bench_refuses_bad_input(tiny, tmp_path, capsys):
    subcommand_parser("bench")
    grid = CONFIGS / "bench.json"
    scans = ["--images", tiny["image1"], "--labels", tiny["labels1"], "--test-images", tiny["image2"],
             "--test-labels", tiny["labels2"], "--output", tmp_path / "bench"]
    refuses(capsys, ["bench", "--config", tmp_path / "missing.json", *scans], "config file", "missing.json")
    refuses(capsys, ["bench", "--config", grid, *scans[:5], tmp_path / "missing.npy", *scans[6:]], "missing.npy")
    refuses(capsys, ["bench", "--config", grid, *scans, "--gird", "x"], "--gird")
    refuses(capsys, ["bench", "--config", grid, *scans, "--selection", "best"], "--selection", "heldout")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["fit", "cv"])
def test_a_missing_scan_is_reported_with_its_flag(command, tiny, tmp_path, capsys):
    subcommand_parser(command)
    refuses(capsys, [command, "--images", tmp_path / "missing.npy", tiny["image2"], "--labels", tiny["labels1"],
                     tiny["labels2"], "--output", tmp_path / "out"], "--images", "missing.npy")


# -- progress bars and verbosity ----------------------------------------------------------------------
class RecordingBar:
    """Stands in for tqdm.tqdm: records the totals and counts the CLI's progress callback sets."""

    instances: list["RecordingBar"] = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.updates, self.closed = total, 0, 0, False
        RecordingBar.instances.append(self)

    def reset(self, total=None):
        self.total, self.n = total, 0

    def set_description(self, text, refresh=True):
        self.description = text

    def update(self, steps=1):
        self.n += steps
        self.updates += 1

    def close(self):
        self.closed = True

    @classmethod
    def write(cls, text, file=None):
        print(text, file=file or sys.stderr)


@pytest.fixture
def bars(monkeypatch):
    """tqdm.tqdm replaced by RecordingBar; the list of bars created."""
    import tqdm

    RecordingBar.instances = []
    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    return RecordingBar.instances


def as_terminal(monkeypatch, answer: bool = True) -> None:
    """The current sys.stderr (capsys's own during the test call) says whether it is a terminal."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: answer, raising=False)


def _run_with_bar(bars, monkeypatch, capsys, argv) -> RecordingBar:
    as_terminal(monkeypatch)
    code = main([str(a) for a in argv])
    assert code == 0, capsys.readouterr().err
    assert len(bars) == 1
    bar = bars[0]
    assert bar.updates > 0 and bar.n == bar.total and bar.closed
    return bar


def test_phantom_draws_a_progress_bar_on_a_terminal(bars, monkeypatch, tmp_path, capsys):
    bar = _run_with_bar(bars, monkeypatch, capsys, ["phantom", "--output", tmp_path / "p.npy", "--labels", tmp_path / "l.npy",
                                           "--shape", "7", "32", "29", "--slab-slices", "2"])
    assert bar.total == 7 and bar.updates == 4


def test_iou_draws_a_progress_bar_on_a_terminal(bars, monkeypatch, tiny, capsys):
    _run_with_bar(bars, monkeypatch, capsys, ["iou", "--prediction", tiny["labels1"], "--reference", tiny["labels2"]])


def test_predict_draws_a_progress_bar_on_a_terminal(bars, monkeypatch, tiny, tmp_path, capsys):
    _run_with_bar(bars, monkeypatch, capsys, ["predict", "--model", _model(), "--input", tiny["image1"],
                                     "--output", tmp_path / "p.npy", "--device", "cpu"])


def test_fit_draws_a_progress_bar_on_a_terminal(bars, monkeypatch, tiny, tmp_path, capsys):
    _run_with_bar(bars, monkeypatch, capsys, ["fit", "--images", tiny["image1"], "--labels", tiny["labels1"],
                                     "--val-images", tiny["image2"], "--val-labels", tiny["labels2"],
                                     "--output", tmp_path / "m.safetensors", "--device", "cpu", *TINY_FIT])


def test_demo_draws_a_progress_bar_on_a_terminal(bars, monkeypatch, tmp_path, capsys):
    _run_with_bar(bars, monkeypatch, capsys, ["demo", "--output", tmp_path, "--shape", "4", "64", "64", "--device", "cpu"])


def test_no_bar_with_quiet_or_when_stderr_is_not_a_terminal(bars, tmp_path, monkeypatch, capsys):
    out = ["--output", tmp_path / "p.npy", "--labels", tmp_path / "l.npy", "--shape", "7", "32", "29"]
    as_terminal(monkeypatch)
    assert main(["-q", "phantom", *map(str, out)]) == 0
    assert bars == [] and capsys.readouterr().err == ""
    as_terminal(monkeypatch, False)
    assert main(["phantom", *map(str, out), "--overwrite"]) == 0
    assert bars == []
    assert re.search(r"^INFO bone_avizo\.phantom: phantom \(7, 32, 29\)", capsys.readouterr().err, re.M)


@pytest.mark.parametrize("flags,package_level,root_level", [
    ([], logging.INFO, None), (["-q"], logging.WARNING, None), (["-v"], logging.DEBUG, None),
    (["-vv"], logging.DEBUG, logging.DEBUG)])
def test_verbosity_flags_set_the_log_levels_for_one_command(flags, package_level, root_level, monkeypatch, capsys):
    from bone_avizo.standalone import cmd_info

    seen = {}

    def record(args):
        seen["package"] = logging.getLogger("bone_avizo").getEffectiveLevel()
        seen["root"] = logging.getLogger().level
        logging.getLogger("bone_avizo.test").debug("a debug message")
        logging.getLogger("bone_avizo.test").info("an info message")
        return 0

    root_before = logging.getLogger().level
    monkeypatch.setattr(cmd_info, "run", record)
    assert main([*flags, "info"]) == 0
    assert seen["package"] == package_level
    assert seen["root"] == (root_before if root_level is None else root_level)
    err = capsys.readouterr().err
    assert ("DEBUG bone_avizo.test: a debug message" in err) == (package_level == logging.DEBUG)
    assert ("INFO bone_avizo.test: an info message" in err) == (package_level <= logging.INFO)
    assert logging.getLogger().level == root_before and logging.getLogger("bone_avizo").handlers == []


# -- resolved configuration files ---------------------------------------------------------------------
def test_phantom_records_its_options_and_the_record_reproduces_it(tmp_path, capsys):
    first = ["--output", tmp_path / "a.tif", "--labels", tmp_path / "a_labels.tif"]
    assert main(["-q", "phantom", *map(str, first), "--shape", "7", "32", "29", "--seed", "5", "--noise", "0.2"]) == 0
    record = tmp_path / "a.tif.config.json"
    options = json.loads(record.read_text())["options"]
    assert (options["shape"], options["seed"], options["noise"]) == ([7, 32, 29], 5, 0.2)
    again = ["--output", tmp_path / "b.tif", "--labels", tmp_path / "b_labels.tif", "--config", record]
    assert main(["-q", "phantom", *map(str, again)]) == 0
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_iou_records_its_inputs_and_options_beside_the_report(tiny, tmp_path, capsys):
    report = tmp_path / "iou.json"
    assert main(["iou", "--prediction", tiny["labels1"], "--reference", tiny["labels2"], "--report", str(report),
                 "--num-classes", "3"]) == 0
    record = json.loads((tmp_path / "iou.json.config.json").read_text())
    assert record["command"] == "iou" and record["options"]["num_classes"] == 3
    assert record["inputs"] == [{"prediction": tiny["labels1"], "reference": tiny["labels2"], "roi": None}]


def test_debug_adds_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    argv = ["export", "--model", str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "m.onnx")]
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "InputFileError" in err
    assert err.strip().splitlines()[-1] == f"bone-avizo export: error: --model: {tmp_path}/missing.safetensors " \
                                           "does not exist; check the path"


def test_verbose_shows_the_options_a_command_runs_with(tmp_path, capsys):
    argv = ["phantom", "--output", str(tmp_path / "p.npy"), "--labels", str(tmp_path / "l.npy"), "--shape", "7", "32",
            "29", "--seed", "4"]
    assert main(["-v", *argv]) == 0
    assert re.search(r"^DEBUG .*PhantomConfig: \{'shape': \[7, 32, 29\], 'seed': 4,", capsys.readouterr().err, re.M)


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """`bone-avizo info ... | head -1`: when stdout's reader goes away the command stops like a Unix tool
    (exit 141, as if ended by SIGPIPE), without an 'internal error' or a traceback."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "bone_avizo.standalone", "info", "--encoders"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    process.stdout.close()  # before the command writes anything
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert err == "", err


def test_resume_help_says_when_to_give_it(capsys):
    """predict --resume only works when the first run had it; fit checkpoints every run by itself."""
    from bone_avizo.standalone.__main__ import main

    for command, words in (("predict", "give it on the first run too"), ("fit", "no flag needed on the first run")):
        assert main([command, "--help"]) == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert words in help_text, help_text


def test_a_run_record_on_a_full_disk_is_a_one_line_error(tmp_path, monkeypatch):
    import errno
    from pathlib import Path as _Path

    from bone_avizo.errors import OutputWriteError
    from bone_avizo.standalone.common import write_json_atomic

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_Path, "write_text", full)
    with pytest.raises(OutputWriteError, match="No space left on device; check permissions and free space"):
        write_json_atomic(tmp_path / "labels.tif.config.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
