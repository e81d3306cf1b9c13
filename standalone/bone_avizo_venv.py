#!/usr/bin/env python3
"""Run bone-avizo without knowing Python: this one file creates a virtual environment, installs the
right build of torch (CPU, or CUDA for an NVIDIA GPU) and bone-avizo into it, and runs bone-avizo.

    python bone_avizo_venv.py demo                   first run: set everything up, then run the demo
    python bone_avizo_venv.py predict --model m.safetensors --input scan.tif --output labels.tif
    python bone_avizo_venv.py                        set up only, then show bone-avizo's commands
    python bone_avizo_venv.py --dry-run demo         print the commands without running anything
    python bone_avizo_venv.py --cpu demo             CPU build of torch even when a GPU is present
    python bone_avizo_venv.py --cuda 12.4 demo       the build for a given CUDA version
    python bone_avizo_venv.py --torch-index URL demo torch from another wheel index (a mirror, a newer build)
    python bone_avizo_venv.py --venv D:/envs/bone demo
    python bone_avizo_venv.py --package bone_avizo-0.1.0-py3-none-any.whl demo
    python bone_avizo_venv.py -- -v demo             bone-avizo options starting with '-' go after --

Without --cpu/--cuda the GPU is detected with nvidia-smi: the newest torch build whose CUDA version
the driver supports is installed, and the CPU build when there is no working nvidia-smi. torch
comes from that build's index on the PyTorch wheel server, or from --torch-index URL (or the
environment variable BONE_AVIZO_TORCH_INDEX). The environment is made once and reused; --reinstall
installs torch and bone-avizo again. Standard library only, so any Python 3.11+ can run it (the one
bone-avizo needs).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 11)  # pyproject.toml requires-python; tests check they agree
HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / "bone_avizo_env"
MARKER = "bone_avizo_launcher.json"
PROG = "bone_avizo_venv"

# The CUDA versions that have a torch build, oldest first. A build's wheel index is derived from
# TORCH_INDEX_ROOT ("cpu" -> .../whl/cpu, "12.4" -> .../whl/cu124); how to keep this list current:
# standalone/README.md, "Keeping the CUDA builds current".
CUDA_BUILDS = ("11.8", "12.1", "12.4", "12.6", "12.8")
TORCH_INDEX_ROOT = "https://download.pytorch.org/whl/"
TORCH_INDEX_VARIABLE = "BONE_AVIZO_TORCH_INDEX"  # an index to use instead of the derived one
TORCH_PACKAGES = ["torch", "torchvision"]  # together, so that pip never swaps torch for another build
CPU_EXTRAS = "[onnx]"  # onnxruntime: faster prediction on CPU


class LauncherError(Exception):
    """A one-line reason to stop; ``code`` is the exit status (2 bad input, 1 a step failed)."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        if message.startswith("unrecognized arguments"):
            message += "; bone-avizo options that start with '-' go after --, e.g. -- -v demo"
        raise LauncherError(f"{message} (see python {Path(__file__).name} --help)")


