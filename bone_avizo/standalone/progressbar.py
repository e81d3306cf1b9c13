"""A terminal progress bar implementing the core's progress protocol (quiet when not a TTY)."""
from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(label: str):
    """Yield a progress callback (done, total, message) -> None; tqdm on a TTY, silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda done, total, message: None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda done, total, message: None
        return
    bar = tqdm(total=1, desc=label, unit="step", dynamic_ncols=True, leave=False)

    def update(done: int, total: int, message: str) -> None:
        if bar.total != total:
            bar.total = total
        bar.set_description(f"{label}: {message}", refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
