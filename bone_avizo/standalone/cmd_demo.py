"""``demo``: the whole product on a synthetic scan, with no data of your own."""
from __future__ import annotations

import argparse
from pathlib import Path

from bone_avizo.config import PredictConfig
from bone_avizo.errors import ConfigError, OutputWriteError
from bone_avizo.metrics import format_table
from bone_avizo.standalone.common import existing_path, spare_inputs
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


def _check(args: argparse.Namespace, shape: tuple, seed: int) -> None:
    """Refuse bad options before anything is written."""
    from bone_avizo.phantom import PhantomConfig
    from bone_avizo.runtime import resolve_device

    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise OutputWriteError(f"--output: {args.output} is a file; give a folder for the demo's files")
    if args.model is not None:
        existing_path(args.model, "--model")
    from bone_avizo.demo import demo_files

    spare_inputs(args, {"--output": list(demo_files(Path(args.output)).values())}, {"--model": args.model})
    PhantomConfig(shape=shape, seed=seed)
    try:
        resolve_device(args.device)
    except ConfigError as exc:
        raise ConfigError(f"--device: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from bone_avizo.demo import DEMO_SEED, DEMO_SHAPE, run_demo

    shape, seed = tuple(args.shape or DEMO_SHAPE), DEMO_SEED if args.seed is None else args.seed
    _check(args, shape, seed)
    with progress_bar("demo") as bar:
        result = run_demo(args.output, model=args.model, shape=shape, seed=seed, overwrite=args.overwrite,
                          predict_config=PredictConfig(device=args.device), progress=bar)
    print(format_table(result.iou))
    print(f"\nphantom {result.seconds['phantom']:.1f} s, prediction {result.seconds['predict']:.1f} s")
    print(f"files in {Path(result.folder).resolve()}:")
    for role, path in result.files.items():
        print(f"  {role:10s} {path.name}")
    return 0
