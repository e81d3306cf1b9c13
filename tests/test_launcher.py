"""standalone/bone_avizo_venv.py: the torch build it picks (a fake nvidia-smi on PATH), the commands it
would run (--dry-run: no network, nothing created), reuse of an environment, one-line errors, and
running bone-avizo in an environment that is already set up."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "standalone" / "bone_avizo_venv.py"
SMI_OUTPUT = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
|   0  NVIDIA RTX A4000               Off |   00000000:01:00.0 Off |                  Off |
+-----------------------------------------------------------------------------------------+
"""

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the fake nvidia-smi is a shell script")


@pytest.fixture(scope="module")
def launcher():
    spec = importlib.util.spec_from_file_location("bone_avizo_venv", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_smi(folder: Path, *, cuda: str = "12.2", exit_code: int = 0) -> Path:
    """An nvidia-smi in ``folder`` that prints a driver header with ``cuda`` and exits ``exit_code``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    lines = [f"echo '{line}'" for line in SMI_OUTPUT.format(cuda=cuda).splitlines()]  # builtins only: PATH is bare
    script.write_text("\n".join(["#!/bin/sh", *lines, f"exit {exit_code}", ""]))
    script.chmod(0o755)
    return folder


def run_launcher(*args, path: Path | str = "/nonexistent", cwd: Path | None = None, torch_index: str | None = None):
    """The launcher in a fresh interpreter with PATH set to ``path`` only and BONE_AVIZO_TORCH_INDEX set to
    ``torch_index`` (unset by default); (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "BONE_AVIZO_TORCH_INDEX")}
    env["PATH"] = str(path)
    if torch_index is not None:
        env["BONE_AVIZO_TORCH_INDEX"] = torch_index
    proc = subprocess.run([sys.executable, str(LAUNCHER), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def commands(stdout: str) -> dict[str, str]:
    """'would <what>: <command>' lines of a dry run, by what."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("bone_avizo_venv: would "):
            what, _, command = line.removeprefix("bone_avizo_venv: would ").partition(": ")
            found[what] = command
    return found


# -- choosing the torch build ---------------------------------------------------------------------------
@pytest.mark.parametrize("build,url", [("cpu", "https://download.pytorch.org/whl/cpu"),
                                       ("11.8", "https://download.pytorch.org/whl/cu118"),
                                       ("12.4", "https://download.pytorch.org/whl/cu124"),
                                       ("13.0", "https://download.pytorch.org/whl/cu130")])
def test_each_builds_index_is_derived_from_its_cuda_version(launcher, build, url):
    assert launcher.index_url(build) == url


def test_the_cuda_builds_are_versions_oldest_first_and_the_readme_lists_them(launcher):
    builds = launcher.CUDA_BUILDS
    assert all(re.fullmatch(r"\d+\.\d", build) for build in builds)
    assert list(builds) == sorted(set(builds), key=launcher._version_tuple)
    readme = (ROOT / "standalone" / "README.md").read_text()
    listed = re.search(r"\| `--cpu` / `--cuda VERSION` \|[^|]*VERSION is ([\d., or]+)", readme).group(1)
    assert re.findall(r"\d+\.\d", listed) == list(builds)


@pytest.mark.parametrize("driver,build", [((12, 9), "12.8"), ((13, 0), "12.8"), ((12, 8), "12.8"), ((12, 7), "12.6"),
                                          ((12, 5), "12.4"), ((12, 2), "12.1"), ((12, 0), "11.8"), ((11, 8), "11.8"),
                                          ((11, 7), None), ((10, 2), None)])
def test_newest_build_the_driver_supports(launcher, driver, build):
    assert launcher.build_for_driver(driver) == build


@pytest.mark.parametrize("text,key", [("12.4", "12.4"), ("124", "12.4"), ("cu124", "12.4"), ("CU118", "11.8"),
                                      ("11.8", "11.8")])
def test_cuda_flag_spellings(launcher, text, key):
    assert launcher.normalise_cuda(text) == key


@pytest.mark.parametrize("cuda,build", [("12.2", "12.1"), ("12.9", "12.8"), ("12.4", "12.4"), ("11.8", "11.8")])
def test_a_working_nvidia_smi_selects_the_cuda_build(tmp_path, cuda, build):
    code, out, err = run_launcher("--dry-run", "--venv", tmp_path / "env", "demo", path=fake_smi(tmp_path / "bin", cuda=cuda))
    assert code == 0, err
    assert f"torch build: {build} (nvidia-smi: the driver supports CUDA {cuda})" in out
    index = "https://download.pytorch.org/whl/cu" + build.replace(".", "")
    assert commands(out)[f"install torch (CUDA {build})"].endswith(f"--index-url {index}")


@pytest.mark.parametrize("case", ["failing", "old driver", "absent"])
def test_no_usable_gpu_selects_the_cpu_build(tmp_path, case):
    path = {"failing": lambda: fake_smi(tmp_path / "bin", exit_code=9),
            "old driver": lambda: fake_smi(tmp_path / "bin", cuda="11.4"),
            "absent": lambda: tmp_path}[case]()
    code, out, err = run_launcher("--dry-run", "--venv", tmp_path / "env", "demo", path=path)
    assert code == 0, err
    assert commands(out)["install torch (CPU)"].endswith("--index-url https://download.pytorch.org/whl/cpu")
    reason = {"failing": "nvidia-smi failed (exit 9)", "old driver": "supports CUDA 11.4, older than every torch build",
              "absent": "no nvidia-smi on PATH"}[case]
    assert reason in out


def test_cpu_and_cuda_flags_override_detection(tmp_path):
    gpu = fake_smi(tmp_path / "bin", cuda="12.8")
    code, out, _ = run_launcher("--dry-run", "--cpu", "--venv", tmp_path / "env", "demo", path=gpu)
    assert code == 0 and "install torch (CPU)" in commands(out)
    code, out, _ = run_launcher("--dry-run", "--cuda", "11.8", "--venv", tmp_path / "env", "demo", path=tmp_path)
    assert code == 0 and commands(out)["install torch (CUDA 11.8)"].endswith("/whl/cu118")


def test_cuda_wheel_examples_in_the_install_instructions_name_a_build_the_launcher_knows(launcher, tmp_path):
    from bone_avizo.avizo.install import python_setup_text

    texts = [(ROOT / name).read_text() for name in ("README.md", "docs/avizo.md", "docs/cli.md")]
    examples = re.findall(r"download\.pytorch\.org/whl/cu(\d+)", "\n".join([*texts, python_setup_text(tmp_path)]))
    assert examples and {f"{digits[:-1]}.{digits[-1]}" for digits in examples} <= set(launcher.CUDA_BUILDS)


# -- another wheel index: --torch-index, BONE_AVIZO_TORCH_INDEX -------------------------------------------
MIRROR = "https://mirror.example/torch/cu130"


@pytest.mark.parametrize("given", ["flag", "variable", "both"])
def test_another_index_replaces_the_derived_one(tmp_path, given):
    flag = ["--torch-index", MIRROR] if given != "variable" else []
    variable = {"flag": None, "variable": MIRROR, "both": "https://elsewhere.example/simple"}[given]
    code, out, err = run_launcher("--dry-run", *flag, "--venv", tmp_path / "env", "demo", path=tmp_path,
                                  torch_index=variable)
    assert code == 0, err
    source = "BONE_AVIZO_TORCH_INDEX" if given == "variable" else "--torch-index"
    assert f"torch build: cpu (no nvidia-smi on PATH (no NVIDIA GPU driver)) from {MIRROR} ({source})" in out
    assert commands(out)["install torch (CPU)"].endswith(f"torch torchvision --index-url {MIRROR}")


def test_a_cuda_version_without_a_known_build_needs_its_index(tmp_path):
    code, _, err = run_launcher("--dry-run", "--cuda", "13.0", "--venv", tmp_path / "env", "demo", path=tmp_path)
    assert code == 2 and "there is no torch build for CUDA 13.0" in err and "--torch-index" in err
    code, out, err = run_launcher("--dry-run", "--cuda", "cu130", "--torch-index", MIRROR, "--venv", tmp_path / "env",
                                  "demo", path=tmp_path)
    assert code == 0, err
    assert commands(out)["install torch (CUDA 13.0)"].endswith(f"--index-url {MIRROR}")
    assert commands(out)["install bone-avizo"].endswith(f"--upgrade {ROOT}")  # a CUDA build: no onnx extra


def test_an_environment_from_another_index_gets_torch_again(tmp_path):
    venv = ready_venv(tmp_path / "env", torch="cpu", index_url="https://download.pytorch.org/whl/cpu",
                      package=str(ROOT))
    code, out, _ = run_launcher("--dry-run", "--venv", venv, "demo", path=tmp_path)
    assert code == 0 and list(commands(out)) == ["run bone-avizo"]
    code, out, _ = run_launcher("--dry-run", "--venv", venv, "demo", path=tmp_path, torch_index=MIRROR)
    assert code == 0
    assert list(commands(out)) == ["remove the installed torch build", "install torch (CPU)", "install bone-avizo",
                                   "run bone-avizo"]


def test_the_index_a_run_installed_from_is_recorded(tmp_path):
    venv = ready_venv(tmp_path / "env")
    pip = venv / "bin" / "python"
    pip.write_text("#!/bin/sh\nexit 0\n")  # every pip step succeeds; bone-avizo exits 0
    code, _, err = run_launcher("--torch-index", MIRROR, "--venv", venv, "demo", path=tmp_path)
    assert code == 0, err
    assert json.loads((venv / "bone_avizo_launcher.json").read_text()) == {
        "torch": "cpu", "index_url": MIRROR, "package": str(ROOT)}


# -- the commands of a first run ---------------------------------------------------------------------------
def test_dry_run_of_a_first_run_prints_every_step_and_creates_nothing(tmp_path):
    venv = tmp_path / "env"
    code, out, err = run_launcher("--dry-run", "--venv", venv, "predict", "--model", "m.safetensors", "--tta", "flips",
                                  path=tmp_path)
    assert code == 0 and err == ""
    steps = commands(out)
    assert list(steps) == ["create the virtual environment", "update pip", "install torch (CPU)",
                           "install bone-avizo", "run bone-avizo"]
    python = str(venv.resolve() / "bin" / "python")
    assert steps["create the virtual environment"] == f"{sys.executable} -m venv {venv.resolve()}"
    assert steps["install torch (CPU)"].startswith(f"{python} -m pip install") and " torch torchvision " in \
        steps["install torch (CPU)"]
    assert steps["install bone-avizo"].endswith(f"--upgrade '{ROOT}[onnx]'")
    assert steps["run bone-avizo"] == f"{python} -m bone_avizo.standalone predict --model m.safetensors --tta flips"
    assert not venv.exists()


def test_options_of_bone_avizo_that_start_with_a_dash_go_after_double_dash(tmp_path):
    code, out, _ = run_launcher("--dry-run", "--venv", tmp_path / "env", "--", "-v", "demo", "--output", "d",
                                path=tmp_path)
    assert code == 0 and commands(out)["run bone-avizo"].endswith("bone_avizo.standalone -v demo --output d")
    code, _, err = run_launcher("--dry-run", "-v", "demo", path=tmp_path)
    assert code == 2 and "go after --" in err and len(err.strip().splitlines()) == 1


def test_a_wheel_is_installed_as_given_and_cuda_builds_get_no_onnx_extra(tmp_path):
    wheel = tmp_path / "bone_avizo-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    code, out, err = run_launcher("--dry-run", "--cuda", "12.6", "--package", wheel, "--venv", tmp_path / "env",
                                  "demo", path=tmp_path)
    assert code == 0, err
    assert commands(out)["install bone-avizo"].endswith(f"--upgrade {wheel}")


def test_without_a_command_it_shows_bone_avizo_help(tmp_path):
    code, out, _ = run_launcher("--dry-run", "--venv", tmp_path / "env", path=tmp_path)
    assert code == 0 and commands(out)["run bone-avizo"].endswith("-m bone_avizo.standalone --help")


# -- reusing an environment --------------------------------------------------------------------------------
def ready_venv(folder: Path, **marker) -> Path:
    """A folder that looks like an environment set up by the launcher: bin/python runs this interpreter
    (a script, not a link: a link to a virtual environment's python would start its base interpreter,
    without the environment's packages)."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    if marker:
        (folder / "bone_avizo_launcher.json").write_text(json.dumps(marker))
    return folder


def test_an_environment_that_is_set_up_is_reused_without_installing(tmp_path):
    venv = ready_venv(tmp_path / "env", torch="cpu", package=str(ROOT))
    code, out, err = run_launcher("--dry-run", "--venv", venv, "demo", path=tmp_path)
    assert code == 0, err
    assert "reusing the virtual environment" in out and list(commands(out)) == ["run bone-avizo"]


def test_another_build_replaces_torch_and_reinstalls_bone_avizo(tmp_path):
    venv = ready_venv(tmp_path / "env", torch="12.4", package=str(ROOT))
    code, out, _ = run_launcher("--dry-run", "--cpu", "--venv", venv, "demo", path=tmp_path)
    assert code == 0
    assert list(commands(out)) == ["remove the installed torch build", "install torch (CPU)", "install bone-avizo",
                                   "run bone-avizo"]
    assert commands(out)["remove the installed torch build"].endswith("pip uninstall -y torch torchvision")


def test_an_unfinished_environment_is_completed(tmp_path):
    venv = ready_venv(tmp_path / "env")  # created, but an earlier install did not finish
    code, out, _ = run_launcher("--dry-run", "--venv", venv, "demo", path=tmp_path)
    assert code == 0
    assert list(commands(out)) == ["install torch (CPU)", "install bone-avizo", "run bone-avizo"]


def test_reinstall_installs_again(tmp_path):
    venv = ready_venv(tmp_path / "env", torch="cpu", package=str(ROOT))
    code, out, _ = run_launcher("--dry-run", "--reinstall", "--venv", venv, "demo", path=tmp_path)
    assert code == 0
    assert list(commands(out))[-3:] == ["install torch (CPU)", "install bone-avizo", "run bone-avizo"]


@pytest.mark.slow
def test_runs_bone_avizo_in_a_ready_environment_and_returns_its_exit_code(tmp_path):
    venv = ready_venv(tmp_path / "env", torch="cpu", package=str(ROOT))
    code, out, err = run_launcher("--venv", venv, "info", "--architectures", path=tmp_path)
    assert code == 0, err
    assert "reusing the virtual environment" in out and "unet" in out
    code, _, err = run_launcher("--venv", venv, "info", tmp_path / "missing.tif", path=tmp_path)
    assert code == 2 and "PATH: " in err and "missing.tif does not exist" in err


# -- bad input: one line, exit 2 --------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--cuda", "10.2", "demo"], "--cuda 10.2: there is no torch build for CUDA 10.2; use one of 11.8, 12.1, 12.4, "
                                 "12.6, 12.8, or --cpu, or give its wheel index with --torch-index"),
    (["--torch-index", "download.pytorch.org/whl/cu130", "demo"], "--torch-index download.pytorch.org/whl/cu130: "
                                                                 "not a URL; give a pip wheel index such as "
                                                                 "https://download.pytorch.org/whl/cu128"),
    (["--cpu", "--cuda", "12.4", "demo"], "argument --cuda: not allowed with argument --cpu"),
    (["--package", "{tmp}/nothing", "demo"], "--package"),
    (["--venv", "{tmp}/file", "demo"], "is a file"),
])
def test_bad_launcher_input_fails_with_one_line(tmp_path, args, message):
    (tmp_path / "file").write_text("")
    code, out, err = run_launcher("--dry-run", *[a.format(tmp=tmp_path) for a in args], path=tmp_path)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("bone_avizo_venv: error: ")