def parse_args(argv):
    """(launcher options, bone-avizo arguments). The bone-avizo arguments start at the first word
    that is not a launcher option, or after ``--``."""
    parser = _Parser(prog=Path(__file__).name, allow_abbrev=False,
                     description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, metavar="PATH",
                        help=f"the virtual environment to create or reuse (default: {DEFAULT_VENV})")
    build = parser.add_mutually_exclusive_group()
    build.add_argument("--cpu", action="store_true", help="install the CPU build of torch")
    build.add_argument("--cuda", metavar="VERSION",
                       help="install the torch build for this CUDA version: " + ", ".join(cuda_versions())
                            + " (any version with --torch-index)")
    parser.add_argument("--torch-index", metavar="URL",
                        help="the wheel index to install torch from instead of the build's index on "
                             f"{TORCH_INDEX_ROOT} (default: ${TORCH_INDEX_VARIABLE} when set)")
    parser.add_argument("--package", type=Path, metavar="PATH",
                        help="bone-avizo to install: a source folder or a .whl "
                             f"(default: the source tree around this script, {HERE.parent})")
    parser.add_argument("--reinstall", action="store_true",
                        help="install torch and bone-avizo again into an existing environment")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="BONE_AVIZO_ARGS",
                        help="the bone-avizo command and its options, e.g. demo")
    argv = list(argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    options = parser.parse_args(argv)
    return options, options.args + passthrough


def cuda_versions():
    return list(CUDA_BUILDS)


def index_url(build):
    """The wheel index of a build on the PyTorch server: 'cpu' -> .../whl/cpu, '12.4' -> .../whl/cu124."""
    return TORCH_INDEX_ROOT + ("cpu" if build == "cpu" else "cu" + build.replace(".", ""))


def index_override(options, environ=None):
    """(URL, where it was given) of the torch wheel index given with --torch-index or in the environment
    variable BONE_AVIZO_TORCH_INDEX (the flag first), or (None, None) to use the build's derived index."""
    environ = os.environ if environ is None else environ
    given = ((options.torch_index, "--torch-index"), (environ.get(TORCH_INDEX_VARIABLE), TORCH_INDEX_VARIABLE))
    for url, source in given:
        if url:
            if "://" not in url:
                raise LauncherError(f"{source} {url}: not a URL; give a pip wheel index such as {index_url('12.8')}")
            return url, source
    return None, None


def _version_tuple(text):
    return tuple(int(part) for part in text.split("."))


def build_for_driver(driver_cuda):
    """The newest CUDA build the driver supports (driver_cuda: (major, minor)), or None."""
    fitting = [key for key in cuda_versions() if _version_tuple(key) <= tuple(driver_cuda)]
    return max(fitting, key=_version_tuple) if fitting else None


def driver_cuda_version():
    """((major, minor) of the CUDA version the NVIDIA driver supports, or None, why)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "no nvidia-smi on PATH (no NVIDIA GPU driver)"
    try:
        proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nvidia-smi could not run ({exc})"
    if proc.returncode != 0:
        return None, f"nvidia-smi failed (exit {proc.returncode}): no usable NVIDIA GPU"
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", proc.stdout)
    if match is None:
        return None, "nvidia-smi did not report a CUDA version"
    return (int(match.group(1)), int(match.group(2))), "nvidia-smi"


def normalise_cuda(text, *, any_version=False):
    """'12.4', '124' or 'cu124' -> '12.4'; LauncherError for a version without a torch build (unless
    ``any_version``: the index is given, so the version only names the build)."""
    digits = text.lower().removeprefix("cu").replace(".", "")
    version = digits.isdigit() and len(digits) >= 2
    key = f"{digits[:-1]}.{digits[-1]}" if version else text
    if key in CUDA_BUILDS or (any_version and version):
        return key
    raise LauncherError(f"--cuda {text}: there is no torch build for CUDA {text}; use one of "
                        f"{', '.join(cuda_versions())}, or --cpu, or give its wheel index with --torch-index")


def choose_build(options, *, index_given=False):
    """(build key: 'cpu' or a CUDA version, why it was chosen); with ``index_given`` --cuda takes any version."""
    if options.cpu:
        return "cpu", "--cpu"
    if options.cuda:
        return normalise_cuda(options.cuda, any_version=index_given), "--cuda"
    driver, why = driver_cuda_version()
    if driver is None:
        return "cpu", why
    build = build_for_driver(driver)
    if build is None:
        return "cpu", (f"the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, older than every torch "
                       f"build ({', '.join(cuda_versions())}); update the driver to use the GPU")
    return build, f"nvidia-smi: the driver supports CUDA {driver[0]}.{driver[1]}"


def default_package():
    """The bone-avizo source tree this script belongs to (standalone/..)."""
    tree = HERE.parent
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file() and re.search(r'name\s*=\s*"bone-avizo"', pyproject.read_text(encoding="utf-8")):
        return tree
    raise LauncherError(f"no bone-avizo source tree around {HERE}; pass --package PATH (a source folder or a .whl)")


def check_package(path):
    path = Path(path).resolve()
    if path.is_dir() and (path / "pyproject.toml").is_file():
        return path
    if path.is_file() and path.suffix == ".whl":
        return path
    raise LauncherError(f"--package {path}: not a bone-avizo source folder (with pyproject.toml) or a .whl file")


def venv_python(venv, windows=None):
    windows = os.name == "nt" if windows is None else windows
    return Path(venv) / ("Scripts/python.exe" if windows else "bin/python")


def read_marker(venv):
    """What an earlier run installed into ``venv`` (empty when nothing or unreadable)."""
    try:
        return json.loads((Path(venv) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def plan(options, build, package, index):
    """The steps to run: a list of (what, command). The last one runs bone-avizo; torch comes from ``index``."""
    venv = options.venv.resolve()
    python = str(venv_python(venv))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    installed = read_marker(venv) if venv_python(venv).exists() else {}
    steps = []
    if not venv_python(venv).exists():
        steps.append(("create the virtual environment", [sys.executable, "-m", "venv", str(venv)]))
        steps.append(("update pip", pip + ["--upgrade", "pip"]))
    new_torch = options.reinstall or installed.get("torch") != build or installed.get("index_url", index) != index
    if new_torch and installed.get("torch"):
        steps.append(("remove the installed torch build", [python, "-m", "pip", "uninstall", "-y", *TORCH_PACKAGES]))
    if new_torch:
        steps.append((f"install torch ({'CPU' if build == 'cpu' else 'CUDA ' + build})",
                      pip + TORCH_PACKAGES + ["--index-url", index]))
    if new_torch or installed.get("package") != str(package):
        extras = CPU_EXTRAS if build == "cpu" else ""
        steps.append(("install bone-avizo", pip + ["--upgrade", f"{package}{extras}"]))
    steps.append(("run bone-avizo", [python, "-m", "bone_avizo.standalone", *(options.args or ["--help"])]))
    return steps


def show(command):
    return subprocess.list2cmdline(command) if os.name == "nt" else shlex.join(command)


def say(text):
    print(f"{PROG}: {text}", flush=True)


def execute(steps, options, build, package, index):
    """Run the steps (or print them with --dry-run); returns bone-avizo's exit status."""
    venv = options.venv.resolve()
    for what, command in steps:
        say(("would " if options.dry_run else "") + what + ": " + show(command))
        if options.dry_run:
            continue
        code = subprocess.call(command)
        if what == "run bone-avizo":
            return code
        if code != 0:
            raise LauncherError(f"{what} failed (exit {code}); see the messages above, then run this again", code=1)
        if what == "install bone-avizo":
            (venv / MARKER).write_text(json.dumps({"torch": build, "index_url": index,
                                                   "package": str(package)}, indent=2), encoding="utf-8")
    return 0


def main(argv=None):
    try:
        if sys.version_info < MIN_PYTHON:
            raise LauncherError(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed, this is "
                                f"{sys.version.split()[0]}; run this file with a newer python")
        options, args = parse_args(sys.argv[1:] if argv is None else argv)
        options.args = args
        if options.venv.exists() and not options.venv.is_dir():
            raise LauncherError(f"--venv {options.venv}: is a file; give a folder for the environment")
        package = check_package(options.package) if options.package else default_package()
        override, source = index_override(options)
        build, why = choose_build(options, index_given=override is not None)
        index = override or index_url(build)
        venv = options.venv.resolve()
        state = "reusing" if venv_python(venv).exists() else "creating"
        chosen = f"torch build: {build} ({why})" + (f" from {index} ({source})" if override else "")
        say(f"{state} the virtual environment {venv}; {chosen}; bone-avizo from {package}")
        return execute(plan(options, build, package, index), options, build, package, index)
    except LauncherError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
