"""Command-line entry point: ``python -m bone_avizo.standalone <command> ...``.

Each command lives in its own module ``bone_avizo.standalone.cmd_<name>`` that defines
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Exit codes: 0 ok, 2 bad input
(one-line message), 1 internal error (traceback with --debug), 130 cancelled.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from types import ModuleType

from bone_avizo.errors import BoneAvizoError, Cancelled
from bone_avizo.standalone.spec_args import share_config_keys

COMMANDS = ("fit", "predict", "iou", "info", "export", "phantom", "demo", "cv", "bench", "avizo", "cache")

log = logging.getLogger("bone_avizo")


def _available_commands() -> dict[str, ModuleType]:
    modules = {}
    for name in COMMANDS:
        try:
            modules[name] = importlib.import_module(f"bone_avizo.standalone.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bone_avizo.standalone.cmd_{name}":
                raise
    return modules


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the flag, what is wrong, where to look) and exit 2.

    Abbreviated flags are refused: a flag added later must not change what a user's script means."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="bone-avizo", description="Deep-learning segmentation of bone "
                                     "in micro-CT volumes: fit, predict, score.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output: -v debug messages of bone_avizo, -vv also of the libraries it uses")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="also print the traceback of an error (same exit code)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands = {}
    for name, module in _available_commands().items():
        cmd = commands[name] = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _parser=cmd)
    share_config_keys(commands)
    return parser


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (safe when it is replaced)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@contextmanager
def _logging_to_stderr(verbose: int, quiet: bool):
    """Log bone_avizo's records to stderr for the duration of one command, then restore."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # -vv: the libraries' records too (through the root logger)
    loggers = [log, logging.getLogger()] if verbose > 1 and not quiet else [log]
    previous = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    log.propagate = False
    try:
        yield
    finally:
        for logger, (level_before, propagate_before) in zip(loggers, previous):
            logger.removeHandler(handler)
            logger.level, logger.propagate = level_before, propagate_before


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's parser, whose --help lists its flags
            args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0) if exc.code in (0, None) else 2
    with _logging_to_stderr(args.verbose, args.quiet):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe is reported here, not at interpreter exit
        return code
    except Cancelled as exc:
        print(f"bone-avizo {args.command}: {exc}", file=sys.stderr)
        return 130
    except BoneAvizoError as exc:
        if args.debug:  # the traceback, then the same message and exit code as without --debug
            traceback.print_exc()
        print(f"bone-avizo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bone-avizo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`... | head -1`): stop quietly, as Unix tools do
        _discard_stdout()
        return 128 + 13  # as if ended by SIGPIPE
    except Exception as exc:  # noqa: BLE001 - last-resort handler of the CLI
        if args.debug:
            traceback.print_exc()
        print(f"bone-avizo {args.command}: internal error: {type(exc).__name__}: {exc}"
              + ("" if args.debug else " (run with --debug for the traceback)"), file=sys.stderr)
        return 1


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (e.g. redirected in a test)
        pass


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
