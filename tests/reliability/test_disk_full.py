"""A real full disk: a 64 KiB tmpfs (Linux, root only; skipped elsewhere). Every output format must end
with an OutputWriteError and leave nothing behind, never with SIGBUS or a truncated file; ``predict``
into it exits with code 2. The writes run in child interpreters, so that a regression that crashes
the writer cannot take the test runner with it. The catalogue's disk-full rows simulate the same
anywhere (tests/reliability/test_catalogue.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORMATS = (".tif", ".npy", ".raw", ".mhd", ".am", ".zarr")
SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from bone_avizo.errors import OutputWriteError
    from bone_avizo.io import save_volume
    from bone_avizo.volume import Volume

    folder = Path(sys.argv[1])
    volume = Volume(np.random.default_rng(0).integers(0, 60000, (10, 100, 100)).astype(np.uint16))
    for name, options in [(ext, {}) for ext in sys.argv[2].split(",")] + [("zlib.tif", {"compression": "zlib"})]:
        try:
            save_volume(volume, folder / ("out" + name), **options)
            print(name, "written")
        except OutputWriteError as exc:
            print(name, "refused:", exc)
        print(name, "left:", sorted(p.name for p in folder.iterdir()), flush=True)
""")


@pytest.fixture
def tiny_disk(tmp_path):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root")
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def run_python(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_every_format_reports_a_full_disk_and_leaves_nothing(tiny_disk):
    done = run_python("-c", SCRIPT, str(tiny_disk), ",".join(FORMATS))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for name in (*FORMATS, "zlib.tif"):
        assert any(line.startswith(f"{name} refused: ") and "No space left on device" in line for line in lines), \
            done.stdout
        assert f"{name} left: []" in lines, done.stdout


@pytest.mark.slow
def test_predict_onto_a_full_disk_exits_2(tiny_disk, tiny_model, tmp_path):
    import numpy as np

    np.save(tmp_path / "scan.npy", np.random.default_rng(1).integers(1, 3000, (20, 128, 128)).astype(np.uint16))
    for output in ("labels.tif", "labels.h5"):
        done = run_python("-m", "bone_avizo.standalone", "-q", "predict", "--model", str(tiny_model), "--input",
                          str(tmp_path / "scan.npy"), "--output", str(tiny_disk / output), "--backend", "torch",
                          "--threads", "1", "--probabilities")
        assert "bone-avizo predict: error: " in done.stderr and "No space left on device" in done.stderr, \
            done.stderr[-2000:]
        if output.endswith(".tif"):  # libhdf5 may crash at exit after a failed write (docs/reliability.md)
            assert done.returncode == 2
        assert list(tiny_disk.iterdir()) == []
