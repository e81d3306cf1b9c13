"""--config files: unknown keys are refused (with the closest valid key and the command that has it);
per-command sections let one file serve several commands; a run's record is a valid config file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.errors import ConfigError
from bone_avizo.standalone.__main__ import build_parser
from bone_avizo.standalone.spec_args import config_from_args

REQUIRED = {"fit": ["--images", "a.tif", "--labels", "b.tif", "--output", "m.safetensors"],
            "predict": ["--model", "m.safetensors", "--input", "a.tif", "--output", "l.tif"],
            "cv": ["--output", "study"], "iou": ["--prediction", "a.tif", "--reference", "b.tif"], "phantom": ["--output", "p.tif", "--labels", "pl.tif"]}


def _config(tmp_path, command, config_cls, data, *flags):
    path = tmp_path / "options.json"
    path.write_text(json.dumps(data))
    args = build_parser().parse_args([command, *REQUIRED[command], "--config", str(path), *flags])
    return config_from_args(config_cls, args)


@pytest.mark.parametrize("command, config_cls, data, message", [
    ("fit", FitConfig, {"sead": 5}, r"'sead' is not an option of fit; did you mean 'seed'\?"),
    ("fit", FitConfig, {"epoch": 50}, r"'epoch' is not an option of fit; did you mean 'epochs'\?"),
    ("predict", PredictConfig, {"epochs": 50},
     r"'epochs' is not an option of predict; it is an option of fit, cv: put it in a 'fit:' section"),
    ("predict", PredictConfig, {"epoch": 50},
     r"'epoch' is not an option of predict; did you mean 'epochs' \(an option of fit: put it in a 'fit:' section\)\?"),
    ("predict", PredictConfig, {"predict": {"tile-size": 64, "tta": "flips", "blurb": 1}},
     r"'blurb' in section 'predict' is not an option of predict; --help lists the options"),
    ("predict", PredictConfig, {"predict": 3}, r"section 'predict' must be a mapping"),
])
def test_unknown_keys_are_refused(tmp_path, command, config_cls, data, message):
    with pytest.raises(ConfigError, match=r"config file .*options.json: " + message):
        _config(tmp_path, command, config_cls, data)


SHARED = {"seed": 7, "threads": 1, "device": "cpu",
          "fit": {"epochs": 3, "patch_size": 64, "threads": 2},
          "predict": {"tile_size": 512, "tta": "flips"},
          "iou": {"per_slice": False}}


def test_one_file_with_sections_serves_several_commands(tmp_path):
    """Top-level keys apply to every command that has them; a command's section overrides them; other
    commands' sections are left to those commands; flags override everything."""
    fit = _config(tmp_path, "fit", FitConfig, SHARED)
    assert (fit.seed, fit.epochs, fit.patch_size, fit.threads, fit.device) == (7, 3, 64, 2, "cpu")
    predict = _config(tmp_path, "predict", PredictConfig, {k: v for k, v in SHARED.items() if k != "seed"})
    assert (predict.tile_size, predict.tta, predict.threads, predict.device) == (512, "flips", 1, "cpu")
    assert _config(tmp_path, "predict", PredictConfig, SHARED["predict"], "--tta", "none").tta == "none"
    with pytest.raises(ConfigError, match="'seed' is not an option of predict; it is an option of fit"):
        _config(tmp_path, "predict", PredictConfig, SHARED)


def test_cv_reads_the_fit_section_below_its_own(tmp_path):
    from bone_avizo.studies.cv import CVConfig

    data = {"fit": {"epochs": 3, "folds": 5, "lr": 0.01}, "cv": {"epochs": 4, "replicates": 2}}
    fit = _config(tmp_path, "cv", FitConfig, data)
    assert (fit.epochs, fit.lr) == (4, 0.01)  # the fit section's 'folds' is fit's own, not a study option
    assert _config(tmp_path, "cv", CVConfig, data).replicates == 2


def test_a_run_record_is_a_config_file(tmp_path):
    """A record keeps its options; its other keys (command, paths, timings) are not options."""
    record = {"command": "fit", "version": "1", "output": "m.safetensors", "seconds": 3.0,
              "options": {**FitConfig(epochs=2).to_dict(), "seed": 4}}
    assert _config(tmp_path, "fit", FitConfig, record) == FitConfig(epochs=2, seed=4)
    cv = _config(tmp_path, "cv", FitConfig, record)  # fit's own 'fold'/'folds' are left to fit
    assert (cv.epochs, cv.seed, cv.folds) == (2, 4, 0)
    with pytest.raises(ConfigError, match="records a fit run, whose options are not predict's; give it to fit"):
        _config(tmp_path, "predict", PredictConfig, record)
    record["options"]["sead"] = 1  # a key of no command is not in a record that a run wrote
    with pytest.raises(ConfigError, match="'sead' is not an option of fit; did you mean 'seed'"):
        _config(tmp_path, "fit", FitConfig, record)


def test_the_shared_example_of_the_docs_serves_fit_predict_iou_and_cv(tmp_path):
    import yaml

    from bone_avizo.config import IoUConfig
    from bone_avizo.studies.cv import CVConfig

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    example = yaml.safe_load(text.split("```yaml\nthreads: 8\n", 1)[1].split("```", 1)[0])
    example = {"threads": 8, **example}
    assert _config(tmp_path, "fit", FitConfig, example) == FitConfig(threads=8, epochs=50, patch_size=256, seed=3)
    assert _config(tmp_path, "predict", PredictConfig, example) == PredictConfig(threads=8, tile_size=512, tta="flips")
    assert _config(tmp_path, "iou", IoUConfig, example) == IoUConfig(threads=8, per_slice=False)
    assert _config(tmp_path, "cv", FitConfig, example).epochs == 50
    assert _config(tmp_path, "cv", CVConfig, example) == CVConfig()
