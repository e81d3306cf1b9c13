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


# ---------------------------------------------------------------------------------------------
# ranks and devices: one module below prediction and training owns them
RANK_VARIABLES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                  "SLURM_LOCALID"}
# fit may use prediction's tiler (validation scores whole slices as prediction tiles them); nothing else
FIT_USES_OF_PREDICT = {"bone_avizo.predict.tiling"}
# the only change the core makes to the environment: cuBLAS's workspace, which deterministic training needs
ENVIRONMENT_WRITES = {"fit/trainer.py: setdefault"}
ENVIRONMENT_METHODS = {"update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__"}


def _core_trees():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] not in FACES:
            yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _imported(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_only_the_runtime_module_reads_rank_variables_or_defines_the_device_rule():
    offenders = []
    for rel, tree in _core_trees():
        if rel.as_posix() == "runtime.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in RANK_VARIABLES:
                offenders.append(f"{rel}: {node.value!r}")
            if isinstance(node, ast.FunctionDef) and node.name == "resolve_device":
                offenders.append(f"{rel}: def resolve_device")
    assert offenders == []


def test_the_runtime_module_sits_below_prediction_and_training():
    trees = dict(_core_trees())
    own = {n for n in _imported(trees[Path("runtime.py")]) if n.startswith("bone_avizo")}
    assert own == {"bone_avizo.errors"}
    fit = {n for rel, tree in trees.items() if rel.parts[0] == "fit" for n in _imported(tree)}
    assert {n for n in fit if n.startswith("bone_avizo.predict")} <= FIT_USES_OF_PREDICT
    predict = {n for rel, tree in trees.items() if rel.parts[0] == "predict" for n in _imported(tree)}
    assert not {n for n in predict if n.startswith("bone_avizo.fit")}


def _environment_writes(rel: Path, tree) -> set[str]:
    """``file: how`` for every change of os.environ (or os.putenv/unsetenv) in one module."""
    writes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            on_environ = isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "environ"
            if on_environ and node.func.attr in ENVIRONMENT_METHODS or node.func.attr in ("putenv", "unsetenv"):
                writes.add(f"{rel.as_posix()}: {node.func.attr}")
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else []
        for target in targets:
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute) \
                    and target.value.attr == "environ":
                writes.add(f"{rel.as_posix()}: {type(node).__name__.lower()}")
    return writes


def test_the_core_leaves_the_environment_alone():
    writes = set().union(*(_environment_writes(rel, tree) for rel, tree in _core_trees()))
    assert writes == ENVIRONMENT_WRITES