def test_a_copy_outside_the_source_tree_asks_for_the_package(tmp_path):
    copy = tmp_path / "bone_avizo_venv.py"
    copy.write_text(LAUNCHER.read_text())
    proc = subprocess.run([sys.executable, str(copy), "--dry-run", "demo"], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tmp_path)}, timeout=60)
    assert proc.returncode == 2 and "pass --package PATH" in proc.stderr


def test_a_failing_step_stops_with_one_line(tmp_path):
    venv = ready_venv(tmp_path / "env")
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").write_text(textwrap.dedent("""\
        #!/bin/sh
        echo "pip: no network" >&2
        exit 3
        """))
    (venv / "bin" / "python").chmod(0o755)
    code, out, err = run_launcher("--venv", venv, "demo", path=tmp_path)
    assert code == 1
    assert err.strip().splitlines()[-1] == ("bone_avizo_venv: error: install torch (CPU) failed (exit 3); see the "
                                            "messages above, then run this again")
    assert not (venv / "bone_avizo_launcher.json").exists()


def test_the_launcher_needs_only_the_standard_library():
    imported = {line.split()[1].split(".")[0] for line in LAUNCHER.read_text().splitlines()
                if line.startswith(("import ", "from "))}
    assert imported <= set(sys.stdlib_module_names)
