"""Helpers shared by the CLI commands: input paths, format options, the resolved-config file."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from bone_avizo.errors import ConfigError, InputFileError, OutputWriteError
from bone_avizo.io.base import NamedPaths, check_outputs_spare_inputs


def existing_path(text: str, flag: str) -> Path:
    """``text`` as a Path that exists, else a one-line error naming the flag."""
    path = Path(text)
    if not path.exists():
        raise InputFileError(f"{flag}: {path} does not exist; check the path")
    return path


def output_path(text: str, flag: str) -> Path:
    """``text`` as a Path whose folder exists, else a one-line error naming the flag."""
    path = Path(text)
    if not path.resolve().parent.is_dir():
        raise OutputWriteError(f"{flag}: folder {path.parent} does not exist; create it first")
    return path


def spare_inputs(args: argparse.Namespace, outputs: NamedPaths, inputs: NamedPaths) -> None:
    """Refuse outputs that would replace one of the command's inputs (the --config file included) or
    each other, whatever --overwrite says (see :func:`check_outputs_spare_inputs`)."""
    check_outputs_spare_inputs(outputs, {**inputs, "--config": getattr(args, "config", None)})


def int_in_range(low: int, high: int, *, multiple_of: int = 1):
    """An argparse ``type``: an integer in low..high (and a multiple of ``multiple_of``).

    argparse turns a refusal into a one-line error naming the flag."""
    expected = f"{low}..{high}" + (f", a multiple of {multiple_of}" if multiple_of > 1 else "")

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected {expected}") from None
        if not low <= value <= high or value % multiple_of:
            raise argparse.ArgumentTypeError(f"{value} is out of range; expected {expected}")
        return value

    return convert


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs (format options such as dataset=/volume or shape=100,200,300) to a dict."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag}: {item!r} is not KEY=VALUE (e.g. {flag} dataset=/data)")
        if "," in value:
            options[key] = tuple(_number(v) for v in value.split(","))
        else:
            options[key] = _number(value)
    return options


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary name (OutputWriteError when that fails, e.g. a
    full disk)."""
    from bone_avizo.metrics.report import write_text_atomic

    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def resolved_config_path(output: Path) -> Path:
    """Where a run records its resolved configuration: ``<output>.config.json``."""
    return output.with_name(output.name + ".config.json")


def add_scan_arguments(group, prefix: str = "", what: str = "scans") -> None:
    """--<prefix>images / --<prefix>labels: parallel lists of image and label volumes."""
    group.add_argument(f"--{prefix}images", nargs="+", metavar="VOLUME", default=[],
                       help=f"{what}: files in any supported format or folders of TIFF slices")
    group.add_argument(f"--{prefix}labels", nargs="+", metavar="VOLUME", default=[],
                       help=f"label volumes of the {what} (classes 0..N-1), one per image, same order")


def add_scan_folder_arguments(group) -> None:
    """--image-folders / --mask-folders: BONe's folder layout (read by :func:`training_scans`)."""
    group.add_argument("--image-folders", metavar="DIR", help="BONe's layout: a folder holding one folder of "
                       "TIFF slices per scan (a folder named _Scan takes its parent's name)")
    group.add_argument("--mask-folders", metavar="DIR", help="BONe's layout: the parallel folder of mask folders")


def add_reader_option_arguments(group) -> None:
    """--image-option / --label-option KEY=VALUE (read by :func:`scan_pairs`)."""
    group.add_argument("--image-option", action="append", metavar="KEY=VALUE",
                       help="reader option for the scans, e.g. dataset=/volume for HDF5")
    group.add_argument("--label-option", action="append", metavar="KEY=VALUE",
                       help="reader option for the label volumes")


def scan_pairs(images, labels, args: argparse.Namespace, flags: tuple[str, str] = ("--images", "--labels")) -> list:
    """ScanSpecs from parallel image and label paths with the --image-option / --label-option reader
    options; [] when neither list is given. ``flags`` name the two options in error messages."""
    from bone_avizo.data.scans import pair_specs

    if not images and not labels:
        return []
    return pair_specs(images, labels, image_options=parse_options(args.image_option, "--image-option"),
                      label_options=parse_options(args.label_option, "--label-option"), flags=flags)


def training_scans(args: argparse.Namespace) -> list:
    """The scans of --images/--labels followed by those found in --image-folders/--mask-folders
    (BONe's layout: folders of TIFF slices with a parallel mask folder)."""
    from bone_avizo.data.scans import discover_scan_folders

    scans = scan_pairs(args.images, args.labels, args)
    if bool(args.image_folders) != bool(args.mask_folders):
        raise ConfigError("--image-folders and --mask-folders go together; give both")
    if args.image_folders:
        scans += discover_scan_folders(args.image_folders, args.mask_folders)
    return scans
