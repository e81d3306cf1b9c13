"""Every example config in standalone/configs/ is valid: it loads through the real config classes and
through the command's own parser, names only known options, and each YAML says what its JSON says."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bone_avizo.config import FitConfig, IoUConfig, PredictConfig, load_config_file
from bone_avizo.models.registry import canonical_arch, canonical_encoder
from bone_avizo.standalone.__main__ import build_parser
from bone_avizo.standalone.spec_args import config_from_args
from test_cli_contract import subcommand_parser

CONFIGS = Path(__file__).resolve().parents[1] / "standalone" / "configs"
TASK_CONFIGS = {"fit": FitConfig, "predict": PredictConfig, "iou": IoUConfig}


def test_every_command_has_an_example_and_nothing_else_is_there():
    names = sorted(p.name for p in CONFIGS.iterdir())
    assert names == ["bench.json", "cv.json", "fit.json", "fit.yaml", "iou.json", "predict.json", "predict.yaml"]


def _options(path: Path) -> dict:
    data = load_config_file(path)
    return data.get("options", data)


@pytest.mark.parametrize("name", ["fit.json", "fit.yaml", "predict.json", "predict.yaml", "iou.json"])
def test_task_config_loads_through_its_config_class(name):
    config_cls = TASK_CONFIGS[name.split(".")[0]]
    options = _options(CONFIGS / name)
    config = config_cls.from_dict(options)  # unknown keys and values out of range are refused here
    assert {k: config.to_dict()[k] for k in options} == {k: _listed(v) for k, v in options.items()}


def _listed(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("task", ["fit", "predict"])
def test_yaml_and_json_examples_agree(task):
    assert _options(CONFIGS / f"{task}.yaml") == _options(CONFIGS / f"{task}.json")


def test_fit_example_names_a_real_architecture_and_encoder():
    options = _options(CONFIGS / "fit.json")
    assert (canonical_arch(options["arch"]), canonical_encoder(options["encoder"])) == ("unet", "resnet18")


@pytest.mark.parametrize("name", ["fit.json", "fit.yaml", "predict.json", "predict.yaml", "iou.json"])
def test_task_config_through_the_command_line(name, tmp_path):
    """`bone-avizo <task> --config FILE` gives the file's values, and a flag overrides one of them."""
    task = name.split(".")[0]
    config_cls = TASK_CONFIGS[task]
    required = {"fit": ["--images", "a.tif", "--labels", "b.tif", "--output", "m.safetensors"],
                "predict": ["--model", "m.safetensors", "--input", "a.tif", "--output", "l.tif"],
                "iou": ["--prediction", "a.tif", "--reference", "b.tif"]}[task]
    flag, value, field = {"fit": ("--epochs", "3", "epochs"), "predict": ("--overlap", "0.5", "overlap"),
                          "iou": ("--slab-slices", "8", "slab_slices")}[task]
    parser = build_parser()
    from_file = config_from_args(config_cls, parser.parse_args([task, *required, "--config", str(CONFIGS / name)]))
    assert from_file == config_cls.from_dict(_options(CONFIGS / name))
    overridden = config_from_args(config_cls, parser.parse_args([task, *required, "--config", str(CONFIGS / name),
                                                                 flag, value]))
    assert overridden == from_file.with_(**{field: config_cls.from_dict({field: value}).to_dict()[field]})


def test_cv_example_through_the_cv_command(tmp_path):
    subcommand_parser("cv")  # skips until `bone-avizo cv` exists
    from bone_avizo.standalone.cmd_cv import predict_config
    from bone_avizo.studies.cv import CVConfig

    path = CONFIGS / "cv.json"
    data = load_config_file(path)
    known = {p.name for p in FitConfig.SPEC} | {p.name for p in CVConfig.SPEC} | {"predict"}
    assert sorted(set(data) - known) == []  # the command would silently ignore a misspelt option
    args = build_parser().parse_args(["cv", "--config", str(path), "--output", str(tmp_path / "study")])
    fit = config_from_args(FitConfig, args, folds=0, fold=0)
    options = config_from_args(CVConfig, args)
    predict = predict_config(args, fit, data)
    assert (options.folds, options.replicates, fit.epochs, fit.patch_size) == (5, 3, 25, 256)
    assert predict == PredictConfig.from_dict({"device": fit.device, "threads": fit.threads, **data["predict"]})


def test_bench_example_through_the_bench_command(tmp_path):
    subcommand_parser("bench")  # skips until `bone-avizo bench` exists
    from bone_avizo.studies.bench import BenchConfig, load_grid

    path = CONFIGS / "bench.json"
    args = build_parser().parse_args(["bench", "--config", str(path), "--output", str(tmp_path / "study")])
    grid = load_grid(args.config, options=config_from_args(BenchConfig, args))
    data = json.loads(path.read_text())
    assert len(grid.cells) == len(data["arch"]) * len(data["encoder"]) * len(data["patch_size"])
    assert grid.fit == FitConfig.from_dict(data["fit"])


def test_every_bench_example_cell_can_be_built():
    from bone_avizo.models import build_model

    data = json.loads((CONFIGS / "bench.json").read_text())
    for arch in data["arch"]:
        for encoder in data["encoder"]:
            assert build_model(arch, encoder, in_channels=1, num_classes=3) is not None
