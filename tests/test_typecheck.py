"""The type check of .ci/run (mypy, configured in pyproject.toml) sees every config field: code that uses a
field that exists passes it, a misspelt field (read, or given to the constructor) fails it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy (in the test extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]

USES = '''\
from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.studies.cv import CVConfig


def tile(cfg: PredictConfig) -> int:
    return cfg.tile_size + cfg.with_(overlap=0.5).batch_size


def study(cfg: CVConfig, fit: FitConfig) -> str:
    return f"{cfg.folds} {cfg.selection} {fit.patch_size} {FitConfig.SPEC[0].name}"


def misspelt_read(cfg: PredictConfig) -> int:
    return cfg.tile_sise  # MISSPELT


def misspelt_inherited(cfg: CVConfig) -> str:
    return cfg.selektion  # MISSPELT


def misspelt_keyword() -> PredictConfig:
    return PredictConfig(tile_sise=256)  # MISSPELT
'''


def test_type_check_fails_on_misspelt_config_fields_only(tmp_path):
    source = tmp_path / "uses_config.py"
    source.write_text(USES)
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # this checkout's bone_avizo, whatever is installed
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(tmp_path / "mypy_cache"), "--no-error-summary", str(source)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    lines = {int(re.match(r".*?:(\d+): error:", e).group(1)) for e in errors}
    expected = {n for n, text in enumerate(USES.splitlines(), 1) if "# MISSPELT" in text}
    assert run.returncode == 1, run.stdout + run.stderr
    assert lines == expected, "\n".join(errors)
    assert all("tile_sise" in e or "selektion" in e for e in errors), "\n".join(errors)
