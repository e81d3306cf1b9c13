"""``cv``: scan-level k-fold cross-validation with replicates (train each fold, score its held-out scans).

    python -m bone_avizo.standalone cv --images a.tif b.tif c.tif d.tif e.tif --labels a_l.tif ... \\
        --folds 5 --replicates 3 --output cv_study --epochs 25 --patch-size 256
    python -m bone_avizo.standalone cv ... --output cv_study          # rerun: finished folds are skipped
    torchrun --nproc_per_node 4 -m bone_avizo.standalone cv ...       # folds spread over 4 processes
    python -m bone_avizo.standalone cv --output cv_study --merge-only # summarise what the ranks wrote
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bone_avizo.config import FIT_SPEC, FitConfig, PredictConfig, load_config_file
from bone_avizo.errors import ConfigError
from bone_avizo.standalone.common import (add_reader_option_arguments, add_scan_arguments, add_scan_folder_arguments,
                                         parse_options, training_scans)
from bone_avizo.standalone.progressbar import progress_bar
from bone_avizo.standalone.spec_args import add_spec_arguments, config_from_args

HELP = "k-fold cross-validation over scans: train every fold, score its held-out scans (IoU)"
log = logging.getLogger(__name__)

STUDY_FIT_SPEC = tuple(p for p in FIT_SPEC if p.name not in ("folds", "fold"))


def add_study_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The inputs/outputs every study command has; returns the group for more inputs."""
    io = parser.add_argument_group("inputs and outputs")
    add_reader_option_arguments(io)
    io.add_argument("--output", required=True, metavar="DIR",
                    help="study folder: one folder per task (model, logs, result) and the merged tables")
    io.add_argument("--overwrite", action="store_true",
                    help="replace a study of other options in --output (a rerun of the same study resumes)")
    io.add_argument("--predict-option", action="append", metavar="KEY=VALUE",
                    help="prediction option for scoring the test scans, e.g. backend=torch or tta=flips "
                         "(default: the fit's device and threads)")
    ranks = parser.add_argument_group("ranks (torchrun)")
    ranks.add_argument("--no-merge", action="store_true",
                       help="run this rank's tasks only; merge later with --merge-only")
    ranks.add_argument("--merge-only", action="store_true",
                       help="train nothing: merge the finished task results in --output into the tables")
    ranks.add_argument("--wait-timeout", type=float, default=0.0, metavar="SECONDS",
                       help="how long rank 0 waits for the other ranks' results before merging (0: no limit)")
    return io


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = add_study_arguments(parser)
    add_scan_arguments(io)
    add_scan_folder_arguments(io)
    from bone_avizo.studies.cv import CV_SPEC

    add_spec_arguments(parser, CV_SPEC + STUDY_FIT_SPEC)


def _scans(args: argparse.Namespace):
    scans = training_scans(args)
    if not scans:
        raise ConfigError("no scans: give --images and --labels (or --image-folders/--mask-folders)")
    return scans


def predict_config(args: argparse.Namespace, fit: FitConfig, file_values: dict | None = None) -> PredictConfig:
    """Prediction options: the fit's device and threads <- the config file's 'predict' <- --predict-option."""
    values = {"device": fit.device, "threads": fit.threads}
    section = (file_values or {}).get("predict") or {}
    if not isinstance(section, dict):
        raise ConfigError("the config file's 'predict' must be a mapping of prediction options")
    values.update(section)
    values.update(parse_options(args.predict_option, "--predict-option"))
    return PredictConfig.from_dict(values)


def report(result, table, label: str) -> int:
    """Print the merged table and the files written (rank 0), or what this rank did."""
    from bone_avizo.studies.study import describe_disk_use

    if result.summary is None:
        print(f"{label}: ran {len(result.tasks_run)} task(s) ({', '.join(result.tasks_run) or 'none'}) in "
              f"{result.output}; rank 0 merges (or run with --merge-only)")
        print(describe_disk_use(result.output))
        return 0
    print(table(result.summary), end="")
    for path in result.paths.values():
        print(f"wrote {path}")
    print(describe_disk_use(result.output))
    return 0


def run(args: argparse.Namespace) -> int:
    from bone_avizo.studies.cv import CVConfig, merge_cv, run_cv, summary_table

    if args.merge_only:
        return report(merge_cv(Path(args.output)), summary_table, "cv")
    file_values = load_config_file(args.config) if args.config else {}
    fit = config_from_args(FitConfig, args, folds=0, fold=0)
    options = config_from_args(CVConfig, args)
    predict = predict_config(args, fit, file_values)
    with progress_bar("cv") as bar:
        result = run_cv(_scans(args), fit, options, output=Path(args.output), predict=predict,
                        overwrite=args.overwrite, merge=not args.no_merge, wait_timeout_s=args.wait_timeout,
                        progress=bar)
    return report(result, summary_table, "cv")
