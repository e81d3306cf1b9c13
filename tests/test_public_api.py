"""The supported API (docs/api.md) is what the modules' ``__all__`` say, and every name in it imports."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
PACKAGE = ROOT / "bone_avizo"


def documented() -> dict[str, list[str]]:
    """module -> the names its section of docs/api.md lists, in order."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in API_DOC.read_text().splitlines():
        heading = re.fullmatch(r"## `([\w.]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
        elif current is not None and (row := re.match(r"\| `(\w+)` \|", line)):
            current.append(row.group(1))
    return sections


def test_the_doc_lists_every_package():
    packages = {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in PACKAGE.rglob("__init__.py")}
    assert packages - set(documented()) == set()


@pytest.mark.parametrize("module_name", sorted(documented()))
def test_each_module_exports_what_the_doc_lists(module_name):
    module = pytest.importorskip(module_name) if module_name.endswith("napari") else importlib.import_module(module_name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ names a name twice"
    assert sorted(exported) == sorted(documented()[module_name])
    for name in exported:
        assert getattr(module, name) is not None or name.isupper()


def test_star_import_gives_exactly_the_api():
    namespace: dict = {}
    exec("from bone_avizo.io import *", namespace)
    names = {n for n in namespace if n != "__builtins__"}
    assert names == set(importlib.import_module("bone_avizo.io").__all__)


def _public_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")]


def test_functions_used_only_in_their_own_module_are_underscored():
    """A module's public function is named somewhere else (another module, a test, a doc, an Avizo
    script); one used only where it is defined takes a leading underscore."""
    suffixes = {".py", ".pyscro", ".md", ".toml", ".yaml", ".sh"}
    files = [p for p in ROOT.rglob("*") if p.suffix in suffixes and p.is_file()
             and not {".git", "build"} & set(p.parts) and ".egg-info" not in p.as_posix()]
    texts = {p: p.read_text(errors="replace") for p in files}
    exported = {name for p in PACKAGE.rglob("*.py")
                for m in re.finditer(r"__all__[^=]*=\s*\[([^\]]*)\]", texts[p], re.S)
                for name in re.findall(r"\"(\w+)\"", m.group(1))}
    lonely = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _public_functions(path):
            word = re.compile(rf"\b{name}\b")
            if name not in exported and not any(word.search(t) for q, t in texts.items() if q != path):
                lonely.append(f"{path.relative_to(ROOT)}: {name}")
    assert lonely == []
