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


def test_one_python_minimum_everywhere():
    """pyproject, the launcher, the installer's advice, the doctor and the docs name the same minimum
    (3.11: the tests themselves need tomllib)."""
    import re
    import sys

    sys.path.insert(0, str(ROOT / "standalone"))
    import bone_avizo_venv

    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and bone_avizo_venv.MIN_PYTHON == (3, 11)
    texts = {path: path.read_text(encoding="utf-8") for path in
             [ROOT / "standalone" / "README.md", ROOT / "docs" / "avizo.md", ROOT / "README.md",
              ROOT / "bone_avizo" / "avizo" / "install.py", ROOT / "bone_avizo" / "avizo" / "doctor.py"]}
    for path, text in texts.items():
        named = set(re.findall(r"Python (?:>= ?)?3\.(\d+)(?:\+| or newer)", text))
        assert named <= {"11"}, f"{path} names another Python minimum: 3.{named}"
