"""``demo``: the whole product on a synthetic scan, with no data of your own."""
from __future__ import annotations

import argparse
from pathlib import Path

from bone_avizo.config import PredictConfig
from bone_avizo.metrics import format_table
from bone_avizo.standalone.progressbar import progress_bar

HELP = "generate a phantom scan, segment it with the shipped model, score it, write a preview"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="bone_avizo_demo", metavar="DIR",
                        help="folder for the demo's files (default: ./bone_avizo_demo)")
    parser.add_argument("--model", default=None, metavar="FILE", help="model file (default: the shipped model)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="phantom size in voxels (default: 48 256 256)")
    parser.add_argument("--seed", type=int, default=None, help="phantom seed (default: 2024)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo")


def run(args: argparse.Namespace) -> int:
    from bone_avizo.demo import DEMO_SEED, DEMO_SHAPE, run_demo

    with progress_bar("demo") as bar:
        result = run_demo(args.output, model=args.model, shape=tuple(args.shape or DEMO_SHAPE),
                          seed=DEMO_SEED if args.seed is None else args.seed, overwrite=args.overwrite,
                          predict_config=PredictConfig(device=args.device), progress=bar)
    print(format_table(result.iou))
    print(f"\nphantom {result.seconds['phantom']:.1f} s, prediction {result.seconds['predict']:.1f} s")
    print(f"files in {Path(result.folder).resolve()}:")
    for role, path in result.files.items():
        print(f"  {role:10s} {path.name}")
    return 0
