"""The core never depends on a face: no Avizo adapter, no CLI, no napari face, no argparse, nothing of
Avizo, napari or Qt."""
import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bone_avizo"
FACES = ("avizo", "standalone", "napari")
FACE_MODULES = tuple(f"bone_avizo.{face}" for face in FACES)
FORBIDDEN_IN_CORE = {"argparse", "hx", "_hx_core", "PySide2", "PySide6", "PyQt5", "PyQt6", "tqdm", "napari",
                     "magicgui", "qtpy", "superqt", "vispy", "npe2"}


def core_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if len(parts) > 1 and parts[1] in FACES or parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_importing_the_core_loads_no_face_in_a_fresh_interpreter():
    code = ("import importlib, json, sys\n"
            f"for name in {core_modules()!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    faces = sorted(m for m in loaded if m.startswith(FACE_MODULES))
    assert faces == [], f"core imports face modules: {faces}"
    hosts = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN_IN_CORE - {"argparse", "tqdm"})
    assert hosts == []


def test_core_source_imports_nothing_of_a_face():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in FACES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in FORBIDDEN_IN_CORE or name.startswith(FACE_MODULES):
                    offenders.append(f"{rel}: {name}")
    assert offenders == []


def test_core_module_list_is_not_empty():
    modules = core_modules()
    assert "bone_avizo.predict.engine" in modules and "bone_avizo.io.base" in modules
    assert not any(m.startswith(FACE_MODULES) for m in modules)
