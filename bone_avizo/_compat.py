"""One import place for names whose home moved between Python versions (the minimum is 3.11)."""
from __future__ import annotations

from enum import StrEnum

__all__ = ["StrEnum"]
