"""Installing the scripted modules (hxscripts/*.pyscro + *.rc) into an Avizo/Amira installation.

Avizo registers every ``.rc`` file it finds in ``<Avizo>/share/python_script_objects/`` at start-up;
each names its ``.pyscro`` beside it. :func:`install` copies the modules there (each through a
temporary name and a rename, so Avizo never sees half a file), refuses to overwrite files it did
not install itself unless forced, and records what it wrote, with checksums, in a manifest file
in that folder. :func:`uninstall` removes exactly those files, leaving any the user edited since.
The ``.pyscro`` files import ``bone_avizo``, so the package must also be installed into Avizo's
Python: :func:`python_setup_text` says how.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import bone_avizo
from bone_avizo.errors import FormatError, InputFileError, OutputExistsError, OutputWriteError

SCRIPT_DIR = Path("share") / "python_script_objects"
MANIFEST_NAME = ".bone_avizo_installed.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_RC_FILE = re.compile(r'-file\s+"share/python_script_objects/([^"/\\]+\.pyscro)"')


@dataclass(frozen=True)
class Action:
    """One file operation: ``verb`` is copy, replace, unchanged, remove, keep or missing."""

    verb: str
    target: Path
    source: Path | None = None
    note: str = ""

    def describe(self, *, dry_run: bool = False) -> str:
        verb = f"would {self.verb}" if dry_run and self.verb in ("copy", "replace", "remove") else self.verb
        what = f"{self.source} -> {self.target}" if self.source else str(self.target)
        return f"{verb:14s} {what}" + (f"  ({self.note})" if self.note else "")


def default_source() -> Path:
    """The ``hxscripts`` folder: the source tree's, else the copy installed as ``bone_avizo.hxscripts``."""
    tree = PACKAGE_ROOT / "hxscripts"
    if tree.is_dir():
        return tree
    try:
        from importlib.resources import files
        return Path(str(files("bone_avizo.hxscripts")))
    except ModuleNotFoundError:
        return tree


_ROOT_EXAMPLE = ("the folder that holds Avizo's bin/ and share/, e.g. \"C:\\Program Files\\Thermo Scientific "
                 "Amira-Avizo3D 2024.1\" or /opt/Avizo-2024.1")


def script_dir(avizo_root: str | Path) -> Path:
    """``<avizo_root>/share/python_script_objects``; the root must be an Avizo/Amira installation."""
    root = Path(avizo_root).expanduser()
    if not root.is_dir():
        raise InputFileError(f"Avizo/Amira folder {root} does not exist (or is not a folder); check the path: "
                             f"{_ROOT_EXAMPLE}")
    if not (root / "share").is_dir():
        raise InputFileError(f"not an Avizo/Amira installation folder: {root} (it has no share/ folder); pass "
                             f"{_ROOT_EXAMPLE}")
    return root / SCRIPT_DIR


def module_files(source: str | Path | None = None) -> list[Path]:
    """The .pyscro and .rc files to install, checked: each .rc names a .pyscro that is there, and back."""
    source = Path(source) if source is not None else default_source()
    if not source.is_dir():
        raise InputFileError(f"module folder {source} does not exist; pass --source with the hxscripts folder "
                             "of a bone_avizo source tree")
    rcs, pyscros = sorted(source.glob("*.rc")), sorted(source.glob("*.pyscro"))
    named = {_rc_target(rc): rc for rc in rcs}
    missing = sorted(set(named) - {p.name for p in pyscros})
    orphans = sorted({p.name for p in pyscros} - set(named))
    if missing or orphans or not rcs:
        raise FormatError(f"{source}: every .rc must name a .pyscro beside it and every .pyscro needs a .rc "
                          f"(no .pyscro for {missing or '-'}, no .rc for {orphans or '-'})")
    return sorted(rcs + pyscros)


