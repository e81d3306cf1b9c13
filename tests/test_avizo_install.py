"""The module installer against a fake Avizo installation folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bone_avizo.avizo import install as installer
from bone_avizo.avizo.cli import main as avizo_main
from bone_avizo.errors import FormatError, InputFileError, OutputExistsError
from bone_avizo.standalone.__main__ import main as standalone_main

HXSCRIPTS = Path(__file__).resolve().parents[1] / "hxscripts"


@pytest.fixture
def avizo_root(tmp_path):
    """A fake Avizo root with an unrelated module already installed and a bundled Python."""
    root = tmp_path / "Avizo-2024.1"
    scripts = root / "share" / "python_script_objects"
    scripts.mkdir(parents=True)
    (scripts / "Other.rc").write_text('module -name "Other" -language "python"\n')
    (scripts / "Other.pyscro").write_text("class Other(PyScriptObject): pass\n")
    (root / "python" / "bin").mkdir(parents=True)
    (root / "python" / "bin" / "python3").write_text("")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def shipped() -> list[str]:
    return sorted(p.name for p in HXSCRIPTS.iterdir() if p.suffix in (".pyscro", ".rc"))


def test_shipped_modules_are_valid_pairs():
    names = [p.name for p in installer.module_files()]
    assert names == shipped() and "BONeInfo.pyscro" in names and "BONeInfo.rc" in names


def test_dry_run_writes_nothing(avizo_root, capsys):
    before = snapshot(avizo_root)
    assert avizo_main(["install", "--avizo-root", str(avizo_root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert snapshot(avizo_root) == before
    assert out.count("would copy") == len(shipped()) and "BONeInfo.pyscro" in out


def test_install_then_uninstall_touches_only_its_own_files(avizo_root, capsys):
    scripts = avizo_root / installer.SCRIPT_DIR
    before = snapshot(avizo_root)
    assert avizo_main(["install", "--avizo-root", str(avizo_root)]) == 0
    for name in shipped():
        assert (scripts / name).read_bytes() == (HXSCRIPTS / name).read_bytes()
    manifest = json.loads((scripts / installer.MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == shipped()
    after = snapshot(avizo_root)
    assert {k: v for k, v in after.items() if k in before} == before  # the other module is untouched
    assert not list(scripts.glob(".*.tmp"))
    out = capsys.readouterr().out
    assert "python3\" -m pip install" in out and "download.pytorch.org/whl/cpu" in out
    assert avizo_main(["uninstall", "--avizo-root", str(avizo_root)]) == 0
    assert snapshot(avizo_root) == before


def test_reinstall_replaces_only_its_own_files(avizo_root):
    installer.install(avizo_root)
    assert {a.verb for a in installer.install(avizo_root)} == {"unchanged"}
    target = avizo_root / installer.SCRIPT_DIR / "BONeInfo.pyscro"
    target.write_text("# edited\n")
    verbs = {a.target.name: a.verb for a in installer.install(avizo_root)}
    assert verbs["BONeInfo.pyscro"] == "replace"
    assert target.read_bytes() == (HXSCRIPTS / "BONeInfo.pyscro").read_bytes()


def test_a_foreign_file_of_the_same_name_is_not_overwritten_without_force(avizo_root):
    foreign = avizo_root / installer.SCRIPT_DIR / "BONeInfo.rc"
    foreign.write_text("someone else's module\n")
    before = snapshot(avizo_root)
    with pytest.raises(OutputExistsError, match="--force"):
        installer.install(avizo_root)
    assert snapshot(avizo_root) == before
    installer.install(avizo_root, force=True)
    assert foreign.read_bytes() == (HXSCRIPTS / "BONeInfo.rc").read_bytes()


def test_uninstall_keeps_files_edited_after_install(avizo_root):
    installer.install(avizo_root)
    edited = avizo_root / installer.SCRIPT_DIR / "BONeInfo.pyscro"
    edited.write_text("# my changes\n")
    verbs = {a.target.name: a.verb for a in installer.uninstall(avizo_root)}
    assert verbs["BONeInfo.pyscro"] == "keep" and verbs["BONeInfo.rc"] == "remove"
    assert edited.read_text() == "# my changes\n"
    assert not (avizo_root / installer.SCRIPT_DIR / installer.MANIFEST_NAME).exists()
    assert installer.uninstall(avizo_root) == []


def test_uninstall_keeps_the_pyscro_an_edited_rc_still_registers(avizo_root):
    """Avizo registers every .rc at start-up: removing the .pyscro of a kept (edited) .rc would leave a
    registration whose script is gone, so both stay."""
    installer.install(avizo_root)
    folder = avizo_root / installer.SCRIPT_DIR
    rc = folder / "BONeInfo.rc"
    rc.write_text(rc.read_text() + '# my category\n')
    pyscro_before = (folder / "BONeInfo.pyscro").read_bytes()
    actions = {a.target.name: a for a in installer.uninstall(avizo_root)}
    assert actions["BONeInfo.rc"].verb == "keep" and actions["BONeInfo.pyscro"].verb == "keep"
    assert "the kept BONeInfo.rc still registers it" in actions["BONeInfo.pyscro"].note
    assert (folder / "BONeInfo.pyscro").read_bytes() == pyscro_before
    assert actions["BONeDLPred.pyscro"].verb == "remove" and not (folder / "BONeDLPred.pyscro").exists()


def test_a_missing_avizo_root_is_reported_as_missing(tmp_path, capsys):
    missing = tmp_path / "Avizo-2024.1"
    with pytest.raises(InputFileError, match=r"Avizo/Amira folder .*Avizo-2024.1 does not exist \(or is not a folder\); "
                                             "check the path"):
        installer.install(missing)
    assert avizo_main(["uninstall", "--avizo-root", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()


def test_not_an_avizo_folder(tmp_path, capsys):
    with pytest.raises(InputFileError, match="not an Avizo/Amira installation folder"):
        installer.install(tmp_path)
    assert avizo_main(["install", "--avizo-root", str(tmp_path)]) == 2
    assert "not an Avizo/Amira installation folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_script_folder_is_created_when_missing(tmp_path):
    (tmp_path / "share").mkdir()
    installer.install(tmp_path)
    assert sorted(p.name for p in (tmp_path / installer.SCRIPT_DIR).iterdir()) == sorted(
        shipped() + [installer.MANIFEST_NAME])


@pytest.mark.parametrize("files, match", [
    ({"A.rc": 'module -name "A" -language "python" -file "share/python_script_objects/B.pyscro"'}, "no .pyscro"),
    ({"A.rc": 'module -name "A" -language "python" -file "share/python_script_objects/A.pyscro"',
      "A.pyscro": "", "C.pyscro": ""}, "no .rc"),
    ({"A.rc": 'module -name "A" -file "A.pyscro"', "A.pyscro": ""}, "expected module"),
])
def test_bad_module_folders_are_refused(avizo_root, tmp_path, files, match):
    source = tmp_path / "modules"
    source.mkdir()
    for name, text in files.items():
        (source / name).write_text(text)
    with pytest.raises(FormatError, match=match):
        installer.install(avizo_root, source=source)


def test_standalone_cli_delegates_to_the_installer(avizo_root, capsys):
    assert standalone_main(["avizo", "install", "--avizo-root", str(avizo_root), "--dry-run"]) == 0
    assert "would copy" in capsys.readouterr().out
    assert standalone_main(["avizo", "install", "--avizo-root", str(avizo_root / "nowhere")]) == 2
    assert "nowhere does not exist (or is not a folder)" in capsys.readouterr().err


def test_python_help_names_the_bundled_python(avizo_root, capsys):
    assert avizo_main(["python-help", "--avizo-root", str(avizo_root)]) == 0
    out = capsys.readouterr().out
    assert str(avizo_root / "python" / "bin" / "python3") in out and "avizo-constraints.txt" in out
