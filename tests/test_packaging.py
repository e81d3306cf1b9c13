"""The wheel carries every subpackage and the Avizo modules."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bone_avizo").rglob("__init__.py")}
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert "bone_avizo.hxscripts" in listed


def test_avizo_modules_are_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.pyscro" in data["bone_avizo.hxscripts"] and "*.rc" in data["bone_avizo.hxscripts"]
    assert list((ROOT / "hxscripts").glob("*.pyscro"))
