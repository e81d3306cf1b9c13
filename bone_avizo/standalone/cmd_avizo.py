"""``bone-avizo avizo install|uninstall|python-help``: the Avizo module installer."""
from __future__ import annotations

import argparse

from bone_avizo.avizo import install as installer
from bone_avizo.avizo.cli import HELP, add_arguments
from bone_avizo.avizo.cli import run as _run_installer
from bone_avizo.errors import InputFileError

__all__ = ["HELP", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    try:
        installer.script_dir(args.avizo_root)
    except InputFileError as exc:  # the same message, naming the flag
        raise InputFileError(f"--avizo-root: {exc}") from None
    return _run_installer(args)
