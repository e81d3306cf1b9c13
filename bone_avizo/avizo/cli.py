"""Command line of the installer and the self-check: ``python -m bone_avizo.avizo
install|uninstall|python-help|doctor``.

The same sub-commands are ``bone-avizo avizo ...`` in the standalone CLI.
"""
from __future__ import annotations

import argparse
import sys

from bone_avizo.avizo import install as installer
from bone_avizo.errors import BoneAvizoError

HELP = "install or remove the Avizo/Amira scripted modules (DLPred, DLFit, IoU, BONeInfo, BONeDoctor), or check an Avizo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="avizo_command", metavar="ACTION")
    sub.required = True
    for name, text in (("install", "copy the modules into <root>/share/python_script_objects"),
                       ("uninstall", "remove the files a previous install wrote"),
                       ("python-help", "print how to install bone_avizo into Avizo's Python")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--avizo-root", required=True, metavar="PATH",
                         help="the Avizo/Amira installation folder (the one holding bin/ and share/)")
        if name != "python-help":
            cmd.add_argument("--dry-run", action="store_true", help="only print what would be done")
        if name == "install":
            cmd.add_argument("--source", metavar="DIR", default=None,
                             help=f"folder of the .pyscro/.rc files (default: {installer.default_source()})")
            cmd.add_argument("--force", action="store_true",
                             help="overwrite module files of the same name that bone_avizo did not install")
    doctor = sub.add_parser("doctor", help="check every fact the Avizo modules rely on; print and save a JSON report",
                            description="Check the Python environment (and, inside Avizo's Python console, "
                                        "Avizo's own behaviour); print the report and save it as JSON.")
    doctor.add_argument("--output", metavar="FILE", default=None,
                        help="where to save the JSON report (default: ~/bone_avizo_doctor.json)")


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; results go to stdout, errors are raised as BoneAvizoError."""
    if args.avizo_command == "doctor":
        from bone_avizo.avizo.doctor import run as run_doctor

        run_doctor(args.output)
        return 0
    if args.avizo_command == "python-help":
        installer.script_dir(args.avizo_root)
        print(installer.python_setup_text(args.avizo_root))
        return 0
    if args.avizo_command == "install":
        actions = installer.install(args.avizo_root, source=args.source, dry_run=args.dry_run, force=args.force)
    else:
        actions = installer.uninstall(args.avizo_root, dry_run=args.dry_run)
    for action in actions:
        print(action.describe(dry_run=args.dry_run))
    if not actions:
        print(f"nothing was installed by bone_avizo in {installer.script_dir(args.avizo_root)}")
    if args.avizo_command == "install":
        print()
        print(installer.python_setup_text(args.avizo_root))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bone_avizo.avizo", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BoneAvizoError as exc:
        print(f"bone_avizo.avizo {args.avizo_command}: error: {exc}", file=sys.stderr)
        return 2
