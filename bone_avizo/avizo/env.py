"""What the Python inside Avizo offers bone_avizo: versions, torch and CUDA (for BONeInfo and support)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys

import numpy as np

import bone_avizo

INSTALL_HINT = "not installed (see docs/avizo.md)"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_summary() -> str:
    """"2.3.1, CUDA 12.1: NVIDIA RTX A5000" / "2.3.1, CPU only" / not installed."""
    if importlib.util.find_spec("torch") is None:
        return INSTALL_HINT
    import torch

    if not torch.cuda.is_available():
        return f"{torch.__version__}, CPU only"
    return f"{torch.__version__}, CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"


def environment_report() -> dict[str, str]:
    """Versions of Python (and where its environment is), bone_avizo, numpy, torch (and its device)
    and segmentation-models-pytorch."""
    return {"python": f"{platform.python_version()} in {sys.prefix}", "bone_avizo": bone_avizo.__version__, "numpy": np.__version__,
            "torch": _torch_summary(),
            "segmentation_models_pytorch": _version("segmentation-models-pytorch") or INSTALL_HINT}


def format_report(report: dict[str, str]) -> str:
    """One line: ``python 3.11.9; bone_avizo 0.1.0; ...``."""
    return "; ".join(f"{name} {value}" for name, value in report.items())
