"""``iou``: score predicted label volumes against reference label volumes (IoU, Dice, per slice, pooled)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from bone_avizo import __version__
from bone_avizo.config import IOU_SPEC, IoUConfig
from bone_avizo.errors import ConfigError, OutputWriteError
from bone_avizo.io import open_volume
from bone_avizo.metrics import IoUResult, compute_iou, format_table, pool_results
from bone_avizo.metrics.report import write_csv, write_json, write_slice_csv
from bone_avizo.standalone.common import existing_path, parse_options, resolved_config_path, write_json_atomic
from bone_avizo.standalone.progressbar import progress_bar
from bone_avizo.standalone.spec_args import add_spec_arguments, config_from_args

HELP = "score predicted label volumes against references: IoU, Dice, precision, recall per class and slice"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prediction", required=True, nargs="+", metavar="VOLUME",
                        help="predicted label volume(s): any supported file or a folder of slices")
    parser.add_argument("--reference", required=True, nargs="+", metavar="VOLUME",
                        help="reference label volume(s), one per prediction, in the same order")
    parser.add_argument("--roi", nargs="+", metavar="VOLUME",
                        help="region-of-interest mask(s): only non-zero voxels are counted; one for all pairs "
                             "or one per pair")
    parser.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    parser.add_argument("--csv", metavar="FILE.csv", help="write per-class rows as CSV")
    parser.add_argument("--slice-csv", metavar="FILE.csv", help="write per-slice IoU rows as CSV")
    parser.add_argument("--plot", metavar="FILE.png", help="plot per-slice IoU along z (needs matplotlib)")
    parser.add_argument("--input-option", action="append", metavar="KEY=VALUE",
                        help="reader option for every input, e.g. dataset=/labels for HDF5")
    add_spec_arguments(parser, IOU_SPEC)


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path, Path | None]]:
    preds, refs, rois = args.prediction, args.reference, args.roi or [None]
    if len(preds) != len(refs):
        raise ConfigError(f"{len(preds)} --prediction volume(s) but {len(refs)} --reference volume(s); "
                          "give one reference per prediction, in the same order")
    if len(rois) not in (1, len(preds)):
        raise ConfigError(f"{len(rois)} --roi masks for {len(preds)} pairs; give one mask for all or one per pair")
    rois = rois * len(preds) if len(rois) == 1 else rois
    return [(existing_path(p, "--prediction"), existing_path(r, "--reference"),
             existing_path(m, "--roi") if m else None) for p, r, m in zip(preds, refs, rois)]


def _check_outputs(args: argparse.Namespace, config) -> None:
    """Fail before the work: missing output folders, a plot without matplotlib or per-slice IoU."""
    for flag in ("report", "csv", "slice_csv", "plot"):
        value = getattr(args, flag)
        if value and not Path(value).resolve().parent.is_dir():
            raise OutputWriteError(f"--{flag.replace('_', '-')}: folder {Path(value).parent} does not exist; "
                                   "create it first")
    if (args.plot or args.slice_csv) and not config.per_slice:
        raise ConfigError("--plot and --slice-csv need per-slice IoU; leave out --no-per-slice")
    if args.plot:
        from bone_avizo.metrics.plot import require_matplotlib
        require_matplotlib()


def _score(pair: tuple[Path, Path, Path | None], config, options: dict, label: str) -> IoUResult:
    pred_path, ref_path, roi_path = pair
    with open_volume(pred_path, **options) as pred, open_volume(ref_path, **options) as ref:
        roi = open_volume(roi_path, **options) if roi_path else None
        try:
            with progress_bar(label) as bar:
                result = compute_iou(pred, ref, config, roi=roi, progress=bar)
        finally:
            if roi is not None:
                roi.close()
    inputs = {"prediction": str(pred_path), "reference": str(ref_path), "roi": str(roi_path) if roi_path else None}
    return dataclasses.replace(result, inputs=inputs)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(IoUConfig, args)
    pairs = _pairs(args)
    _check_outputs(args, config)
    options = parse_options(args.input_option, "--input-option")
    results = [_score(pair, config, options, f"iou {i + 1}/{len(pairs)}") for i, pair in enumerate(pairs)]
    result = results[0] if len(results) == 1 else pool_results(results)
    print(format_table(result))
    written = []
    if args.report:
        written.append(write_json(result, args.report))
        write_json_atomic(resolved_config_path(Path(args.report)), {
            "command": "iou", "version": __version__, "inputs": [r.inputs for r in results],
            "options": config.to_dict()})
    if args.csv:
        written.append(write_csv(result, args.csv))
    if args.slice_csv:
        written.append(write_slice_csv(result, args.slice_csv))
    if args.plot:
        from bone_avizo.metrics.plot import plot_slice_iou
        written.append(plot_slice_iou(result, args.plot))
    for path in written:
        print(f"wrote {path}")
    return 0
