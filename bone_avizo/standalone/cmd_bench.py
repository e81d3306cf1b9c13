"""``bench``: train a grid of architecture x encoder x patch size with one budget, score each on the
same test scans, and tabulate IoU against cost.

    python -m bone_avizo.standalone bench --config grid.json --images a.tif b.tif --labels a_l.tif b_l.tif \\
        --test-images c.tif --test-labels c_l.tif --output bench_study
    torchrun --nproc_per_node 4 -m bone_avizo.standalone bench ...     # cells spread over 4 processes

grid.json: {"arch": [...], "encoder": [...], "patch_size": [...], "fit": {common fit options},
"predict": {prediction options}, "selection": "heldout"}; see docs/studies.md.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bone_avizo.config import PredictConfig
from bone_avizo.errors import ConfigError
from bone_avizo.standalone.common import add_scan_arguments, parse_options, scan_pairs
from bone_avizo.standalone.cmd_cv import add_study_arguments, report, spare_study_inputs
from bone_avizo.standalone.spec_args import add_config_keys, add_spec_arguments, config_from_args

HELP = "benchmark a grid of architectures, encoders and patch sizes: IoU, size, speed and memory per cell"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = add_study_arguments(parser)
    add_scan_arguments(io, what="training scans")
    add_scan_arguments(io, "test-", what="test scans (never trained on; every cell is scored on them)")
    from bone_avizo.studies.bench import BENCH_SPEC, GRID_KEYS

    add_spec_arguments(parser, BENCH_SPEC)
    add_config_keys(parser, GRID_KEYS)
    config = next(a for a in parser._actions if a.dest == "config")
    config.metavar = "GRID"
    config.help = ("JSON or YAML grid: lists arch, encoder, patch_size; mappings fit (common fit options) and "
                   "predict (prediction options); study options; flags given on the command line override it")


def run(args: argparse.Namespace) -> int:
    from bone_avizo.studies.bench import OUTPUTS, BenchConfig, load_grid, merge_bench, run_bench, summary_table

    if args.merge_only:
        return report(merge_bench(Path(args.output)), summary_table, "bench")
    if not args.config:
        raise ConfigError("no grid: give --config GRID (a JSON/YAML file with arch, encoder and patch_size lists)")
    grid = load_grid(args.config, options=config_from_args(BenchConfig, args))
    train = scan_pairs(args.images, args.labels, args)
    tests = scan_pairs(args.test_images, args.test_labels, args, ("--test-images", "--test-labels"))
    if not train or not tests:
        raise ConfigError("give training scans (--images/--labels) and test scans (--test-images/--test-labels)")
    spare_study_inputs(args, OUTPUTS, {"--images/--labels": train, "--test-images/--test-labels": tests}, grid.fit)
    if args.predict_option:
        values = {**grid.predict.to_dict(), **parse_options(args.predict_option, "--predict-option")}
        grid = dataclasses.replace(grid, predict=PredictConfig.from_dict(values))
    from bone_avizo.standalone.progressbar import progress_bar

    with progress_bar("bench") as bar:
        result = run_bench(grid, train, tests, output=Path(args.output), overwrite=args.overwrite,
                           merge=not args.no_merge, wait_timeout_s=args.wait_timeout, progress=bar)
    return report(result, summary_table, "bench")
