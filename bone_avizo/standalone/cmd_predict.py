"""``predict``: segment a whole volume with a model file (ours or a BONe .pth)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bone_avizo import __version__
from bone_avizo.config import PREDICT_SPEC, PredictConfig
from bone_avizo.io import open_volume
from bone_avizo.models.metadata import default_class_names
from bone_avizo.runtime import ranks_from_env
from bone_avizo.standalone.common import (existing_path, output_path, parse_options, resolved_config_path,
                                          spare_inputs, write_json_atomic)
from bone_avizo.standalone.progressbar import progress_bar
from bone_avizo.standalone.spec_args import add_spec_arguments, config_from_args

HELP = "predict a label volume from a scan with a trained model"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="FILE",
                        help="model file (.safetensors from fit, or a BONe .pth checkpoint)")
    parser.add_argument("--input", required=True, metavar="VOLUME",
                        help="scan to segment: any supported file (.tif, .nii.gz, .nrrd, .isq, ...) or a folder of TIFF, PNG, BMP, JPEG or DICOM slices")
    parser.add_argument("--output", required=True, metavar="VOLUME",
                        help="label volume to write (.tif, .h5, .zarr, .npy, .am, .mhd, .nii.gz, .nrrd, .seg.nrrd, <name>.png for PNG slices, or a folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--input-option", action="append", metavar="KEY=VALUE",
                        help="reader option, e.g. dataset=/volume for HDF5 or shape=Z,Y,X for raw")
    add_spec_arguments(parser, PREDICT_SPEC)


def _outputs(output: Path, meta, config: PredictConfig) -> list[Path]:
    """The files predict writes: the labels, their probability maps (with --probabilities), the record."""
    from bone_avizo.predict.engine import probability_path

    names = tuple(meta.class_names) or default_class_names(meta.num_classes)
    maps = [probability_path(output, name) for name in names] if config.probabilities else []
    return [output, *maps, resolved_config_path(output)]


def run(args: argparse.Namespace) -> int:
    from bone_avizo.predict import predict_volume
    from bone_avizo.predict.loading import open_model

    config = config_from_args(PredictConfig, args)
    model_path = existing_path(args.model, "--model")
    input_path = existing_path(args.input, "--input")
    output = output_path(args.output, "--output")
    model = open_model(model_path)  # a model file's network loads while the statistics pass runs
    spare_inputs(args, {"--output": _outputs(output, model.metadata, config)},
                 {"--input": input_path, "--model": model_path})
    ranks = ranks_from_env()
    with open_volume(input_path, **parse_options(args.input_option, "--input-option")) as source:
        with progress_bar("predict") as bar:
            result = predict_volume(source, model, config, output=args.output,
                                    overwrite=args.overwrite, progress=bar, ranks=ranks)
    if ranks.rank:  # under torchrun/SLURM, rank 0 reports for the job
        return 0
    write_json_atomic(resolved_config_path(result.output), {
        "command": "predict", "version": __version__, "model": str(model_path), "input": str(input_path),
        "output": str(result.output), "options": config.to_dict(),
        "resolved": {"tile": result.tile, "batch_size": result.batch_size, "slab_slices": result.slab_slices,
                     "backend": result.backend, "device": result.device, "statistics": result.statistics},
        "normalization": result.stats.to_dict(), "seconds": round(result.seconds, 3),
    })
    print(f"wrote {result.output} ({result.voxels_per_second / 1e6:.2f} Mvoxel/s, {result.seconds:.1f} s)")
    for path in result.probability_outputs:
        print(f"wrote {path}")
    return 0