def _rc_target(rc: Path) -> str:
    text = rc.read_text(encoding="utf-8")
    match = _RC_FILE.search(text)
    if match is None or '-language "python"' not in text:
        raise FormatError(f'{rc}: expected module -name ... -language "python" '
                          '-file "share/python_script_objects/<Name>.pyscro" ...')
    return match.group(1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(directory: Path) -> dict[str, str]:
    """{file name: sha256} of the files bone_avizo installed in ``directory`` ({} if none)."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path} is not a bone_avizo manifest ({exc}); remove it by hand") from None


def _atomic_write(target: Path, write) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {target}: {exc.strerror or exc}; an installation under Program "
                               "Files or /opt needs an administrator prompt (or sudo)") from None


def _write_manifest(directory: Path, files: dict[str, str]) -> None:
    path = directory / MANIFEST_NAME
    if not files:
        path.unlink(missing_ok=True)
        return
    text = json.dumps({"package": "bone_avizo", "version": bone_avizo.__version__, "files": files}, indent=2)
    _atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _plan_install(avizo_root: str | Path, *, source: str | Path | None = None, force: bool = False) -> list[Action]:
    """What :func:`install` would do; raises before anything is written if a file is in the way."""
    directory = script_dir(avizo_root)
    owned = _read_manifest(directory)
    actions = []
    for path in module_files(source):
        target = directory / path.name
        if not target.exists():
            actions.append(Action("copy", target, path))
        elif _sha256(target) == _sha256(path):
            actions.append(Action("unchanged", target, path))
        elif path.name in owned or force:
            note = "" if path.name in owned else "not installed by bone_avizo; --force"
            actions.append(Action("replace", target, path, note))
        else:
            raise OutputExistsError(f"{target} exists and was not installed by bone_avizo; rename or remove it, "
                                    "or pass --force to overwrite it")
    return actions


def install(avizo_root: str | Path, *, source: str | Path | None = None, dry_run: bool = False,
            force: bool = False) -> list[Action]:
    """Copy the modules into ``<avizo_root>/share/python_script_objects`` (see the module docstring)."""
    actions = _plan_install(avizo_root, source=source, force=force)
    if dry_run:
        return actions
    directory = script_dir(avizo_root)
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create {directory}: {exc.strerror or exc}") from None
    owned = _read_manifest(directory)
    owned.update({a.target.name: _sha256(a.source) for a in actions if a.source is not None})
    _write_manifest(directory, owned)  # first, so that uninstall finds files even after a failed copy
    for action in actions:
        if action.verb in ("copy", "replace"):
            _atomic_write(action.target, lambda tmp, src=action.source: shutil.copyfile(src, tmp))
    return actions


def _plan_uninstall(avizo_root: str | Path) -> list[Action]:
    """What :func:`uninstall` would do."""
    directory = script_dir(avizo_root)
    actions = []
    for name, digest in sorted(_read_manifest(directory).items()):
        target = directory / name
        if not target.exists():
            actions.append(Action("missing", target))
        elif _sha256(target) == digest:
            actions.append(Action("remove", target))
        else:
            actions.append(Action("keep", target, note="changed since it was installed; left in place"))
    return _keep_what_kept_rc_files_register(actions)


def _keep_what_kept_rc_files_register(actions: list[Action]) -> list[Action]:
    """A kept (edited) .rc still registers its .pyscro at Avizo's start-up: keep that .pyscro too, so that
    Avizo never meets a registration whose script is gone."""
    registered = {}
    for action in actions:
        if action.verb == "keep" and action.target.suffix == ".rc":
            match = _RC_FILE.search(action.target.read_text(encoding="utf-8", errors="replace"))
            if match:
                registered[match.group(1)] = action.target.name
    return [Action("keep", a.target, note=f"the kept {registered[a.target.name]} still registers it; left in place")
            if a.verb == "remove" and a.target.name in registered else a for a in actions]


def uninstall(avizo_root: str | Path, *, dry_run: bool = False) -> list[Action]:
    """Remove exactly the files :func:`install` wrote and still holds unchanged, then the manifest."""
    actions = _plan_uninstall(avizo_root)
    if dry_run or not actions:
        return actions
    for action in actions:
        if action.verb == "remove":
            try:
                action.target.unlink()
            except OSError as exc:
                raise OutputWriteError(f"cannot remove {action.target}: {exc.strerror or exc}; an installation "
                                       "under Program Files or /opt needs an administrator prompt (or sudo)") from None
    _write_manifest(script_dir(avizo_root), {})
    return actions


def _avizo_python(avizo_root: str | Path) -> Path | None:
    """The Python shipped in ``<avizo_root>/python`` (Windows or Linux layout), if there is one."""
    root = Path(avizo_root).expanduser() / "python"
    for candidate in (root / "python.exe", root / "bin" / "python3", root / "bin" / "python"):
        if candidate.is_file():
            return candidate
    return None


def python_setup_text(avizo_root: str | Path) -> str:
    """How to make ``bone_avizo`` importable in Avizo's Python (printed after installing)."""
    found = _avizo_python(avizo_root)
    python = f'"{found}"' if found else "PYTHON"
    source_tree = (PACKAGE_ROOT / "pyproject.toml").is_file()
    project = f'"{PACKAGE_ROOT}"' if source_tree else '"<the bone_avizo source folder>"'
    where = (f"Avizo's bundled Python: {found}" if found else
             f"No Python found under {Path(avizo_root) / 'python'}: use PYTHON = the python of the "
             "environment Avizo runs (see docs/avizo.md)")
    return "\n".join([
        "The modules import bone_avizo: install it into the Python that Avizo runs (Python >= 3.11).",
        where,
        "Preferably use your own Avizo Python environment rather than the bundled one (docs/avizo.md).",
        f"  1. {python} -m pip list --format=freeze > avizo-constraints.txt",
        "     (keeps the packages Avizo ships at their versions in the next steps)",
        f"  2. CPU only:    {python} -m pip install -c avizo-constraints.txt torch "
        "--index-url https://download.pytorch.org/whl/cpu",
        f"     NVIDIA GPU:  {python} -m pip install -c avizo-constraints.txt torch "
        "--index-url https://download.pytorch.org/whl/cu128",
        "                  (cu128 is CUDA 12.8: use the newest CUDA build of torch your driver supports; "
        "pytorch.org lists them)",
        f"  3. {python} -m pip install -c avizo-constraints.txt {project}",
        "Then restart Avizo, create BONeDoctor (Python Scripts) and press Apply: it checks the versions,",
        "whether CUDA is usable and every behaviour of Avizo the modules rely on, and saves a report.",
    ])
