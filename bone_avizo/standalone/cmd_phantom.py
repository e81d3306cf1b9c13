"""``phantom``: write a seeded synthetic micro-CT bone phantom and its exact Bone-Pores labels."""
from __future__ import annotations

import argparse
import sys

from bone_avizo import __version__
from bone_avizo.phantom import PHANTOM_SPEC, PhantomConfig, write_phantom
from bone_avizo.standalone.common import (int_in_range, output_path, resolved_config_path, spare_inputs,
                                          write_json_atomic)
from bone_avizo.standalone.progressbar import progress_bar
from bone_avizo.standalone.spec_args import add_config_keys, add_spec_arguments, config_from_args

HELP = ("write a synthetic micro-CT bone phantom (image) and its exact labels "
        "(0 background, 1 bone, 2 pores)")

# options with their own flag here: flag name, nargs, metavar (the spec name is the config field)
_OWN_FLAGS = {"voxel_size_mm": ("--voxel-size", None, "MM"), "shape": ("--shape", 3, ("Z", "Y", "X"))}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", required=True, metavar="IMAGE",
                        help="image file to write (.tif, .npy, .h5, ... or a folder of TIFF slices)")
    parser.add_argument("--labels", required=True, metavar="LABELS", help="label file to write (uint8)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--slab-slices", type=int_in_range(1, 65536), default=64, metavar="N",
                        help="slices generated and written together (memory use) [1..65536; default: 64]")
    for param in PHANTOM_SPEC:
        if param.name in _OWN_FLAGS:
            flag, nargs, metavar = _OWN_FLAGS[param.name]
            default = " ".join(map(str, param.default)) if nargs else param.default
            parser.add_argument(flag, dest=param.name, nargs=nargs, default=None, metavar=metavar,
                                help=f"{param.help} [{param.describe_range()}; default: {default}]")
    add_spec_arguments(parser, tuple(p for p in PHANTOM_SPEC if p.name not in _OWN_FLAGS))
    add_config_keys(parser, _OWN_FLAGS)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(PhantomConfig, args)
    outputs = output_path(args.output, "--output"), output_path(args.labels, "--labels")
    spare_inputs(args, {"--output": [outputs[0], resolved_config_path(outputs[0])], "--labels": outputs[1]}, {})
    with progress_bar("phantom") as bar:
        image, labels = write_phantom(config, *outputs, overwrite=args.overwrite, slab_slices=args.slab_slices,
                                      progress=bar)
    write_json_atomic(resolved_config_path(image), {"command": "phantom", "version": __version__,
                                                    "output": str(image), "labels": str(labels),
                                                    "options": config.to_dict()})
    z, y, x = config.shape
    print(f"phantom {z}x{y}x{x} (z, y, x) {config.dtype}, seed {config.seed}: image {image}, labels {labels}",
          file=sys.stdout)
    return 0
