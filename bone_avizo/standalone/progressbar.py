"""A terminal progress bar implementing the core's progress protocol.

A tqdm bar with the core's ETA on an interactive terminal (stderr is a TTY); silent otherwise (log files, pipes,
CI), where the core's own INFO lines (``done/total, ETA``) every few seconds are the progress
report, and silent with ``-q``.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager


def _silent(done: int, total: int, message: str) -> None:
    return None


def _wants_bar() -> bool:
    """True when a bar should be drawn: stderr is a TTY and INFO messages are not silenced (-q)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and logging.getLogger("bone_avizo").isEnabledFor(logging.INFO)


def _console_loggers() -> list[logging.Logger]:
    """bone_avizo's and the root logger, where they print to the terminal (the CLI's handlers)."""
    return [logger for logger in (logging.getLogger("bone_avizo"), logging.getLogger())
            if any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
                   for h in logger.handlers)]


def _not_info(record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO


@contextmanager
def progress_bar(label: str):
    """Yield a progress callback ``(done, total, message) -> None``: tqdm on a TTY, silent otherwise.

    A new phase of the work (its total changes, or its count starts again) restarts the bar, so
    the ETA is that of the current phase. While the bar is drawn, log messages are printed above
    it, and the core's periodic progress lines are left out (the bar shows the same)."""
    if not _wants_bar():
        yield _silent
        return
    try:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:
        yield _silent
        return
    # the core's message carries its ETA (", ETA 2 min 05 s"), which leaves out start-up and warm-up;
    # tqdm's own estimate and its step counts (weighted work units) are not shown
    bar = tqdm(total=1, desc=label, dynamic_ncols=True, leave=False, file=sys.stderr,
               bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}]")

    def update(done: int, total: int, message: str) -> None:
        if bar.total != total or done < bar.n:
            bar.reset(total=total)
        bar.set_description(f"{label}: {message}", refresh=False)
        bar.update(done - bar.n)

    progress_log = logging.getLogger("bone_avizo.progress")
    progress_log.addFilter(_not_info)
    try:
        with logging_redirect_tqdm(_console_loggers(), tqdm_class=tqdm):
            yield update
    finally:
        progress_log.removeFilter(_not_info)
        bar.close()
