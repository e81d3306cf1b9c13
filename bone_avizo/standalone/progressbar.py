"""A terminal progress bar implementing the core's progress protocol.

A tqdm bar with ETA on an interactive terminal (stderr is a TTY); silent otherwise (log files, pipes,
CI), where the core's own INFO lines (``done/total, ETA``) every few seconds are the progress
report, and silent with ``-q``.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager


def _silent(done: int, total: int, message: str) -> None:
    return None


def wants_bar() -> bool:
    """True when a bar should be drawn: stderr is a TTY and INFO messages are not silenced (-q)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and logging.getLogger("bone_avizo").isEnabledFor(logging.INFO)


@contextmanager
def progress_bar(label: str):
    """Yield a progress callback ``(done, total, message) -> None``: tqdm on a TTY, silent otherwise.

    A new phase of the work (its total changes, or its count starts again) restarts the bar, so
    the ETA is that of the current phase."""
    if not wants_bar():
        yield _silent
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _silent
        return
    bar = tqdm(total=1, desc=label, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)

    def update(done: int, total: int, message: str) -> None:
        if bar.total != total or done < bar.n:
            bar.reset(total=total)
        bar.set_description(f"{label}: {message}", refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
