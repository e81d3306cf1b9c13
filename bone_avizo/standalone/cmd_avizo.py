"""``bone-avizo avizo install|uninstall|python-help``: the Avizo module installer."""
from __future__ import annotations

from bone_avizo.avizo.cli import HELP, add_arguments, run

__all__ = ["HELP", "add_arguments", "run"]
