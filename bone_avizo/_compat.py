"""Small compatibility shims for Python 3.10."""
from __future__ import annotations

import enum

try:
    from enum import StrEnum
except ImportError:  # Python 3.10
    class StrEnum(str, enum.Enum):
        """An Enum whose members are also strings (enum.StrEnum from Python 3.11)."""

        def __str__(self) -> str:
            return str(self.value)

__all__ = ["StrEnum"]
