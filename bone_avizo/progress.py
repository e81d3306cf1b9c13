"""The progress/cancel protocol shared by the core and both faces.

A progress callback is any callable ``progress(done: int, total: int, message: str) -> bool | None``.
Returning a truthy value asks the core to stop; the core then raises :class:`Cancelled`
after discarding partial work. The Avizo face maps this to ``hx_progress``; the CLI to a bar.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from bone_avizo.errors import Cancelled

ProgressCallback = Callable[[int, int, str], Optional[bool]]

log = logging.getLogger(__name__)


class ProgressTracker:
    """Reports progress to an optional callback, logs an ETA, and raises on cancel."""

    def __init__(self, total: int, message: str, callback: ProgressCallback | None = None,
                 *, log_every_s: float = 10.0):
        self.total = max(int(total), 1)
        self.message = message
        self.callback = callback
        self.done = 0
        self._start = time.perf_counter()
        self._last_log = self._start
        self._log_every_s = log_every_s

    def eta_seconds(self) -> float | None:
        if self.done <= 0:
            return None
        elapsed = time.perf_counter() - self._start
        return elapsed / self.done * (self.total - self.done)

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        """Add ``steps`` to the done count; raise Cancelled if the callback asks to stop."""
        self.done = min(self.done + steps, self.total)
        text = message or self.message
        now = time.perf_counter()
        if now - self._last_log >= self._log_every_s or self.done == self.total:
            eta = self.eta_seconds()
            log.info("%s: %d/%d%s", text, self.done, self.total,
                     f", ETA {eta:.0f} s" if eta is not None else "")
            self._last_log = now
        self.check(text)

    def phase(self, weight: int) -> "ProgressPhase":
        """A view of this tracker whose steps count ``weight`` of its steps each (phases of unequal cost
        share one bar: its percentage and ETA follow time, not items)."""
        return ProgressPhase(self, weight)

    def check(self, message: str | None = None) -> None:
        """Call the callback without advancing; raise Cancelled if it asks to stop."""
        if self.callback is not None and self.callback(self.done, self.total, message or self.message):
            raise Cancelled(f"{self.message}: cancelled by the user at {self.done}/{self.total}; "
                            "partial results were discarded")


class ProgressPhase:
    """One phase of a :class:`ProgressTracker`'s work, each of its steps worth ``weight`` tracker steps."""

    def __init__(self, tracker: ProgressTracker, weight: int):
        self.tracker, self.weight = tracker, int(weight)

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        self.tracker.advance(steps * self.weight, message)

    def check(self, message: str | None = None) -> None:
        self.tracker.check(message)
