"""``fit``: train a segmentation model on labelled scans (DLFit).

    python -m bone_avizo.standalone fit --images a.tif b.tif c.tif --labels a_l.tif b_l.tif c_l.tif \\
        --output bone.safetensors --epochs 25 --patch-size 256
    python -m bone_avizo.standalone fit --output bone.safetensors --resume      # after an interruption
    torchrun --nproc_per_node 4 -m bone_avizo.standalone fit ...                # several GPUs / nodes
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bone_avizo import __version__
from bone_avizo.config import FIT_SPEC, FitConfig
from bone_avizo.errors import ConfigError
from bone_avizo.runtime import ranks_from_env
from bone_avizo.standalone.common import (add_reader_option_arguments, add_scan_arguments, add_scan_folder_arguments,
                                         resolved_config_path, scan_pairs, spare_inputs, training_scans,
                                         write_json_atomic)
from bone_avizo.standalone.progressbar import progress_bar
from bone_avizo.standalone.spec_args import add_spec_arguments, config_from_args

HELP = "train a segmentation model on labelled scans"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and outputs")
    add_scan_arguments(io, what="training scans")
    io.add_argument("--val-images", nargs="+", metavar="VOLUME", default=[],
                    help="validation scans (otherwise a scan-level split of --images)")
    io.add_argument("--val-labels", nargs="+", metavar="VOLUME", default=[],
                    help="label volumes of the validation scans")
    add_scan_folder_arguments(io)
    add_reader_option_arguments(io)
    io.add_argument("--output", required=True, metavar="MODEL",
                    help="model file to write (.safetensors); checkpoint and logs go beside it")
    io.add_argument("--resume", action="store_true",
                    help="continue the interrupted run from the checkpoint beside --output, which every run writes "
                         "after each epoch (no flag needed on the first run); scans and options default to the "
                         "checkpoint's")
    io.add_argument("--overwrite", action="store_true", help="replace an existing model file and checkpoint")
    add_spec_arguments(parser, FIT_SPEC)


def _inputs(args: argparse.Namespace):
    train = training_scans(args)
    validation = scan_pairs(args.val_images, args.val_labels, args, ("--val-images", "--val-labels"))
    return train, validation


def _config(args: argparse.Namespace, saved: dict | None) -> FitConfig:
    if saved is None:
        return _channels_of_the_weights(config_from_args(FitConfig, args), args)
    values = dict(saved)
    given = config_from_args(FitConfig, args).to_dict()
    for param in FIT_SPEC:
        if getattr(args, param.name, None) is not None:
            values[param.name] = given[param.name]
    return FitConfig.from_dict(values)


def _channels_of_the_weights(config: FitConfig, args: argparse.Namespace) -> FitConfig:
    """Fine-tuning a 2.5D model file without --in-channels: take the file's stack of slices (a 2D run
    could not start from it)."""
    from bone_avizo.models.modelfile import read_metadata

    weights = Path(str(config.weights))
    if args.in_channels is not None or config.in_channels != 1 or not weights.is_file():
        return config
    channels = read_metadata(weights).in_channels
    if channels == 1:
        return config
    log.info("--in-channels %d, as the model file %s takes", channels, weights)
    return FitConfig.from_dict({**config.to_dict(), "in_channels": channels})


def _spare_inputs(args: argparse.Namespace, output: Path, train, validation, config: FitConfig) -> None:
    """Refuse a model file, checkpoint or log that would replace a training scan, the weights or the config."""
    from bone_avizo.fit.checkpoint import side_files

    weights = Path(str(config.weights))
    spare_inputs(args, {"--output": [output, resolved_config_path(output), *side_files(output)]},
                 {"--images": [s.image for s in train], "--labels": [s.labels for s in train],
                  "--val-images": [s.image for s in validation], "--val-labels": [s.labels for s in validation],
                  "--weights": weights if weights.exists() else None})


def run(args: argparse.Namespace) -> int:
    from bone_avizo.fit import checkpoint_path, fit_model, resume_inputs

    output = Path(args.output)
    train, validation = _inputs(args)
    saved = None
    if args.resume and (checkpoint_path(output).exists() or not train):
        saved_train, saved_val, saved = resume_inputs(output)
        if not train:
            train, validation = saved_train, saved_val
    if not train:
        raise ConfigError("no training scans: give --images and --labels (or --image-folders/--mask-folders)")
    config = _config(args, saved)
    _spare_inputs(args, output, train, validation, config)
    ranks = ranks_from_env()
    main = ranks.is_main  # torchrun or SLURM: rank 0 reports for the job
    with progress_bar("fit") as bar:
        result = fit_model(train, config, output=output, validation=validation, resume=args.resume,
                           overwrite=args.overwrite, progress=bar if main else None, ranks=ranks)
    if not main:
        return 0
    write_json_atomic(resolved_config_path(output), {
        "command": "fit", "version": __version__, "output": str(output),
        "train": [s.to_dict() for s in train], "validation": [s.to_dict() for s in validation],
        "options": config.to_dict(), "best_epoch": result.best_epoch, "best_val_score": result.best_score,
        "seconds": round(result.seconds, 2), "checkpoint": str(result.checkpoint_path)})
    score = f"{result.best_score:.4f}" if result.best_score is not None else "n/a (no validation scans)"
    print(f"wrote {output} (best epoch {result.best_epoch}, validation mean IoU {score}, "
          f"{result.seconds:.1f} s)")
    return 0
