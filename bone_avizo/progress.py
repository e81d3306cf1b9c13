"""The progress/cancel protocol shared by the core and both faces.

A progress callback is any callable ``progress(done: int, total: int, message: str) -> bool | None``.
Returning a truthy value asks the core to stop; the core then raises :class:`Cancelled`
after discarding partial work. The Avizo face maps this to ``hx_progress``; the CLI to a bar.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Optional

from bone_avizo.errors import Cancelled

__all__ = ["ProgressCallback", "ProgressTracker", "format_eta", "eta_in_message"]

ProgressCallback = Callable[[int, int, str], Optional[bool]]

log = logging.getLogger(__name__)


def format_eta(seconds: float) -> str:
    """``3.2 s``, ``48 s``, ``2 min 05 s``, ``1 h 02 min``: the time left as the faces show it."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


_ETA_TEXT = re.compile(r", ETA (?:(\d+) h ?)?(?:(\d+) min ?)?(?:(\d+(?:\.\d+)?) s)?$")


def eta_in_message(message: str) -> float | None:
    """The seconds left that a progress message states (the inverse of the tracker's ETA suffix), else None."""
    found = _ETA_TEXT.search(message)
    if found is None or not any(found.groups()):
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds


WARM_UP_REPORTS = 2  # the first reports of a tracker and of each phase, left out of the ETA's rate


class ProgressTracker:
    """Reports progress to an optional callback, logs an ETA, and raises on cancel.

    The ETA (added to the message the callback gets: ``"predicting, ETA 2 min 05 s"``) is the rate
    of the work so far times the work left, leaving out the first :data:`WARM_UP_REPORTS` reports of
    the tracker and of each phase: what precedes them is start-up and warm-up (opening files, building
    the network's session, its first forward passes, which onnxruntime and CUDA run up to twice as slow
    as the later ones), not the rate of the work. No ETA until a report of the current phase after those
    (another phase's rate says little about this one's)."""

    def __init__(self, total: int, message: str, callback: ProgressCallback | None = None,
                 *, log_every_s: float = 10.0):
        self.total = max(int(total), 1)
        self.message = message
        self.callback = callback
        self.done = 0
        self._start = time.perf_counter()
        self._last_log = self._start
        self._log_every_s = log_every_s
        self._last_report = (self._start, 0)
        self._skipped = (0.0, 0)  # (seconds, steps) left out of the rate
        self._phase_reports = 0  # reports of the current phase; the first WARM_UP_REPORTS stay out of the rate

    def eta_seconds(self) -> float | None:
        """Seconds left at the rate measured so far (see the class), or None before it can be measured."""
        seconds, steps = self._skipped
        measured = self.done - steps
        if measured <= 0 or self._phase_reports <= WARM_UP_REPORTS:
            return None
        elapsed = self._last_report[0] - self._start - seconds
        return max(elapsed, 0.0) / measured * (self.total - self.done)

    def advance(self, steps: int = 1, message: str | None = None, *, starts_phase: bool = False) -> None:
        """Add ``steps`` to the done count; raise Cancelled if the callback asks to stop. ``starts_phase``:
        the first report of a phase (it and the next report stay out of the ETA's rate)."""
        now = time.perf_counter()
        previous_done = self.done
        self.done = min(self.done + steps, self.total)
        self._phase_reports = 1 if starts_phase else self._phase_reports + 1
        if self._phase_reports <= WARM_UP_REPORTS:
            seconds, skipped = self._skipped
            self._skipped = (seconds + now - self._last_report[0], skipped + self.done - previous_done)
        self._last_report = (now, self.done)
        text = message or self.message
        eta = self.eta_seconds()
        if now - self._last_log >= self._log_every_s or self.done == self.total:
            log.info("%s: %d/%d%s", text, self.done, self.total, f", ETA {eta:.0f} s" if eta is not None else "")
            self._last_log = now
        shown = f"{text}, ETA {format_eta(eta)}" if eta is not None and self.done < self.total else text
        self.check(shown, base=text)

    def phase(self, weight: int) -> "ProgressPhase":
        """A view of this tracker whose steps count ``weight`` of its steps each (phases of unequal cost
        share one bar: its percentage and ETA follow time, not items)."""
        return ProgressPhase(self, weight)

    def check(self, message: str | None = None, *, base: str | None = None) -> None:
        """Call the callback without advancing; raise Cancelled if it asks to stop."""
        if self.callback is not None and self.callback(self.done, self.total, message or self.message):
            raise Cancelled(f"{base or self.message}: cancelled by the user at {self.done}/{self.total}; "
                            "partial results were discarded")


class ProgressPhase:
    """One phase of a :class:`ProgressTracker`'s work, each of its steps worth ``weight`` tracker steps."""

    def __init__(self, tracker: ProgressTracker, weight: int):
        self.tracker, self.weight = tracker, int(weight)
        self._started = False

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        starts, self._started = not self._started, True
        self.tracker.advance(steps * self.weight, message, starts_phase=starts)

    def check(self, message: str | None = None) -> None:
        self.tracker.check(message)
